//! Request target → route, as a pure function. Everything that reaches a
//! handler has a parsed MAC or a checked name; everything else is refused
//! with the [`ApiError`] it gets on the wire. Boot script names and MAC
//! segments are read by the profile crate's [`urls`], the module that
//! builds them.

use http::Method;
use kickstand_profiles::Mac;
use kickstand_profiles::urls;

use crate::error::ApiError;
use crate::front::RouteKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Ipxe(Mac),
    /// A boot loader from the TFTP root, for UEFI HTTP boot which has no
    /// TFTP: a bare file name of a safe alphabet, never a path.
    Loader(&'a str),
    Kickstart(Mac),
    Report(Mac, Report),
    Hosts,
    /// `/repo/<mirror>/<path>`: the rest of the path is passed on raw; the
    /// repo proxy owns its normalisation.
    Repo {
        mirror: &'a str,
        path: &'a str,
    },
    Status,
    Metrics,
    Cache(CacheOp<'a>),
    Refused(Refusal),
}

impl Route<'_> {
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Ipxe(_) => RouteKind::BootScript,
            Route::Loader(_) => RouteKind::Loader,
            Route::Kickstart(_) => RouteKind::Kickstart,
            Route::Report(..) => RouteKind::Report,
            Route::Hosts => RouteKind::Hosts,
            Route::Repo { .. } => RouteKind::Repo,
            Route::Status => RouteKind::Status,
            Route::Metrics => RouteKind::Metrics,
            Route::Cache(_) => RouteKind::Cache,
            Route::Refused(_) => RouteKind::Refused,
        }
    }
}

/// Cache maintenance, run inside the daemon so it shares the cache, its
/// coalescing and its upstream connections with installers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOp<'a> {
    /// An OS name, or `<mirror>/<repo path>`.
    Warm(&'a str),
    Stats,
    Verify,
}

/// What a machine (or operator) reports about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Installing,
    Installed,
    Rearm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    BadMac,
    MethodNotAllowed,
    /// Absolute-form targets and CONNECT: Kickstand is not an open proxy.
    NotAProxy,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::NotFound => ApiError::NotFound("not found".into()),
            Refusal::BadMac => ApiError::BadMac,
            Refusal::MethodNotAllowed => ApiError::MethodNotAllowed,
            Refusal::NotAProxy => ApiError::NotAProxy,
        }
    }
}

pub fn route<'a>(method: &Method, target_is_origin_form: bool, path: &'a str) -> Route<'a> {
    use Route::*;
    if *method == Method::CONNECT || !target_is_origin_form {
        return Refused(Refusal::NotAProxy);
    }
    let read = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .splitn(2, '/')
        .collect();
    let found = match segments.as_slice() {
        [urls::BOOT_DIR, file] => match urls::parse_boot_script_file(file) {
            Some(Ok(mac)) => read.then_some(Ipxe(mac)),
            Some(Err(_)) => return Refused(Refusal::BadMac),
            None if is_loader_name(file) => read.then_some(Loader(file)),
            None => return Refused(Refusal::NotFound),
        },
        ["ks", mac] => read.then(|| mac_route(mac, Kickstart)),
        ["repo", rest] => {
            let (mirror, path) = rest.split_once('/').unwrap_or((rest, ""));
            read.then_some(Repo { mirror, path })
        }
        ["api", "hosts"] => read.then_some(Hosts),
        ["api", "cache/stats"] => read.then_some(Cache(CacheOp::Stats)),
        ["api", "cache/verify"] => post.then_some(Cache(CacheOp::Verify)),
        ["api", rest] if rest.starts_with("cache/warm/") => {
            let target = &rest["cache/warm/".len()..];
            post.then_some(Cache(CacheOp::Warm(target)))
        }
        ["api", rest] => {
            let Some(rest) = rest.strip_prefix("hosts/") else {
                return Refused(Refusal::NotFound);
            };
            let Some((mac, verb)) = rest.split_once('/') else {
                return Refused(Refusal::NotFound);
            };
            let report = match verb {
                "installing" => self::Report::Installing,
                "installed" => self::Report::Installed,
                "rearm" => self::Report::Rearm,
                _ => return Refused(Refusal::NotFound),
            };
            post.then(|| mac_route(mac, |m| Report(m, report)))
        }
        ["status"] | [""] => read.then_some(Status),
        ["metrics"] => read.then_some(Metrics),
        _ => return Refused(Refusal::NotFound),
    };
    found.unwrap_or(Refused(Refusal::MethodNotAllowed))
}

