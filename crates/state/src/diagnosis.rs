//! "Why didn't node07 install?": one pure function from a host's record,
//! its recent events and the time to a named outcome, whose `Display` is
//! the sentence an operator reads at the end of `kickstand timeline`.
//!
//! The timeline is read as journeys: each firmware DHCP request starts one
//! (a `dhcp-offer` of a loader file, or a `dhcp-ignored`), and the latest
//! journey's furthest step says where the machine stopped. Steps that are
//! normally quick get a grace period before they are called stuck, so a
//! host in the middle of booting is "in progress", not "broken".

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::clock::{self, Span, Stamp};
use crate::event::{Event, EventKind};
use crate::host::{Host, Pulled};
use crate::phase::Phase;

/// How long a quick step (offer → TFTP, loader → iPXE's DHCP, script
/// offered → fetched) may take before it counts as never happening.
pub const QUICK_STEP: Duration = Duration::from_secs(60);
/// How long fetching the installer's kernel and initrd, or the installer
/// reaching the kickstart, may take.
pub const SLOW_STEP: Duration = Duration::from_secs(5 * 60);
/// How long from the kickstart fetch to `%pre` before the installer is
/// taken not to have started.
pub const PRE_CALLBACK: Duration = Duration::from_secs(10 * 60);

/// Where a host's journey stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Diagnosis {
    /// No event at all.
    NeverSeen,
    /// ProxyDHCP did not answer, for a named reason.
    Ignored {
        at: SystemTime,
        reason: String,
    },
    /// The firmware was offered a loader and never fetched it.
    LoaderNotFetched {
        at: SystemTime,
        file: String,
    },
    /// A TFTP transfer ended badly and no later one succeeded.
    TftpFailed {
        at: SystemTime,
        file: String,
        bytes: u64,
        outcome: String,
        error_code: Option<u64>,
    },
    /// The loader was sent; iPXE never asked ProxyDHCP for its script.
    LoaderSilent {
        at: SystemTime,
        file: String,
    },
    /// iPXE was offered its script URL and never fetched it.
    ScriptNotFetched {
        at: SystemTime,
    },
    /// The install script was served; the installer's kernel never came.
    KernelNotFetched {
        at: SystemTime,
    },
    /// The installer booted (its image was fetched); the kickstart never came.
    KickstartNotFetched {
        at: SystemTime,
    },
    /// The kickstart was fetched; `%pre` never called back.
    InstallerNotStarted {
        at: SystemTime,
        waited: Duration,
    },
    /// The latest request of the journey was refused for its build token.
    TokenRejected {
        at: SystemTime,
        ip: String,
        reason: String,
    },
    /// `%pre` called back; the install is running.
    Installing {
        since: SystemTime,
        pulled: Pulled,
    },
    /// Installing for longer than `install_timeout`.
    Overdue {
        since: SystemTime,
        waited: Duration,
    },
    /// A step happened a moment ago; the next one is not due yet.
    InProgress {
        at: SystemTime,
        last: String,
    },
    Installed {
        at: SystemTime,
    },
    Failed {
        at: SystemTime,
        reason: String,
    },
    Rearmed {
        at: SystemTime,
    },
    /// Sent to its disk (a host that is not installed: e.g. no profile).
    LocalBoot {
        at: SystemTime,
    },
    /// Given the discovery script; no report came back.
    DiscoveryNotReported {
        at: SystemTime,
    },
    /// Reported its facts: waits for an operator to adopt it.
    Discovered {
        at: SystemTime,
    },
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnosis::NeverSeen => f.write_str(
                "never seen by ProxyDHCP: check that it PXE-boots on this segment and that its MAC is right",
            ),
            Diagnosis::Ignored { at, reason } => {
                write!(f, "ProxyDHCP did not answer it at {}: {reason}", Stamp(*at))
            }
            Diagnosis::LoaderNotFetched { at, file } => write!(
                f,
                "offered {file} at {}, the loader was never fetched over TFTP: the firmware ignored the ProxyDHCP offer",
                Stamp(*at)
            ),
            Diagnosis::TftpFailed {
                at,
                file,
                bytes,
                outcome,
                error_code,
            } => {
                let what = match outcome.as_str() {
                    "aborted" => "aborted by the client",
                    "timed-out" => "timed out",
                    _ => "failed",
                };
                write!(f, "TFTP of {file} {what} after {bytes} bytes")?;
                if let Some(code) = error_code {
                    write!(f, " (error {code})")?;
                }
                write!(f, " at {} and never retried", Stamp(*at))
            }
            Diagnosis::LoaderSilent { at, file } => write!(
                f,
                "{file} sent at {}, iPXE never asked ProxyDHCP for its boot script: the loader did not start",
                Stamp(*at)
            ),
            Diagnosis::ScriptNotFetched { at } => write!(
                f,
                "boot script offered to iPXE at {}, never fetched over HTTP: iPXE could not reach the appliance",
                Stamp(*at)
            ),
            Diagnosis::KernelNotFetched { at } => write!(
                f,
                "install script served at {}, the installer kernel and initrd were never fetched through the repo proxy",
                Stamp(*at)
            ),
            Diagnosis::KickstartNotFetched { at } => write!(
                f,
                "installer image fetched at {}, the kickstart was never fetched: the installer did not boot or could not reach the appliance",
                Stamp(*at)
            ),
            Diagnosis::InstallerNotStarted { at, waited } => write!(
                f,
                "kickstart fetched at {}, no %pre callback after {}: the installer did not start",
                Stamp(*at),
                Span(*waited)
            ),
            Diagnosis::TokenRejected { at, ip, reason } => {
                write!(f, "token rejected from {ip} at {}: {reason}", Stamp(*at))
            }
            Diagnosis::Installing { since, pulled } => write!(
                f,
                "install started at {}: {} MiB in {} files pulled so far",
                Stamp(*since),
                pulled.bytes / (1024 * 1024),
                pulled.files
            ),
            Diagnosis::Overdue { since, waited } => write!(
                f,
                "install started at {}, no %post callback after {}: the install is stuck",
                Stamp(*since),
                Span(*waited)
            ),
            Diagnosis::InProgress { at, last } => {
                write!(f, "{last} at {}; in progress", Stamp(*at))
            }
            Diagnosis::Installed { at } => write!(f, "installed at {}; boots its disk", Stamp(*at)),
            Diagnosis::Failed { at, reason } => write!(
                f,
                "failed at {}: {reason}; it boots its disk until an operator re-arms it",
                Stamp(*at)
            ),
            Diagnosis::Rearmed { at } => {
                write!(f, "re-armed at {}; its next boot installs", Stamp(*at))
            }
            Diagnosis::LocalBoot { at } => write!(f, "sent to its local disk at {}", Stamp(*at)),
            Diagnosis::DiscoveryNotReported { at } => write!(
                f,
                "discovery script served at {}, no report came back",
                Stamp(*at)
            ),
            Diagnosis::Discovered { at } => write!(
                f,
                "reported its facts at {}; adopt it to install it",
                Stamp(*at)
            ),
        }
    }
}

