//! Request target → route, as a pure function. Everything that reaches a
//! handler has a parsed MAC or a checked name, and says who may call it
//! ([`Access`]); everything else is refused with the [`ApiError`] it gets on
//! the wire. Boot script names and MAC segments are read by the profile
//! crate's [`urls`], the module that builds them.

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
    /// An install callback from the host's kickstart.
    Report(Mac, Report),
    /// An operator sends an installed or failed host back to the installer.
    Rearm(Mac),
    /// An operator reads or changes a host's power through its BMC.
    Power(Mac, PowerVerb),
    Hosts,
    Timeline(Mac),
    InstallerLog(Mac),
    Discovered,
    /// An operator turns a discovered machine into a host profile.
    Adopt(Mac),
    /// An operator forgets one discovered machine, or (`None`) all of them.
    Forget(Option<Mac>),
    /// A machine with no profile reports what iPXE knows of it.
    DiscoveryReport(Mac),
    /// `/os/<os>/<path>`: one of an OS's boot files (shim, GRUB, kernel,
    /// initrd) from the repo cache, for UEFI HTTP boot of the shim; the
    /// daemon decides which paths those are.
    OsFile {
        os: &'a str,
        path: &'a str,
    },
    /// `/repo/<mirror>/<path>`: the rest of the path is passed on raw; the
    /// repo proxy owns its normalisation.
    Repo {
        mirror: &'a str,
        path: &'a str,
    },
    /// `/`: the status page (HTML); its data comes from [`Route::StatusJson`].
    Page,
    /// `/static/<file>`: the page's stylesheet and script, built in.
    Asset(&'a str),
    /// `/api/status`: everything the status page shows, in one document.
    StatusJson,
    /// `/status`: the same, as text for a terminal.
    Status,
    Metrics,
    Cache(CacheOp<'a>),
    /// `/api/audit`: the operator's audit log (operator only: it names
    /// who did what from where).
    Audit,
    Refused(Refusal),
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone on the rack LAN: boot files, read-only views.
    Open,
    /// The host itself, with its build token (`?token=`); never the
    /// operator token.
    Build,
    /// An operator, with `Authorization: Bearer <operator token>`; never a
    /// build token.
    Operator,
}

impl Route<'_> {
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Ipxe(_) => RouteKind::BootScript,
            Route::Loader(_) | Route::OsFile { .. } => RouteKind::Loader,
            Route::Kickstart(_) => RouteKind::Kickstart,
            Route::Report(..) => RouteKind::Report,
            Route::Rearm(_)
            | Route::Power(..)
            | Route::Adopt(_)
            | Route::Forget(_)
            | Route::Audit => RouteKind::Operator,
            Route::Hosts | Route::Timeline(_) | Route::InstallerLog(_) | Route::Discovered => {
                RouteKind::Hosts
            }
            Route::DiscoveryReport(_) => RouteKind::Discovery,
            Route::Repo { .. } => RouteKind::Repo,
            Route::Status | Route::StatusJson | Route::Page | Route::Asset(_) => RouteKind::Status,
            Route::Metrics => RouteKind::Metrics,
            Route::Cache(_) => RouteKind::Cache,
            Route::Refused(_) => RouteKind::Refused,
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Route::Kickstart(_) | Route::Report(..) => Access::Build,
            Route::Rearm(_)
            | Route::Power(..)
            | Route::Adopt(_)
            | Route::Forget(_)
            | Route::Audit
            | Route::Cache(CacheOp::Warm(_) | CacheOp::Verify) => Access::Operator,
            _ => Access::Open,
        }
    }

    /// The operator action this route is, for the audit log: its name and
    /// target. `None` for every other route (reading the log included).
    pub fn audited(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Route::Rearm(mac) => ("rearm", mac.to_string()),
            Route::Power(mac, verb) => (verb.audited(), mac.to_string()),
            Route::Adopt(mac) => ("adopt", mac.to_string()),
            Route::Forget(Some(mac)) => ("forget", mac.to_string()),
            Route::Forget(None) => ("forget", "every discovered machine".to_owned()),
            Route::Cache(CacheOp::Warm(target)) => ("cache-warm", (*target).to_owned()),
            Route::Cache(CacheOp::Verify) => ("cache-verify", String::new()),
            _ => return None,
        })
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

/// `POST /api/hosts/<mac>/power/<verb>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerVerb {
    Status,
    On,
    Off,
    Cycle,
}

impl PowerVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerVerb::Status => "status",
            PowerVerb::On => "on",
            PowerVerb::Off => "off",
            PowerVerb::Cycle => "cycle",
        }
    }

    fn parse(s: &str) -> Option<PowerVerb> {
        [
            PowerVerb::Status,
            PowerVerb::On,
            PowerVerb::Off,
            PowerVerb::Cycle,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// The audit log's name for it.
    fn audited(self) -> &'static str {
        match self {
            PowerVerb::Status => "power-status",
            PowerVerb::On => "power-on",
            PowerVerb::Off => "power-off",
            PowerVerb::Cycle => "power-cycle",
        }
    }
}