fn is_loader_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn mac_route<'a>(s: &str, f: impl FnOnce(Mac) -> Route<'a>) -> Route<'a> {
    match urls::parse_mac_segment(s) {
        Ok(mac) => f(mac),
        Err(_) => Route::Refused(Refusal::BadMac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        Mac([0x52, 0x54, 0, 0x10, 0, 1])
    }

    #[test]
    fn table() {
        let get = Method::GET;
        let cases: &[(&Method, bool, &str, Route<'_>)] = &[
            (
                &get,
                true,
                "/boot/52:54:00:10:00:01.ipxe",
                Route::Ipxe(mac()),
            ),
            (
                &Method::HEAD,
                true,
                "/boot/52-54-00-10-00-01.ipxe",
                Route::Ipxe(mac()),
            ),
            (
                &get,
                true,
                "/boot/52%3A54%3A00%3A10%3A00%3A01.ipxe",
                Route::Ipxe(mac()),
            ),
            (
                &get,
                true,
                "/boot/52%3a54%3a00%3a10%3a00%3a01.ipxe",
                Route::Ipxe(mac()),
            ),
            (
                &get,
                true,
                "/boot/52%3A54%3A00%3A10%3A00%3A01%00.ipxe",
                Route::Refused(Refusal::BadMac),
            ),
            (&get, true, "/boot/ipxe.efi", Route::Loader("ipxe.efi")),
            (
                &get,
                true,
                "/boot/../ipxe.efi",
                Route::Refused(Refusal::NotFound),
            ),
            (
                &get,
                true,
                "/boot/.hidden",
                Route::Refused(Refusal::NotFound),
            ),
            (
                &get,
                true,
                "/boot/%2e%2e%2fshadow",
                Route::Refused(Refusal::NotFound),
            ),
            (&get, true, "/boot/zz.ipxe", Route::Refused(Refusal::BadMac)),
            (&get, true, "/ks/52:54:00:10:00:01", Route::Kickstart(mac())),
            (
                &Method::POST,
                true,
                "/ks/52:54:00:10:00:01",
                Route::Refused(Refusal::MethodNotAllowed),
            ),
            (
                &get,
                true,
                "/ks/../../etc/passwd",
                Route::Refused(Refusal::BadMac),
            ),
            (
                &Method::POST,
                true,
                "/api/hosts/52:54:00:10:00:01/installed",
                Route::Report(mac(), Report::Installed),
            ),
            (
                &Method::POST,
                true,
                "/api/hosts/52:54:00:10:00:01/installing",
                Route::Report(mac(), Report::Installing),
            ),
            (
                &Method::POST,
                true,
                "/api/hosts/52:54:00:10:00:01/rearm",
                Route::Report(mac(), Report::Rearm),
            ),
            (
                &get,
                true,
                "/api/hosts/52:54:00:10:00:01/installed",
                Route::Refused(Refusal::MethodNotAllowed),
            ),
            (
                &Method::POST,
                true,
                "/api/hosts/52:54:00:10:00:01/explode",
                Route::Refused(Refusal::NotFound),
            ),
            (&get, true, "/api/hosts", Route::Hosts),
            (
                &Method::POST,
                true,
                "/api/cache/warm/centos-stream-9",
                Route::Cache(CacheOp::Warm("centos-stream-9")),
            ),
            (
                &get,
                true,
                "/api/cache/warm/centos-stream-9",
                Route::Refused(Refusal::MethodNotAllowed),
            ),
            (&get, true, "/api/cache/stats", Route::Cache(CacheOp::Stats)),
            (
                &Method::POST,
                true,
                "/api/cache/verify",
                Route::Cache(CacheOp::Verify),
            ),
            (
                &get,
                true,
                "/repo/centos/9-stream/BaseOS/x86_64/os/.treeinfo",
                Route::Repo {
                    mirror: "centos",
                    path: "9-stream/BaseOS/x86_64/os/.treeinfo",
                },
            ),
            (
                &Method::PUT,
                true,
                "/repo/centos/x",
                Route::Refused(Refusal::MethodNotAllowed),
            ),
            (&get, true, "/", Route::Status),
            (&get, true, "/status", Route::Status),
            (&get, true, "/metrics", Route::Metrics),
            (&get, true, "/nope", Route::Refused(Refusal::NotFound)),
            (&get, false, "/", Route::Refused(Refusal::NotAProxy)),
            (
                &Method::CONNECT,
                true,
                "",
                Route::Refused(Refusal::NotAProxy),
            ),
        ];
        for (method, origin, path, want) in cases {
            assert_eq!(&route(method, *origin, path), want, "{method} {path}");
        }
    }
}
