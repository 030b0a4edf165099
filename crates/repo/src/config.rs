//! Configuration given by the daemon, and its validated form.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use crate::Error;

/// What the repo proxy needs from the appliance config. Paths are already
/// resolved by the daemon (relative to the config file).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RepoConfig {
    /// Mirror name (the `<mirror>` of `/repo/<mirror>/<path>`) → base URLs,
    /// tried in order; later ones are the failover.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// The office proxy; `None` connects to mirrors directly.
    pub proxy: Option<ProxyConfig>,
    /// Where cached files live; must be on one filesystem so commits are renames.
    pub cache_dir: PathBuf,
    /// Least-recently-used files are evicted above this many bytes.
    pub max_cache_bytes: u64,
    /// Extra trust anchors (PEM) for https mirrors behind a private CA.
    pub extra_ca_pem: Option<PathBuf>,
    pub timeouts: Timeouts,
    /// A revalidated file (`repomd.xml`, `.treeinfo`, …) is served without
    /// asking the mirror again for this long, so a rack booting at once sends
    /// one conditional GET, not fifty.
    pub revalidate_after: Duration,
    /// Redirect hops followed before giving up (mirror redirectors use one or two).
    pub max_redirects: usize,
}

impl RepoConfig {
    /// A config with no mirrors, no proxy and default timeouts.
    pub fn new(cache_dir: impl Into<PathBuf>, max_cache_bytes: u64) -> Self {
        RepoConfig {
            mirrors: BTreeMap::new(),
            proxy: None,
            cache_dir: cache_dir.into(),
            max_cache_bytes,
            extra_ca_pem: None,
            timeouts: Timeouts::default(),
            revalidate_after: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// The office HTTP proxy (`http://host:port`), with optional Basic credentials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl ProxyConfig {
    pub fn new(url: impl Into<String>) -> Self {
        ProxyConfig {
            url: url.into(),
            username: None,
            password: None,
        }
    }

    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }
}

#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Timeouts {
    /// TCP connect (and CONNECT + TLS handshake) to the proxy or mirror.
    pub connect: Duration,
    /// From request sent to response headers received.
    pub headers: Duration,
    /// No body bytes for this long aborts the transfer; a slow but moving
    /// download of a 900 MiB install image is never cut off.
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            headers: Duration::from_secs(30),
            stall: Duration::from_secs(30),
        }
    }
}

/// A mirror base URL: `http(s)://host[:port]/path/` (always ending in `/`).
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) scheme: String,
    pub(crate) authority: String,
    pub(crate) path: String,
}

impl Base {
    fn parse(raw: &str) -> Result<Base, Error> {
        let bad = |why: &str| Error::Config(format!("mirror URL {raw:?}: {why}"));
        let uri: Uri = raw.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| bad("no scheme"))?
            .to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("only http and https"));
        }
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("credentials in URL"));
        }
        if uri.query().is_some() {
            return Err(bad("query string"));
        }
        let mut path = uri.path().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        let authority = host_key_of(auth, &scheme);
        Ok(Base {
            scheme,
            authority,
            path,
        })
    }

    pub(crate) fn url_for(&self, wire_path: &str) -> String {
        format!(
            "{}://{}{}{}",
            self.scheme, self.authority, self.path, wire_path
        )
    }
}

/// `host:port` with the default port made explicit, lowercase: the identity
/// that redirect targets are checked against.
pub(crate) fn host_key_of(auth: &http::uri::Authority, scheme: &str) -> String {
    let port = auth
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    format!("{}:{}", auth.host().to_ascii_lowercase(), port)
}

/// The validated mirror table.
#[derive(Debug, Clone)]
pub(crate) struct Mirrors {
    pub(crate) by_name: BTreeMap<String, Vec<Base>>,
    /// `scheme://host:port` of every base URL: where a redirect may lead.
    pub(crate) allowed: HashSet<String>,
    /// Host names of every base URL: a redirect to the default port of
    /// either scheme on one of them is also fine (http → https upgrades).
    hosts: HashSet<String>,
}