/// The furthest step of a journey, in boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Ignored,
    Offered,
    LoaderSent,
    IpxeOffered,
    Script,
    Image,
    Kickstart,
    Pre,
}

fn step(e: &Event) -> Option<Step> {
    match &e.kind {
        EventKind::DhcpIgnored => Some(Step::Ignored),
        EventKind::DhcpOffer if is_script_offer(e) => Some(Step::IpxeOffered),
        EventKind::DhcpOffer => Some(Step::Offered),
        EventKind::TftpTransfer if e.text("outcome") == Some("complete") => Some(Step::LoaderSent),
        EventKind::LoaderFetch => Some(Step::LoaderSent),
        EventKind::BootScript | EventKind::DiscoveryReport | EventKind::LocalBoot => {
            Some(Step::Script)
        }
        EventKind::InstallerImage => Some(Step::Image),
        EventKind::KickstartFetch => Some(Step::Kickstart),
        EventKind::Callback => Some(Step::Pre),
        _ => None,
    }
}

fn is_script_offer(e: &Event) -> bool {
    e.text("boot_file")
        .is_some_and(|f| f.starts_with("http://") || f.starts_with("https://"))
}

/// A firmware's DHCP request: where a new journey starts.
fn starts_journey(e: &Event) -> bool {
    matches!(e.kind, EventKind::DhcpIgnored)
        || (e.kind == EventKind::DhcpOffer && !is_script_offer(e))
}

