//! What the repo proxy is given: the mirror table and office proxy as the
//! profile crate validated them, the cache's place and size, and timeouts.
//! Nothing here parses a URL again; the one check left for run time is
//! whether the extra CA certificates are valid X.509 (see `upstream`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use kickstand_profiles::model::{Appliance, MirrorUrl, Proxy};

/// The repo proxy's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RepoConfig {
    /// Mirror name (the `<mirror>` of `/repo/<mirror>/<path>`) → base URLs,
    /// tried in order; later ones are the failover.
    pub mirrors: BTreeMap<String, Vec<MirrorUrl>>,
    /// The office proxy; `None` connects to mirrors directly.
    pub proxy: Option<Proxy>,
    /// Where cached files live; must be on one filesystem so commits are renames.
    pub cache_dir: PathBuf,
    /// Least-recently-used files are evicted above this many bytes.
    pub max_cache_bytes: u64,
    /// Small cached bodies (up to 256 KiB each) are also kept in memory, up
    /// to this many bytes, least recently used out first: a hit of one
    /// needs no disk read, nor even an `open`. 0 keeps none. The default
    /// (64 MiB) holds the packages of several installs' worth of small
    /// files on an appliance with little RAM; larger files are served from
    /// the page cache.
    pub memory_bytes: u64,
    /// Extra trust anchors (DER) for https mirrors behind a private CA.
    pub extra_roots: Vec<Vec<u8>>,
    pub timeouts: Timeouts,
    /// A revalidated file (`repomd.xml`, a boot image, …) is served without
    /// asking the mirror again for this long, so a rack booting at once sends
    /// one conditional GET, not fifty. A file no checksum vouches for (kept
    /// unconfirmed, e.g. `.treeinfo` itself) is confirmed on every request
    /// instead; concurrent requests still share one conditional GET.
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
            memory_bytes: crate::memory::DEFAULT_BUDGET,
            extra_roots: Vec::new(),
            timeouts: Timeouts::default(),
            revalidate_after: Duration::from_secs(30),
            max_redirects: 5,
        }
    }

    /// The settings the appliance config gives.
    pub fn from_appliance(appliance: &Appliance) -> Self {
        let mut config = RepoConfig::new(&appliance.cache.dir, appliance.cache.max_bytes);
        config.mirrors = appliance.mirrors.clone();
        config.proxy = appliance.proxy.clone();
        config.extra_roots = appliance
            .mirror_ca
            .as_ref()
            .map(|ca| ca.certs.clone())
            .unwrap_or_default();
        config.revalidate_after = appliance.cache.revalidate_after;
        config
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

/// The mirror table, with the set of places a redirect may lead.
#[derive(Debug, Clone)]
pub(crate) struct Mirrors {
    pub(crate) by_name: BTreeMap<String, Vec<MirrorUrl>>,
    /// `scheme://host:port` of every base URL.
    allowed: HashSet<String>,
    /// Host names of every base URL: a redirect to the default port of
    /// either scheme on one of them is also fine (http → https upgrades).
    hosts: HashSet<String>,
}

impl Mirrors {
    pub(crate) fn new(by_name: &BTreeMap<String, Vec<MirrorUrl>>) -> Mirrors {
        let bases = by_name.values().flatten();
        Mirrors {
            allowed: bases
                .clone()
                .map(|b| format!("{}://{}:{}", b.scheme.as_str(), b.host, b.port))
                .collect(),
            hosts: bases.map(|b| b.host.clone()).collect(),
            by_name: by_name.clone(),
        }
    }

    /// Whether a redirect to `url` stays on configured mirror hosts: the
    /// proxy must never be steered somewhere else by a `Location` header.
    pub(crate) fn redirect_allowed(&self, url: &url::Url) -> bool {
        let scheme = url.scheme();
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        if (scheme != "http" && scheme != "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        let default_port = url.port().is_none();
        self.allowed.contains(&format!("{scheme}://{host}:{port}"))
            || (default_port && self.hosts.contains(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_mirror_hosts() {
        let mut raw = BTreeMap::new();
        raw.insert(
            "centos".to_string(),
            ["http://Mirror.example/centos", "https://b.example:8443/x/"]
                .iter()
                .map(|u| u.parse().expect("valid"))
                .collect(),
        );
        let m = Mirrors::new(&raw);
        let bases = &m.by_name["centos"];
        assert_eq!(
            bases[0].url_for("a.rpm"),
            "http://mirror.example:80/centos/a.rpm"
        );
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
        ];
        for (url, want) in table {
            let parsed = url::Url::parse(url).expect("url");
            assert_eq!(m.redirect_allowed(&parsed), want, "{url}");
        }
    }
}