impl Mirrors {
    pub(crate) fn parse(raw: &BTreeMap<String, Vec<String>>) -> Result<Mirrors, Error> {
        let mut by_name = BTreeMap::new();
        let mut allowed = HashSet::new();
        let mut hosts = HashSet::new();
        for (name, urls) in raw {
            if !valid_mirror_name(name) {
                return Err(Error::Config(format!(
                    "mirror name {name:?}: use letters, digits, `.`, `_`, `-`"
                )));
            }
            if urls.is_empty() {
                return Err(Error::Config(format!("mirror {name:?} has no URLs")));
            }
            let bases = urls
                .iter()
                .map(|u| Base::parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            for b in &bases {
                allowed.insert(format!("{}://{}", b.scheme, b.authority));
                if let Some((host, _port)) = b.authority.rsplit_once(':') {
                    hosts.insert(host.to_string());
                }
            }
            by_name.insert(name.clone(), bases);
        }
        Ok(Mirrors {
            by_name,
            allowed,
            hosts,
        })
    }

    /// Whether a redirect to `url` stays on configured mirror hosts: the
    /// proxy must never be steered somewhere else by a `Location` header.
    pub(crate) fn redirect_allowed(&self, url: &str) -> bool {
        let Ok(uri) = url.parse::<Uri>() else {
            return false;
        };
        let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        if (scheme != "http" && scheme != "https") || auth.as_str().contains('@') {
            return false;
        }
        let key = host_key_of(auth, scheme);
        let default_port = auth
            .port_u16()
            .is_none_or(|p| p == if scheme == "https" { 443 } else { 80 });
        self.allowed.contains(&format!("{scheme}://{key}"))
            || (default_port && self.hosts.contains(&auth.host().to_ascii_lowercase()))
    }
}

fn valid_mirror_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The validated proxy: where to connect and what to send as credentials.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) auth: Option<http::HeaderValue>,
}

impl Proxy {
    pub(crate) fn parse(cfg: &ProxyConfig) -> Result<Proxy, Error> {
        use base64::Engine as _;
        let bad = |why: &str| Error::Config(format!("proxy URL {:?}: {why}", cfg.url));
        let uri: Uri = cfg.url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// proxies are supported"));
        }
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("put credentials in username/password"));
        }
        let header = match (&cfg.username, &cfg.password) {
            (Some(u), p) => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{u}:{}", p.as_deref().unwrap_or("")));
                Some(
                    http::HeaderValue::from_str(&format!("Basic {token}"))
                        .map_err(|_| bad("bad credentials"))?,
                )
            }
            (None, Some(_)) => return Err(bad("password without username")),
            (None, None) => None,
        };
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Proxy {
            host,
            port: auth.port_u16().unwrap_or(3128),
            auth: header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_table() {
        let mut raw = BTreeMap::new();
        raw.insert(
            "centos".to_string(),
            vec![
                "http://Mirror.example/centos".to_string(),
                "https://b.example:8443/x/".to_string(),
            ],
        );
        let m = Mirrors::parse(&raw).expect("valid");
        let bases = &m.by_name["centos"];
        assert_eq!(
            bases[0].url_for("a.rpm"),
            "http://mirror.example:80/centos/a.rpm"
        );
        assert!(m.allowed.contains("https://b.example:8443"));
        let table = [
            ("http://mirror.example/x", true),
            ("http://MIRROR.example:80/x", true),
            ("https://mirror.example/x", true), // upgrade on the same host
            ("http://mirror.example:8080/x", false),
            ("https://b.example:8443/y", true),
            ("http://b.example/y", true),
            ("http://evil.example/x", false),
            ("http://user@mirror.example/x", false),
            ("ftp://mirror.example/x", false),
            ("/relative", false),
        ];
        for (url, want) in table {
            assert_eq!(m.redirect_allowed(url), want, "{url}");
        }
        for bad in ["ftp://x/", "http://u:p@x/", "http://x/?q", "/relative", "x"] {
            raw.insert("bad".into(), vec![bad.into()]);
            assert!(Mirrors::parse(&raw).is_err(), "{bad}");
        }
        let mut raw = BTreeMap::new();
        raw.insert("../x".to_string(), vec!["http://a/".to_string()]);
        assert!(Mirrors::parse(&raw).is_err());
    }

    #[test]
    fn proxy_auth_header() {
        let p = Proxy::parse(
            &ProxyConfig::new("http://127.0.0.1:3128").with_credentials("kick", "secret"),
        )
        .expect("valid");
        assert_eq!(
            p.auth.as_ref().map(|h| h.to_str().unwrap_or("")),
            Some("Basic a2ljazpzZWNyZXQ=")
        );
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3128));
        assert!(Proxy::parse(&ProxyConfig::new("https://p:1")).is_err());
    }
}
