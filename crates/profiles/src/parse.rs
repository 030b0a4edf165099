//! Value parsers shared by validation. Each returns the text an operator
//! reads after `file:line:col: <key>`, so validation only adds the key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::model::{MirrorKind, MirrorUrl, Proxy, ProxyCredentials, Scheme};

/// A word that is not one of the choices a setting takes:
/// "`fast` is not one of proxy, off, full".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not one of {}", .choices.join(", "))]
pub struct NotOneOf {
    pub word: String,
    pub choices: &'static [&'static str],
}

/// Implements `FromStr` (and `as_str`) for an enum of config words, with
/// [`NotOneOf`] as the one error every such setting gives.
macro_rules! config_words {
    ($ty:ty { $($word:literal => $variant:expr),+ $(,)? }) => {
        impl $ty {
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            pub fn as_str(self) -> &'static str {
                $(if self == $variant { return $word; })+
                unreachable!("every variant has a word")
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::parse::NotOneOf;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                match word {
                    $($word => Ok($variant),)+
                    _ => Err($crate::parse::NotOneOf {
                        word: word.to_owned(),
                        choices: Self::WORDS,
                    }),
                }
            }
        }
    };
}
pub(crate) use config_words;

/// A Redfish BMC's address: `https://host[:port]` (or `http://`), without
/// credentials, path or query.
pub(crate) fn redfish_base(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{s}` {why} (like https://10.0.9.21)");
    let url = url::Url::parse(s).map_err(|e| bad(&format!("is not a URL: {e};")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("must start with https:// or http://"));
    }
    let Some(host) = url.host_str() else {
        return Err(bad("has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not hold credentials (username and password_file give them)",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "must be the BMC alone, without a path (`system:` names the system)",
        ));
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// An IPMI BMC's address: `host` or `host:port` (623 by default), an IPv6
/// address in brackets.
pub(crate) fn ipmi_address(s: &str) -> Result<(String, u16), String> {
    let url = url::Url::parse(&format!("ipmi://{s}"))
        .ok()
        .filter(|u| u.path().is_empty() && u.username().is_empty() && u.query().is_none());
    let Some((host, port)) = url.and_then(|u| Some((u.host_str()?.to_owned(), u.port()))) else {
        return Err(format!(
            "`{s}` is not a host or host:port (like 10.0.9.21 or 10.0.9.21:623)"
        ));
    };
    Ok((host, port.unwrap_or(623)))
}

/// What `bmc.tls` says: a word, a fingerprint, or else a CA file's path.
pub(crate) enum BmcTlsSetting<'a> {
    Verify,
    Insecure,
    Fingerprint([u8; 32]),
    CaFile(&'a str),
}

pub(crate) fn bmc_tls(s: &str) -> BmcTlsSetting<'_> {
    match s {
        "verify" => BmcTlsSetting::Verify,
        "insecure" => BmcTlsSetting::Insecure,
        _ => sha256_fingerprint(s).map_or(BmcTlsSetting::CaFile(s), BmcTlsSetting::Fingerprint),
    }
}

/// A SHA-256 fingerprint: 64 hex digits, either case, colons allowed (as
/// `openssl x509 -fingerprint -sha256` prints it).
pub fn sha256_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address"))
}

/// The IPv4 half of `server.address`: an address, or `auto` for the one
/// the appliance's interface has when the config is loaded (the office
/// DHCP's lease, followed at every restart and reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAddress {
    Auto,
    Fixed(Ipv4Addr),
}

/// What `server.address` says: one entry, or two of different families
/// (an IPv4 address or `auto`, and an IPv6 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddresses {
    pub v4: Option<ServerAddress>,
    pub v6: Option<Ipv6Addr>,
}

pub fn server_address(items: &[String]) -> Result<ServerAddresses, String> {
    if items.is_empty() || items.len() > 2 {
        return Err(
            "name one address, or one IPv4 address (or `auto`) and one IPv6 address".to_owned(),
        );
    }
    let mut out = ServerAddresses { v4: None, v6: None };
    for item in items {
        let taken = match item.as_str() {
            "auto" => out.v4.replace(ServerAddress::Auto).is_some(),
            _ => match item.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) => out.v4.replace(ServerAddress::Fixed(a)).is_some(),
                Ok(IpAddr::V6(a)) if unusable_v6(a) => {
                    return Err(format!(
                        "`{item}` cannot be reached across the rack: name a global or unique-local IPv6 address"
                    ));
                }
                Ok(IpAddr::V6(a)) => out.v6.replace(a).is_some(),
                Err(_) => {
                    return Err(format!("`{item}` is not an IPv4 or IPv6 address or `auto`"));
                }
            },
        };
        if taken {
            return Err("two addresses of one family: name one of each".to_owned());
        }
    }
    Ok(out)
}

/// A link-local address needs the client's interface to reach it (URLs
/// would need a zone), the unspecified and multicast ones reach nothing.
fn unusable_v6(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local()
}

/// `500MiB`, `20GiB`, `1.5 TB` or a byte count, as the `bytesize` crate
/// reads them: `GiB` is 2^30 bytes, `GB` and `G` are 10^9.
pub fn size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{s}` is not a size like 500MiB or 20GiB"))
}

