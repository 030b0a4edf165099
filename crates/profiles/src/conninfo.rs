//! PostgreSQL connection strings, read as libpq reads them: a
//! `postgres://user:password@host:port,host2/dbname?key=value` URL or
//! `key=value key='quoted value'` pairs, into keywords and values, a later
//! keyword replacing an earlier one (so `?host=/run/postgresql` replaces
//! the URL's host, as with `psql`; tokio-postgres would try both).
//!
//! Read once, here, for the config's validation and for the state store
//! that connects with it, so `check` and `serve` cannot disagree. The state
//! store hands the keywords to tokio-postgres as `key='value'` pairs, after
//! taking out what tokio-postgres does not know (`sslmode=verify-ca` and
//! `verify-full`, `sslrootcert`).
//!
//! No error here repeats a value: a value may be a password.

use std::borrow::Cow;

/// What tokio-postgres 0.7 takes, and `sslrootcert`: any other keyword is
/// an error when the config is loaded, not at the store's first connect.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Keywords and values, each keyword once, in the order first written.
pub(crate) type Params = Vec<(String, String)>;

pub(crate) fn parse(s: &str) -> Result<Params, String> {
    let s = s.trim();
    let read = match s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        Some(rest) => url(rest)?,
        None => key_values(s)?,
    };
    let mut out = Params::new();
    for (key, value) in read {
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(format!(
                "has the keyword `{key}`, which Kickstand does not take (it takes {})",
                KEYWORDS.join(", ")
            ));
        }
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| "has a percent-encoded part that is not UTF-8".to_owned())
}

/// The part after `postgres://`.
fn url(rest: &str) -> Result<Params, String> {
    let mut out = Params::new();
    let mut rest = rest;
    // Credentials end at the first `@` before any `/`, as libpq reads
    // them: a password with `@` or `/` in it is percent-encoded.
    if let Some(at) = rest
        .find(['@', '/'])
        .filter(|&i| rest.as_bytes()[i] == b'@')
    {
        let (user, password) = match rest[..at].split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (&rest[..at], None),
        };
        if !user.is_empty() {
            out.push(("user".into(), decode(user)?));
        }
        if let Some(p) = password {
            out.push(("password".into(), decode(p)?));
        }
        rest = &rest[at + 1..];
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (netloc, tail) = rest.split_at(end);
    if !netloc.is_empty() {
        let (mut hosts, mut ports) = (Vec::new(), Vec::new());
        for chunk in netloc.split(',') {
            let (host, port) = match chunk.strip_prefix('[') {
                Some(v6) => {
                    let (host, after) = v6
                        .split_once(']')
                        .ok_or("has an IPv6 address without its closing `]`")?;
                    match after {
                        "" => (host, ""),
                        p => (
                            host,
                            p.strip_prefix(':')
                                .ok_or("has something other than `:port` after an IPv6 address")?,
                        ),
                    }
                }
                None => chunk.rsplit_once(':').unwrap_or((chunk, "")),
            };
            if !port.chars().all(|c| c.is_ascii_digit()) {
                return Err("has a port that is not a number".into());
            }
            hosts.push(decode(host)?);
            ports.push(port.to_owned());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            out.push(("host".into(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".into(), ports.join(",")));
        }
    }
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    if let Some(db) = path.strip_prefix('/').filter(|d| !d.is_empty()) {
        out.push(("dbname".into(), decode(db)?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or("has a query parameter without `=`")?;
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// `key=value` pairs separated by white space; a value is single-quoted to
/// hold white space, and a backslash takes the next character as it is.
fn key_values(s: &str) -> Result<Params, String> {
    let mut out = Params::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // Not the word itself: it may be a password missing its key.
            return Err("has a word without `=` after it".into());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                None if quoted => return Err("has a quoted value without its closing `'`".into()),
                None => break,
                Some('\'') if quoted => break,
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
            }
        }
        out.push((key, value));
    }
}

/// `key=value …`, as tokio-postgres (and libpq) read it back; with
/// `redact`, a password shows as `…`.
pub(crate) fn render(params: &[(String, String)], redact: bool) -> String {
    params
        .iter()
        .map(|(k, v)| match v.as_str() {
            _ if redact && k == "password" => format!("{k}=…"),
            v if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || "'\\".contains(c)) => {
                format!("{k}={v}")
            }
            v => format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn urls_are_read_as_libpq_reads_them() {
        assert_eq!(
            p("postgres://kick:s3%40cret@db.example:5433/state?sslmode=verify-full"),
            kv(&[
                ("user", "kick"),
                ("password", "s3@cret"),
                ("host", "db.example"),
                ("port", "5433"),
                ("dbname", "state"),
                ("sslmode", "verify-full"),
            ])
        );
        // The query's host replaces the URL's, as with psql.
        assert_eq!(
            p("postgresql://kickstand@localhost/postgres?host=/tmp/pg"),
            kv(&[
                ("user", "kickstand"),
                ("host", "/tmp/pg"),
                ("dbname", "postgres")
            ])
        );
        assert_eq!(
            p("postgresql://[::1]:5433,db2/x"),
            kv(&[("host", "::1,db2"), ("port", "5433,"), ("dbname", "x")])
        );
        assert_eq!(
            p("postgresql://%2Frun%2Fpostgresql/x"),
            kv(&[("host", "/run/postgresql"), ("dbname", "x")])
        );
        assert!(parse("postgres://db/x?sslcert=/c.pem").is_err());
        assert!(parse("postgres://db:fast/x").is_err());
    }

    #[test]
    fn key_value_pairs_quote_and_escape() {
        assert_eq!(
            p(r"host=db  user = kick password='it\'s a secret' dbname=a\ b"),
            kv(&[
                ("host", "db"),
                ("user", "kick"),
                ("password", "it's a secret"),
                ("dbname", "a b")
            ])
        );
        assert_eq!(p("host=a host=b"), kv(&[("host", "b")]));
    }

    #[test]
    fn nothing_a_password_could_be_is_repeated_in_an_error() {
        for bad in [
            "host=db s3cret",
            "host=db password='s3cret",
            "postgres://u:s3cret@db/x?s3cret",
            "postgres://u:s3cret%ff@db/x",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
    }

    #[test]
    fn rendered_pairs_read_back_the_same() {
        let params = kv(&[("password", r"a b'c\d"), ("host", "db"), ("dbname", "")]);
        assert_eq!(p(&render(&params, false)), params);
        assert_eq!(render(&params, true), "password=… host=db dbname=''");
    }
}