/// Where the journey of the host with `host`'s record and `events`
/// (oldest first) stopped, as of `now`.
pub fn diagnose(
    host: Option<&Host>,
    events: &[Event],
    now: SystemTime,
    install_timeout: Duration,
) -> Diagnosis {
    if let Some(h) = host {
        match h.phase {
            Phase::Installed => {
                return Diagnosis::Installed {
                    at: h.install_ended.unwrap_or(h.since),
                };
            }
            Phase::Failed => {
                return Diagnosis::Failed {
                    at: h.since,
                    reason: h
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "no reason reported".into()),
                };
            }
            Phase::Rearmed if !events.iter().any(|e| e.time > h.since && step(e).is_some()) => {
                return Diagnosis::Rearmed { at: h.since };
            }
            _ => {}
        }
    }
    let start = events.iter().rposition(starts_journey).unwrap_or(0);
    let journey = &events[start.min(events.len())..];
    let Some(furthest) = journey
        .iter()
        .filter_map(|e| step(e).map(|s| (s, e)))
        // The latest event of the furthest step: a second kickstart fetch
        // restarts the wait for `%pre`.
        .fold(None::<(Step, &Event)>, |best, (s, e)| match best {
            Some((b, _)) if b > s => best,
            _ => Some((s, e)),
        })
    else {
        return match journey
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::TokenRejected)
        {
            Some(e) => rejected(e),
            None => Diagnosis::NeverSeen,
        };
    };
    let (step, event) = furthest;
    if let Some(e) = journey
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::TokenRejected && e.id > event.id)
    {
        return rejected(e);
    }
    let at = event.time;
    let waited = clock::elapsed(at, now);
    let file = || {
        event
            .text("boot_file")
            .or(event.text("file"))
            .unwrap_or("the loader")
            .to_owned()
    };
    let in_progress = |last: String| Diagnosis::InProgress { at, last };
    match step {
        Step::Ignored => Diagnosis::Ignored {
            at,
            reason: event
                .text("reason")
                .unwrap_or("no reason recorded")
                .to_owned(),
        },
        Step::Offered => {
            let failed = journey.iter().rev().find(|e| {
                e.kind == EventKind::TftpTransfer && e.text("outcome") != Some("complete")
            });
            match failed {
                Some(t) => Diagnosis::TftpFailed {
                    at: t.time,
                    file: t.text("file").unwrap_or("the loader").to_owned(),
                    bytes: t.number("bytes").unwrap_or(0),
                    outcome: t.text("outcome").unwrap_or("error").to_owned(),
                    error_code: t.number("error_code"),
                },
                None if waited < QUICK_STEP => in_progress(format!("offered {}", file())),
                None => Diagnosis::LoaderNotFetched { at, file: file() },
            }
        }
        Step::LoaderSent if waited < QUICK_STEP => in_progress(format!("{} sent", file())),
        Step::LoaderSent => Diagnosis::LoaderSilent { at, file: file() },
        Step::IpxeOffered if waited < QUICK_STEP => {
            in_progress("boot script offered to iPXE".into())
        }
        Step::IpxeOffered => Diagnosis::ScriptNotFetched { at },
        Step::Script => match (&event.kind, event.text("script")) {
            (EventKind::LocalBoot, _) | (_, Some("local-boot")) => Diagnosis::LocalBoot { at },
            (EventKind::DiscoveryReport, _) => Diagnosis::Discovered { at },
            (_, Some("discover")) if waited < QUICK_STEP => {
                in_progress("discovery script served".into())
            }
            (_, Some("discover")) => Diagnosis::DiscoveryNotReported { at },
            _ if waited < SLOW_STEP => in_progress("install script served".into()),
            _ => Diagnosis::KernelNotFetched { at },
        },
        Step::Image if waited < SLOW_STEP => in_progress(format!("{} fetched", file())),
        Step::Image => Diagnosis::KickstartNotFetched { at },
        Step::Kickstart if waited < PRE_CALLBACK => in_progress("kickstart fetched".into()),
        Step::Kickstart => Diagnosis::InstallerNotStarted { at, waited },
        Step::Pre => {
            let since = host.and_then(|h| h.install_started).unwrap_or(at);
            let running = clock::elapsed(since, now);
            if running >= install_timeout {
                Diagnosis::Overdue {
                    since,
                    waited: running,
                }
            } else {
                Diagnosis::Installing {
                    since,
                    pulled: host.map(|h| h.pulled).unwrap_or_default(),
                }
            }
        }
    }
}