/// `30s`, `5m`, `2h 30m`, as `humantime` reads them.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 2h"))
}

/// Names that end up in URLs, file names and kickstart lines: a safe
/// alphabet so no quoting is ever needed, and no leading `.` so none is a
/// hidden file or a path escape once it is a URL segment.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub const NAME_RULE: &str = "must be 1–64 letters, digits, `-`, `_` or `.`, not starting with `.`";

pub fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(crate) fn looks_like_crypt(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    parts.len() >= 4
        && parts[0].is_empty()
        && !parts[1].is_empty()
        && !h.contains(char::is_whitespace)
}

/// The parts of an http(s) URL every configured URL must have, and none of
/// the parts none may have.
fn url(raw: &str, schemes: &[&str]) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "`{raw}`: the scheme must be {}",
            schemes.join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{raw}` must have no query or fragment"));
    }
    Ok(url)
}

/// A mirror base URL. Credentials are refused here: they would be sent to
/// whatever host a redirect names, and end up in logs and cache keys.
/// `kickstand://host[:port]/<mirror>` names a parent appliance's repo route.
pub(crate) fn mirror_url(raw: &str) -> Result<MirrorUrl, String> {
    match raw.strip_prefix("kickstand://") {
        Some(rest) => parent_url(raw, rest),
        None => http_mirror_url(raw),
    }
}

/// A parent appliance: its HTTP front (port 80 unless given, as
/// `server.http_port`) and one mirror name as the whole path, which becomes
/// the parent's `/repo/<mirror>/` route. Parsed as the http URL it stands
/// for, so the host is normalised exactly like a mirror's.
fn parent_url(raw: &str, rest: &str) -> Result<MirrorUrl, String> {
    let as_http = format!("http://{rest}");
    let in_raw = |e: String| e.replace(&as_http, raw);
    let url = url(&as_http, &["http"]).map_err(in_raw)?;
    let name = url.path().trim_matches('/');
    if !is_name(name) {
        return Err(format!(
            "`{raw}`: write kickstand://host[:port]/<mirror>, the mirror's name on the parent as the whole path"
        ));
    }
    let mut m = http_mirror_url(&as_http).map_err(in_raw)?;
    m.path = format!("/repo/{name}/");
    m.kind = MirrorKind::Appliance;
    Ok(m)
}