/// What a host's kickstart reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `%pre`: the installer is running.
    Installing,
    /// `%post`: the install is done.
    Installed,
    /// `%onerror`: the install failed; the body says why.
    Failed,
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
        [urls::OS_DIR, rest] => match rest.split_once('/') {
            Some((os, path)) if !os.is_empty() && !path.is_empty() => {
                read.then_some(OsFile { os, path })
            }
            _ => return Refused(Refusal::NotFound),
        },
        ["repo", rest] => {
            let (mirror, path) = rest.split_once('/').unwrap_or((rest, ""));
            read.then_some(Repo { mirror, path })
        }
        ["api", "hosts"] => read.then_some(Hosts),
        ["api", "status"] => read.then_some(StatusJson),
        ["api", "audit"] => read.then_some(Audit),
        ["static", file] => read.then_some(Asset(file)),
        ["api", "discovered"] => read.then_some(Discovered),
        ["api", "cache/stats"] => read.then_some(Cache(CacheOp::Stats)),
        ["api", "cache/verify"] => post.then_some(Cache(CacheOp::Verify)),
        ["api", rest] => match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["cache", "warm", ..] => {
                let target = &rest["cache/warm/".len().min(rest.len())..];
                post.then_some(Cache(CacheOp::Warm(target)))
            }
            ["discover", mac] => read.then(|| mac_route(mac, DiscoveryReport)),
            ["discovered", mac, "adopt"] => post.then(|| mac_route(mac, Adopt)),
            ["discovered", mac, "forget"] => post.then(|| mac_route(mac, |m| Forget(Some(m)))),
            ["discovered", "clear"] => post.then_some(Forget(None)),
            ["hosts", mac, "power", verb] => match PowerVerb::parse(verb) {
                Some(verb) => post.then(|| mac_route(mac, |m| Power(m, verb))),
                None => return Refused(Refusal::NotFound),
            },
            ["hosts", mac, verb] => {
                let ctor: fn(Mac) -> Route<'a> = match *verb {
                    "installing" => |m| Report(m, self::Report::Installing),
                    "installed" => |m| Report(m, self::Report::Installed),
                    "failed" => |m| Report(m, self::Report::Failed),
                    "rearm" => Rearm,
                    "timeline" | "log" => {
                        let ctor: fn(Mac) -> Route<'a> = if *verb == "log" {
                            InstallerLog
                        } else {
                            Timeline
                        };
                        return if read {
                            mac_route(mac, ctor)
                        } else {
                            Refused(Refusal::MethodNotAllowed)
                        };
                    }
                    _ => return Refused(Refusal::NotFound),
                };
                post.then(|| mac_route(mac, ctor))
            }
            _ => return Refused(Refusal::NotFound),
        },
        [""] => read.then_some(Page),
        ["status"] => read.then_some(Status),
        ["metrics"] => read.then_some(Metrics),
        _ => return Refused(Refusal::NotFound),
    };
    found.unwrap_or(Refused(Refusal::MethodNotAllowed))
}

/// Whether what is answered at `path` — files and errors alike, whatever
/// the method — is a mirror's: `/repo/…` and `/os/…`.
pub fn serves_mirror_bytes(path: &str) -> bool {
    let first = path.strip_prefix('/').unwrap_or(path).split('/').next();
    matches!(first, Some(dir) if dir == "repo" || dir == urls::OS_DIR)
}