fn rejected(e: &Event) -> Diagnosis {
    Diagnosis::TokenRejected {
        at: e.time,
        ip: e.text("ip").unwrap_or("an unknown address").to_owned(),
        reason: e.text("reason").unwrap_or("rejected").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clock::from_ms;
    use crate::host::Host;

    const T0: i64 = 1_741_082_531_000; // 2025-03-04 10:02:11 UTC
    const TIMEOUT: Duration = Duration::from_secs(7200);

    fn mac() -> kickstand_profiles::Mac {
        "52:54:00:00:00:07".parse().expect("mac")
    }

    /// `(seconds after T0, kind, detail)` → events with ids in order.
    fn events(list: &[(i64, EventKind, serde_json::Value)]) -> Vec<Event> {
        list.iter()
            .enumerate()
            .map(|(i, (s, kind, detail))| Event {
                id: i64::try_from(i).unwrap_or(0) + 1,
                time: from_ms(T0 + s * 1000),
                mac: mac(),
                appliance: "a".into(),
                kind: kind.clone(),
                detail: detail.clone(),
            })
            .collect()
    }

    fn host(phase: Phase, since: i64) -> Host {
        let mut h = Host::new(mac(), from_ms(T0 + since * 1000), "a");
        h.phase = phase;
        h
    }

    fn offer(file: &str) -> (EventKind, serde_json::Value) {
        (
            EventKind::DhcpOffer,
            json!({"boot_file": file, "arch": "efi-x64"}),
        )
    }

    /// (name, record, events, now in seconds after T0, expected sentence part)
    type Case = (
        &'static str,
        Option<Host>,
        Vec<(i64, EventKind, serde_json::Value)>,
        i64,
        &'static str,
    );

    #[test]
    fn diagnosis_table() {
        use EventKind as K;
        let o = |s, f: &str| {
            let (k, d) = offer(f);
            (s, k, d)
        };
        let tftp = |s, outcome: &str, bytes: u64, code: Option<u64>| {
            let mut d =
                json!({"file": "ipxe.efi", "bytes": bytes, "outcome": outcome, "ip": "10.0.0.5"});
            if let Some(c) = code {
                d["error_code"] = c.into();
            }
            (s, K::TftpTransfer, d)
        };
        let script_url = "http://10.0.0.1/boot/52:54:00:00:00:07.ipxe";
        let booted = |phase| Some(host(phase, 0));
        #[rustfmt::skip]
        let table: Vec<Case> = vec![
            ("nothing", None, vec![], 0,
             "never seen by ProxyDHCP"),
            ("ignored", booted(Phase::New),
             vec![(0, K::DhcpIgnored, json!({"reason": "unsupported-arch"}))], 5,
             "ProxyDHCP did not answer it at 2025-03-04 10:02:11 UTC: unsupported-arch"),
            ("offer, no tftp", booted(Phase::Discovered), vec![o(0, "ipxe.efi")], 300,
             "offered ipxe.efi at 2025-03-04 10:02:11 UTC, the loader was never fetched over TFTP: the firmware ignored the ProxyDHCP offer"),
            ("offer a moment ago", booted(Phase::Discovered), vec![o(0, "ipxe.efi")], 5,
             "offered ipxe.efi at 2025-03-04 10:02:11 UTC; in progress"),
            ("tftp aborted", booted(Phase::Discovered),
             vec![o(0, "ipxe.efi"), tftp(1, "aborted", 0, Some(8))], 600,
             "TFTP of ipxe.efi aborted by the client after 0 bytes (error 8) at 2025-03-04 10:02:12 UTC and never retried"),
            ("tftp aborted, retried fine", booted(Phase::Booting),
             vec![o(0, "ipxe.efi"), tftp(1, "aborted", 0, Some(8)), tftp(2, "complete", 1_000_000, None)], 600,
             "ipxe.efi sent at 2025-03-04 10:02:13 UTC, iPXE never asked ProxyDHCP for its boot script"),
            ("script offered, not fetched", booted(Phase::Booting),
             vec![o(0, "ipxe.efi"), tftp(1, "complete", 1, None), o(3, script_url)], 600,
             "boot script offered to iPXE at 2025-03-04 10:02:14 UTC, never fetched over HTTP"),
            ("script served, no kernel", booted(Phase::Booting),
             vec![o(0, "ipxe.efi"), tftp(1, "complete", 1, None), o(3, script_url),
                  (4, K::BootScript, json!({"script": "install"}))], 600,
             "install script served at 2025-03-04 10:02:15 UTC, the installer kernel and initrd were never fetched"),
            ("kernel, no kickstart", booted(Phase::Booting),
             vec![(4, K::BootScript, json!({"script": "install"})),
                  (20, K::InstallerImage, json!({"file": "images/pxeboot/initrd.img"}))], 900,
             "installer image fetched at 2025-03-04 10:02:31 UTC, the kickstart was never fetched"),
            ("kickstart, no %pre", booted(Phase::Installing),
             vec![(4, K::BootScript, json!({"script": "install"})), (60, K::KickstartFetch, json!({"ip": "10.0.0.5"}))], 660,
             "kickstart fetched at 2025-03-04 10:03:11 UTC, no %pre callback after 10 min: the installer did not start"),
            ("kickstart a minute ago", booted(Phase::Installing),
             vec![(60, K::KickstartFetch, json!({}))], 120,
             "kickstart fetched at 2025-03-04 10:03:11 UTC; in progress"),
            ("token rejected", booted(Phase::Booting),
             vec![(4, K::BootScript, json!({"script": "install"})),
                  (30, K::TokenRejected, json!({"ip": "10.0.0.99", "reason": "wrong-address"}))], 900,
             "token rejected from 10.0.0.99 at 2025-03-04 10:02:41 UTC: wrong-address"),
            ("rejection then success", booted(Phase::Installing),
             vec![(30, K::TokenRejected, json!({"ip": "10.0.0.99", "reason": "wrong"})),
                  (40, K::KickstartFetch, json!({}))], 60,
             "kickstart fetched at 2025-03-04 10:02:51 UTC; in progress"),
            ("installing", booted(Phase::Installing),
             vec![(60, K::KickstartFetch, json!({})), (70, K::Callback, json!({"stage": "pre"}))], 600,
             "install started at 2025-03-04 10:03:21 UTC: 0 MiB in 0 files pulled so far"),
            ("overdue", booted(Phase::Installing),
             vec![(70, K::Callback, json!({"stage": "pre"}))], 7300,
             "no %post callback after 2 h: the install is stuck"),
            ("local boot of a host without install", booted(Phase::New),
             vec![o(0, "undionly.kpxe"), (4, K::BootScript, json!({"script": "local-boot"}))], 900,
             "sent to its local disk at 2025-03-04 10:02:15 UTC"),
            ("discover, no report", None,
             vec![(4, K::BootScript, json!({"script": "discover"}))], 900,
             "discovery script served at 2025-03-04 10:02:15 UTC, no report came back"),
            ("discovered", None,
             vec![(4, K::BootScript, json!({"script": "discover"})), (6, K::DiscoveryReport, json!({"outcome": "added"}))], 900,
             "reported its facts at 2025-03-04 10:02:17 UTC; adopt it"),
            ("a new boot starts a new journey", booted(Phase::Booting),
             vec![o(0, "ipxe.efi"), tftp(1, "complete", 1, None), o(3, script_url),
                  (4, K::BootScript, json!({"script": "install"})), o(100, "ipxe.efi")], 900,
             "offered ipxe.efi at 2025-03-04 10:03:51 UTC, the loader was never fetched"),
        ];
        for (name, host, list, now, want) in table {
            let got = diagnose(
                host.as_ref(),
                &events(&list),
                from_ms(T0 + now * 1000),
                TIMEOUT,
            )
            .to_string();
            assert!(got.contains(want), "{name}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn the_phase_speaks_first_for_finished_hosts() {
        let list = events(&[(0, EventKind::KickstartFetch, json!({}))]);
        let mut installed = host(Phase::Installed, 600);
        installed.install_ended = Some(from_ms(T0 + 600_000));
        assert_eq!(
            diagnose(Some(&installed), &list, from_ms(T0 + 900_000), TIMEOUT).to_string(),
            "installed at 2025-03-04 10:12:11 UTC; boots its disk"
        );
        let mut failed = host(Phase::Failed, 60);
        failed.last_error = Some("no disk found".into());
        assert_eq!(
            diagnose(Some(&failed), &list, from_ms(T0 + 900_000), TIMEOUT),
            Diagnosis::Failed {
                at: from_ms(T0 + 60_000),
                reason: "no disk found".into()
            }
        );
        let rearmed = host(Phase::Rearmed, 60);
        assert_eq!(
            diagnose(Some(&rearmed), &list, from_ms(T0 + 900_000), TIMEOUT),
            Diagnosis::Rearmed {
                at: from_ms(T0 + 60_000)
            }
        );
    }
}