fn http_mirror_url(raw: &str) -> Result<MirrorUrl, String> {
    let mut url = url(raw, &["http", "https"])?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{raw}` carries credentials; mirrors take none (the office proxy's go under proxy:)"
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    let scheme = if url.scheme() == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(scheme.default_port());
    Ok(MirrorUrl {
        scheme,
        host,
        port,
        path: url.path().to_owned(),
        kind: MirrorKind::Mirror,
    })
}

/// The office proxy: `http://host[:port]` (port 3128 when absent, squid's).
pub(crate) fn proxy(
    raw: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Proxy, String> {
    let url = url(raw, &["http"])?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{raw}` carries credentials; put them in proxy.username and proxy.password"
        ));
    }
    if url.path() != "/" {
        return Err(format!("`{raw}`: a proxy URL has no path"));
    }
    let credentials = match (username, password) {
        (Some(u), p) => Some(ProxyCredentials {
            username: u.to_owned(),
            password: p.unwrap_or_default().to_owned(),
        }),
        (None, Some(_)) => return Err("proxy.password is set without proxy.username".into()),
        (None, None) => None,
    };
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Proxy {
        url: raw.to_owned(),
        host,
        port: url.port().unwrap_or(3128),
        credentials,
    })
}

/// The certificates of a PEM bundle, in DER.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h 30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(duration("s").is_err());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn server_addresses() {
        let parse = |items: &[&str]| {
            server_address(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
        let said = |v4, v6| Ok(ServerAddresses { v4, v6 });
        assert_eq!(parse(&["auto"]), said(Some(ServerAddress::Auto), None));
        let fixed = ServerAddress::Fixed(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(parse(&["10.0.0.5"]), said(Some(fixed), None));
        assert_eq!(parse(&["fd00::5"]), said(None, Some(v6)));
        assert_eq!(
            parse(&["fd00::5", "auto"]),
            said(Some(ServerAddress::Auto), Some(v6))
        );
        for bad in ["Auto", "auto ", "eth0", "10.0.0.5/24", "[fd00::5]", ""] {
            let e = parse(&[bad]).expect_err(bad);
            assert_eq!(
                e,
                format!("`{bad}` is not an IPv4 or IPv6 address or `auto`")
            );
        }
        for unreachable in ["fe80::1", "::", "ff02::1"] {
            let e = parse(&[unreachable]).expect_err(unreachable);
            assert!(e.contains("cannot be reached across the rack"), "{e}");
        }
        for twice in [&["auto", "10.0.0.5"][..], &["fd00::5", "fd00::6"]] {
            let e = parse(twice).expect_err("two of one family");
            assert_eq!(e, "two addresses of one family: name one of each");
        }
        assert!(parse(&[]).is_err());
        assert!(parse(&["10.0.0.5", "fd00::5", "auto"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("20GiB"), Ok(20 << 30));
        assert_eq!(size("500MiB"), Ok(500 << 20));
        assert_eq!(size("1 GB"), Ok(1_000_000_000));
        assert_eq!(size("1024"), Ok(1024));
        assert!(size("G").is_err());
        assert!(size("lots").is_err());
    }

    #[test]
    fn names_hostnames_and_hashes() {
        assert!(is_name("centos"));
        assert!(is_name("alma-9.x"));
        for bad in ["", ".alma", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_name(bad), "{bad:?}");
        }
        assert!(valid_hostname("node01.rack1.example"));
        assert!(!valid_hostname("node_01"));
        assert!(!valid_hostname("-node"));
        assert!(!valid_hostname("a..b"));
        assert!(looks_like_crypt("$6$salt$hash"));
        assert!(!looks_like_crypt("hunter2"));
    }

    #[test]
    fn mirror_urls() {
        let m = mirror_url("http://Mirror.Example/centos").expect("valid");
        assert_eq!(
            (m.scheme, m.host.as_str(), m.port, m.path.as_str()),
            (Scheme::Http, "mirror.example", 80, "/centos/")
        );
        let m = mirror_url("https://b.example:8443/x/").expect("valid");
        assert_eq!((m.scheme, m.port), (Scheme::Https, 8443));
        assert_eq!(m.url_for("a%20b.rpm"), "https://b.example:8443/x/a%20b.rpm");
        for bad in [
            "ftp://x/",
            "http://u:p@x/",
            "http://u@x/",
            "http://x/?q",
            "http://x/#f",
            "/relative",
            "x",
            "http://",
            "http://:80/",
        ] {
            assert!(mirror_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parent_appliances() {
        let m = mirror_url("kickstand://Site-Cache.Example/centos").expect("valid");
        assert_eq!(
            (m.scheme, m.host.as_str(), m.port, m.path.as_str(), m.kind),
            (
                Scheme::Http,
                "site-cache.example",
                80,
                "/repo/centos/",
                MirrorKind::Appliance
            )
        );
        let m = mirror_url("kickstand://[::1]:8080/rocky/").expect("valid");
        assert_eq!(m.url_for("a.rpm"), "http://[::1]:8080/repo/rocky/a.rpm");
        assert_eq!(
            mirror_url("http://x/").expect("valid").kind,
            MirrorKind::Mirror
        );
        for bad in [
            "kickstand://cache",
            "kickstand://cache/",
            "kickstand://cache/a/b",
            "kickstand://cache/.hidden",
            "kickstand://u:p@cache/centos",
            "kickstand://cache/centos?q",
            "kickstand:///centos",
        ] {
            assert!(mirror_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxies() {
        let p = proxy("http://127.0.0.1", Some("kick"), Some("secret")).expect("valid");
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3128));
        assert_eq!(
            p.credentials.map(|c| (c.username, c.password)),
            Some(("kick".into(), "secret".into()))
        );
        assert!(proxy("https://p:1", None, None).is_err());
        assert!(proxy("http://u:p@p:1", None, None).is_err());
        assert!(proxy("http://p:1/x", None, None).is_err());
        assert!(proxy("http://p:1", None, Some("pw")).is_err());
    }
}