/// The build token of a request's query string (`?token=…`), if any.
pub fn token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == urls::TOKEN_PARAM)
        .map(|(_, v)| v.into_owned())
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
        let post = Method::POST;
        let cases: &[(&Method, bool, &str, Route<'_>, Access)] = &[
            (
                &get,
                true,
                "/boot/52:54:00:10:00:01.ipxe",
                Route::Ipxe(mac()),
                Access::Open,
            ),
            (
                &Method::HEAD,
                true,
                "/boot/52-54-00-10-00-01.ipxe",
                Route::Ipxe(mac()),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/52%3A54%3A00%3A10%3A00%3A01.ipxe",
                Route::Ipxe(mac()),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/52%3a54%3a00%3a10%3a00%3a01.ipxe",
                Route::Ipxe(mac()),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/52%3A54%3A00%3A10%3A00%3A01%00.ipxe",
                Route::Refused(Refusal::BadMac),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/ipxe.efi",
                Route::Loader("ipxe.efi"),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/../ipxe.efi",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/.hidden",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/%2e%2e%2fshadow",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &get,
                true,
                "/boot/zz.ipxe",
                Route::Refused(Refusal::BadMac),
                Access::Open,
            ),
            (
                &get,
                true,
                "/ks/52:54:00:10:00:01",
                Route::Kickstart(mac()),
                Access::Build,
            ),
            (
                &post,
                true,
                "/ks/52:54:00:10:00:01",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (
                &get,
                true,
                "/ks/../../etc/passwd",
                Route::Refused(Refusal::BadMac),
                Access::Open,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/installed",
                Route::Report(mac(), Report::Installed),
                Access::Build,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/installing",
                Route::Report(mac(), Report::Installing),
                Access::Build,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/failed",
                Route::Report(mac(), Report::Failed),
                Access::Build,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/rearm",
                Route::Rearm(mac()),
                Access::Operator,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/power/cycle",
                Route::Power(mac(), PowerVerb::Cycle),
                Access::Operator,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/power/status",
                Route::Power(mac(), PowerVerb::Status),
                Access::Operator,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/power/explode",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &get,
                true,
                "/api/hosts/52:54:00:10:00:01/installed",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/explode",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &get,
                true,
                "/api/hosts/52:54:00:10:00:01/timeline",
                Route::Timeline(mac()),
                Access::Open,
            ),
            (
                &get,
                true,
                "/api/hosts/52:54:00:10:00:01/log",
                Route::InstallerLog(mac()),
                Access::Open,
            ),
            (
                &post,
                true,
                "/api/hosts/52:54:00:10:00:01/timeline",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (&get, true, "/api/hosts", Route::Hosts, Access::Open),
            (&get, true, "/api/audit", Route::Audit, Access::Operator),
            (
                &get,
                true,
                "/api/discovered",
                Route::Discovered,
                Access::Open,
            ),
            (
                &get,
                true,
                "/api/discover/52:54:00:10:00:01",
                Route::DiscoveryReport(mac()),
                Access::Open,
            ),
            (
                &post,
                true,
                "/api/discovered/52:54:00:10:00:01/adopt",
                Route::Adopt(mac()),
                Access::Operator,
            ),
            (
                &post,
                true,
                "/api/discovered/52:54:00:10:00:01/forget",
                Route::Forget(Some(mac())),
                Access::Operator,
            ),
            (
                &post,
                true,
                "/api/discovered/clear",
                Route::Forget(None),
                Access::Operator,
            ),
            (
                &get,
                true,
                "/api/discovered/clear",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (
                &post,
                true,
                "/api/cache/warm/centos-stream-9",
                Route::Cache(CacheOp::Warm("centos-stream-9")),
                Access::Operator,
            ),
            (
                &get,
                true,
                "/api/cache/warm/centos-stream-9",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (
                &get,
                true,
                "/api/cache/stats",
                Route::Cache(CacheOp::Stats),
                Access::Open,
            ),
            (
                &post,
                true,
                "/api/cache/verify",
                Route::Cache(CacheOp::Verify),
                Access::Operator,
            ),
            (
                &get,
                true,
                "/repo/centos/9-stream/BaseOS/x86_64/os/.treeinfo",
                Route::Repo {
                    mirror: "centos",
                    path: "9-stream/BaseOS/x86_64/os/.treeinfo",
                },
                Access::Open,
            ),
            (
                &get,
                true,
                "/os/centos-stream-9/EFI/BOOT/BOOTX64.EFI",
                Route::OsFile {
                    os: "centos-stream-9",
                    path: "EFI/BOOT/BOOTX64.EFI",
                },
                Access::Open,
            ),
            (
                &get,
                true,
                "/os/centos-stream-9",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &post,
                true,
                "/os/centos-stream-9/EFI/BOOT/BOOTX64.EFI",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (
                &Method::PUT,
                true,
                "/repo/centos/x",
                Route::Refused(Refusal::MethodNotAllowed),
                Access::Open,
            ),
            (&get, true, "/", Route::Page, Access::Open),
            (
                &get,
                true,
                "/static/status.js",
                Route::Asset("status.js"),
                Access::Open,
            ),
            (&get, true, "/api/status", Route::StatusJson, Access::Open),
            (&get, true, "/status", Route::Status, Access::Open),
            (&get, true, "/metrics", Route::Metrics, Access::Open),
            (
                &get,
                true,
                "/nope",
                Route::Refused(Refusal::NotFound),
                Access::Open,
            ),
            (
                &get,
                false,
                "/",
                Route::Refused(Refusal::NotAProxy),
                Access::Open,
            ),
            (
                &Method::CONNECT,
                true,
                "",
                Route::Refused(Refusal::NotAProxy),
                Access::Open,
            ),
        ];
        for (method, origin, path, want, access) in cases {
            let got = route(method, *origin, path);
            assert_eq!(&got, want, "{method} {path}");
            assert_eq!(got.access(), *access, "{method} {path}");
        }
    }

    #[test]
    fn mirror_paths() {
        for path in [
            "/repo/centos/9-stream/BaseOS/x86_64/os/index.html",
            "/repo/nosuchmirror",
            "/os/centos-stream-9/EFI/BOOT/BOOTX64.EFI",
            "/os/centos-stream-9",
        ] {
            assert!(serves_mirror_bytes(path), "{path}");
        }
        for path in [
            "/",
            "/status",
            "/static/status.js",
            "/boot/ipxe.efi",
            "/repository",
        ] {
            assert!(!serves_mirror_bytes(path), "{path}");
        }
    }

    #[test]
    fn tokens_from_the_query() {
        assert_eq!(token(Some("token=abc_-1")).as_deref(), Some("abc_-1"));
        assert_eq!(token(Some("a=1&token=x%2By")).as_deref(), Some("x+y"));
        assert_eq!(token(Some("tok=1")), None);
        assert_eq!(token(None), None);
    }
}
