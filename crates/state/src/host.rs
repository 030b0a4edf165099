//! A host's record and what a transition does to it besides changing its
//! phase: starting and ending the install, expiring the build token,
//! keeping the failure's reason. Pure, like [`crate::next`]; the store
//! applies the result in one transaction.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;
use serde_json::json;

use crate::clock::{self, Span};
use crate::event::EventKind;
use crate::phase::{self, Phase, Refused, Transition};
use crate::token::BuildToken;

/// Everything the store keeps about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub mac: Mac,
    pub phase: Phase,
    /// When it entered its phase.
    pub since: SystemTime,
    /// Its build token, live or expired; `None` until one is minted. Not
    /// for read-only views: show [`Host::token_live`] instead.
    pub token: Option<BuildToken>,
    pub token_issued: Option<SystemTime>,
    pub token_expires: Option<SystemTime>,
    /// The address the token was first used from; no other may use it.
    pub token_ip: Option<IpAddr>,
    /// The address it last came from, to put requests that carry no MAC
    /// (TFTP, repo proxy) on its timeline.
    pub last_ip: Option<IpAddr>,
    pub install_started: Option<SystemTime>,
    pub install_ended: Option<SystemTime>,
    /// Why it failed: `%onerror`'s reason, or the time-out.
    pub last_error: Option<String>,
    /// Bytes and files pulled through the repo proxy since the current
    /// (or last) install started.
    pub pulled: Pulled,
    /// The appliance that last changed the record.
    pub appliance: String,
}

/// Bytes and files pulled during an install.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    pub bytes: u64,
    pub files: u64,
}

impl Pulled {
    pub(crate) fn add(&mut self, other: Pulled) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.files = self.files.saturating_add(other.files);
    }
}

/// What one transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Changed {
        from: Phase,
        to: Phase,
    },
    /// Accepted, but the host stays where it was (an installed host's DHCP
    /// request, a reboot mid-install).
    Unchanged(Phase),
    /// Not applied; recorded as a `transition-refused` event.
    Refused {
        phase: Phase,
        reason: Refused,
    },
}

/// A finished install, for the next install's progress estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    pub(crate) os: String,
    pub(crate) pulled: Pulled,
    pub(crate) duration: Duration,
}

#[derive(Debug)]
pub(crate) struct Effects {
    pub(crate) outcome: Outcome,
    pub(crate) events: Vec<(EventKind, serde_json::Value)>,
    pub(crate) finished: Option<Finished>,
}

impl Host {
    pub(crate) fn new(mac: Mac, now: SystemTime, appliance: &str) -> Host {
        Host {
            mac,
            phase: Phase::New,
            since: now,
            token: None,
            token_issued: None,
            token_expires: None,
            token_ip: None,
            last_ip: None,
            install_started: None,
            install_ended: None,
            last_error: None,
            pulled: Pulled::default(),
            appliance: appliance.to_owned(),
        }
    }

    /// Whether its token is usable at `now`.
    pub fn token_live(&self, now: SystemTime) -> bool {
        self.token.is_some() && self.token_expires.is_some_and(|e| now < e)
    }

    /// Whether an install under way has run past `timeout`.
    pub fn overdue(&self, now: SystemTime, timeout: Duration) -> bool {
        self.phase.is_installing()
            && clock::elapsed(self.install_started.unwrap_or(self.since), now) >= timeout
    }

    fn expire_token(&mut self, now: SystemTime) {
        if self.token.is_some() && self.token_expires.is_none_or(|e| e > now) {
            self.token_expires = Some(now);
        }
    }

    /// Applies `t` at `now`.
    pub(crate) fn apply(&mut self, t: &Transition, now: SystemTime, timeout: Duration) -> Effects {
        let from = self.phase;
        let to = match phase::next(from, t) {
            Ok(to) => to,
            Err(reason) => {
                return Effects {
                    outcome: Outcome::Refused {
                        phase: from,
                        reason,
                    },
                    events: vec![(
                        EventKind::TransitionRefused,
                        json!({"phase": from, "transition": t.name(), "reason": reason.to_string()}),
                    )],
                    finished: None,
                };
            }
        };
        let mut finished = None;
        let mut reason = None;
        if to.is_installing() && !from.is_installing() {
            // A new install: what the last one pulled or said no longer counts.
            self.install_started = Some(now);
            self.install_ended = None;
            self.last_error = None;
            self.pulled = Pulled::default();
        }
        match t {
            Transition::PostCallback { os } => {
                self.install_ended = Some(now);
                self.expire_token(now);
                finished = Some(Finished {
                    os: os.clone(),
                    pulled: self.pulled,
                    duration: clock::elapsed(self.install_started.unwrap_or(self.since), now),
                });
            }
            Transition::OnError { reason: why } => {
                self.install_ended = Some(now);
                self.expire_token(now);
                self.last_error = Some(why.clone());
                reason = Some(why.clone());
            }
            Transition::TimedOut => {
                let why = format!("no installed report within {}", Span(timeout));
                self.install_ended = Some(now);
                self.expire_token(now);
                self.last_error = Some(why.clone());
                reason = Some(why);
            }
            Transition::AddressConflict { first, second } => {
                let why = format!(
                    "two addresses claim {}: possible spoofing ({first}, {second}); re-arm it once the cause is found",
                    self.mac
                );
                self.install_ended = Some(now);
                self.expire_token(now);
                self.last_error = Some(why.clone());
                reason = Some(why);
            }
            Transition::Rearm => self.expire_token(now),
            _ => {}
        }
        // Re-arming a re-armed host is still the operator's act: record it.
        if to == from && *t != Transition::Rearm {
            return Effects {
                outcome: Outcome::Unchanged(from),
                events: Vec::new(),
                finished,
            };
        }
        self.phase = to;
        self.since = now;
        let mut detail = json!({"from": from, "to": to, "transition": t.name()});
        if let Some(reason) = reason {
            detail["reason"] = reason.into();
        }
        Effects {
            outcome: Outcome::Changed { from, to },
            events: vec![(EventKind::PhaseChange, detail)],
            finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn host() -> Host {
        let mac = "52:54:00:00:00:01".parse().expect("mac");
        let mut h = Host::new(mac, at(0), "a");
        h.token = Some(BuildToken::from_stored("t".into()));
        h.token_issued = Some(at(0));
        h.token_expires = Some(at(7200));
        h
    }

    #[test]
    fn an_install_starts_ends_and_expires_its_token() {
        let mut h = host();
        h.pulled = Pulled { bytes: 9, files: 1 };
        let e = h.apply(&Transition::BootFetched, at(10), 2 * HOUR);
        assert_eq!(
            e.outcome,
            Outcome::Changed {
                from: Phase::New,
                to: Phase::Booting
            }
        );
        assert_eq!(h.install_started, Some(at(10)));
        assert_eq!(
            h.pulled,
            Pulled::default(),
            "a new install counts from zero"
        );
        h.apply(&Transition::KickstartFetched, at(20), 2 * HOUR);
        assert_eq!(h.install_started, Some(at(10)), "still the same install");
        h.pulled = Pulled {
            bytes: 1000,
            files: 10,
        };
        let e = h.apply(
            &Transition::PostCallback {
                os: "rocky-9".into(),
            },
            at(610),
            2 * HOUR,
        );
        assert_eq!(h.phase, Phase::Installed);
        assert_eq!(h.token_expires, Some(at(610)));
        assert!(!h.token_live(at(611)));
        assert_eq!(
            e.finished,
            Some(Finished {
                os: "rocky-9".into(),
                pulled: Pulled {
                    bytes: 1000,
                    files: 10
                },
                duration: Duration::from_secs(600),
            })
        );
    }

    #[test]
    fn a_failure_keeps_its_reason_and_a_refusal_changes_nothing() {
        let mut h = host();
        h.apply(&Transition::PreCallback, at(5), HOUR);
        h.apply(
            &Transition::OnError {
                reason: "no disk".into(),
            },
            at(6),
            HOUR,
        );
        assert_eq!(h.phase, Phase::Failed);
        assert_eq!(h.last_error.as_deref(), Some("no disk"));
        let before = h.clone();
        let e = h.apply(&Transition::PostCallback { os: "x".into() }, at(7), HOUR);
        assert_eq!(
            e.outcome,
            Outcome::Refused {
                phase: Phase::Failed,
                reason: Refused::Failed
            }
        );
        assert_eq!(e.events[0].0, EventKind::TransitionRefused);
        assert_eq!(h, before);
    }

    #[test]
    fn overdue_counts_from_the_install_start() {
        let mut h = host();
        assert!(!h.overdue(at(99_999), HOUR), "not installing");
        h.apply(&Transition::BootFetched, at(100), HOUR);
        assert!(!h.overdue(at(3699), HOUR));
        assert!(h.overdue(at(3700), HOUR));
        h.apply(&Transition::TimedOut, at(3700), HOUR);
        assert_eq!(
            h.last_error.as_deref(),
            Some("no installed report within 1 h")
        );
    }
}
