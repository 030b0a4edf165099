//! What a write does to one host's record, as data: a [`HostOp`] is
//! applied to the in-memory record the moment it happens (the reply reads
//! the result), and applied again by the writer to the database row, under
//! that row's lock, when the batch it belongs to commits. Applying the same
//! op to the same record gives the same result, so with SQLite the two
//! copies agree by construction; with a PostgreSQL that several appliances
//! share, the database copy is the one another appliance's change may have
//! moved, and replaying the op there (rather than writing the whole
//! in-memory row over it) loses neither appliance's change.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::clock::to_ms;
use crate::event::EventKind;
use crate::host::{Effects, Host, Outcome, Pulled};
use crate::phase::Transition;
use crate::token::BuildToken;

/// One change to a host's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostOp {
    /// A life-cycle transition; `ip`, when known, becomes its last address.
    Transition { t: Transition, ip: Option<IpAddr> },
    /// A build token minted for the install under way. Replayed on a record
    /// that already holds a live token (another appliance minted one a
    /// moment earlier), it changes nothing: that token stays.
    Mint {
        token: BuildToken,
        expires: SystemTime,
    },
    /// The token's first accepted use, from `ip`: no other address may use
    /// it from now on.
    Bind { token: BuildToken, ip: IpAddr },
    /// Nothing but the record's existence: a host's first event.
    Touch,
    /// Seen at `ip` (a request that carried its live token from there).
    Seen { ip: IpAddr },
    /// Its installer took `ip` on its install VLAN: a token bound to its
    /// boot network's address moves there ([`crate::Claimed::Moved`]).
    Move { ip: IpAddr },
    /// Bytes and files pulled through the repo proxy.
    Pulled(Pulled),
}

/// What [`apply`] did: the transition's outcome, and whether the row must
/// be written at all.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) effects: Effects,
    pub(crate) save: bool,
}

/// Applies `op` at `now` to `host`.
pub(crate) fn apply(host: &mut Host, op: &HostOp, now: SystemTime, timeout: Duration) -> Applied {
    let unchanged = |phase, save| Applied {
        effects: Effects {
            outcome: Outcome::Unchanged(phase),
            events: Vec::new(),
            finished: None,
        },
        save,
    };
    match op {
        HostOp::Transition { t, ip } => {
            let moved = ip.is_some_and(|ip| host.last_ip != Some(ip));
            if let Some(ip) = ip {
                host.last_ip = Some(*ip);
            }
            let effects = host.apply(t, now, timeout);
            let save = moved || !matches!(effects.outcome, Outcome::Unchanged(_));
            Applied { effects, save }
        }
        HostOp::Mint { token, expires } => {
            if !host.phase.is_build_mode() || host.token_live(now) {
                return unchanged(host.phase, false);
            }
            host.token = Some(token.clone());
            host.token_issued = Some(now);
            host.token_expires = Some(*expires);
            host.token_ip = None;
            Applied {
                effects: Effects {
                    outcome: Outcome::Unchanged(host.phase),
                    events: vec![(EventKind::TokenIssued, json!({"expires": to_ms(*expires)}))],
                    finished: None,
                },
                save: true,
            }
        }
        HostOp::Bind { token, ip } => {
            let ours = host.token.as_ref() == Some(token);
            if !ours || host.token_ip.is_some() {
                return unchanged(host.phase, false);
            }
            host.token_ip = Some(*ip);
            host.last_ip = Some(*ip);
            Applied {
                effects: Effects {
                    outcome: Outcome::Unchanged(host.phase),
                    events: vec![(EventKind::TokenBound, json!({"ip": ip.to_string()}))],
                    finished: None,
                },
                save: true,
            }
        }
        HostOp::Touch => unchanged(host.phase, false),
        HostOp::Move { ip } => {
            let moved = host.last_ip != Some(*ip);
            host.last_ip = Some(*ip);
            let Some(from) = host.token_ip.filter(|_| host.token_live(now)) else {
                return unchanged(host.phase, moved);
            };
            host.token_ip = Some(*ip);
            Applied {
                effects: Effects {
                    outcome: Outcome::Unchanged(host.phase),
                    events: vec![(
                        EventKind::TokenBound,
                        json!({"ip": ip.to_string(), "from": from.to_string()}),
                    )],
                    finished: None,
                },
                save: true,
            }
        }
        HostOp::Seen { ip } => {
            let moved = host.last_ip != Some(*ip);
            host.last_ip = Some(*ip);
            unchanged(host.phase, moved)
        }
        HostOp::Pulled(n) => {
            host.pulled.add(*n);
            unchanged(host.phase, *n != Pulled::default())
        }
    }
}

/// What a boot that installs needs of the host's build token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenNeed {
    /// Installed or failed: no install, no token.
    NotBuilding,
    /// Its install ran past the time-out: it fails now.
    Overdue,
    /// It holds this live token: every rendering embeds the same one.
    Live(BuildToken),
    /// It needs a new one.
    Mint,
}

/// What `host` (`None`: never seen, so new) needs for an install at `now`.
pub(crate) fn token_need(host: Option<&Host>, now: SystemTime, timeout: Duration) -> TokenNeed {
    let Some(host) = host else {
        return TokenNeed::Mint;
    };
    if !host.phase.is_build_mode() {
        TokenNeed::NotBuilding
    } else if host.overdue(now, timeout) {
        TokenNeed::Overdue
    } else if let Some(token) = host.token.as_ref().filter(|_| host.token_live(now)) {
        TokenNeed::Live(token.clone())
    } else {
        TokenNeed::Mint
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
        Host::new("52:54:00:00:00:01".parse().expect("mac"), at(0), "a")
    }

    #[test]
    fn a_mint_replayed_over_a_live_token_keeps_that_token() {
        let mut h = host();
        let first = BuildToken::from_stored("first".into());
        let a = apply(
            &mut h,
            &HostOp::Mint {
                token: first.clone(),
                expires: at(100),
            },
            at(1),
            HOUR,
        );
        assert!(a.save);
        assert_eq!(a.effects.events[0].0, EventKind::TokenIssued);
        let again = apply(
            &mut h,
            &HostOp::Mint {
                token: BuildToken::from_stored("second".into()),
                expires: at(200),
            },
            at(2),
            HOUR,
        );
        assert!(!again.save);
        assert_eq!(h.token, Some(first));
        assert_eq!(
            token_need(Some(&h), at(3), HOUR),
            TokenNeed::Live(h.token.clone().expect("token"))
        );
        assert_eq!(token_need(Some(&h), at(101), HOUR), TokenNeed::Mint);
    }

    #[test]
    fn a_bind_takes_only_the_first_address_of_its_own_token() {
        let mut h = host();
        let token = BuildToken::from_stored("t".into());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let _ = apply(
            &mut h,
            &HostOp::Mint {
                token: token.clone(),
                expires: at(100),
            },
            at(1),
            HOUR,
        );
        let stale = apply(
            &mut h,
            &HostOp::Bind {
                token: BuildToken::from_stored("old".into()),
                ip: ip("10.0.0.9"),
            },
            at(2),
            HOUR,
        );
        assert!(!stale.save, "a replaced token binds nothing");
        assert!(
            apply(
                &mut h,
                &HostOp::Bind {
                    token: token.clone(),
                    ip: ip("10.0.0.5")
                },
                at(3),
                HOUR
            )
            .save
        );
        assert!(
            !apply(
                &mut h,
                &HostOp::Bind {
                    token,
                    ip: ip("10.0.0.6")
                },
                at(4),
                HOUR
            )
            .save
        );
        assert_eq!(h.token_ip, Some(ip("10.0.0.5")));
    }

    #[test]
    fn an_unchanged_transition_is_not_written_unless_the_address_moved() {
        let mut h = host();
        let seen = HostOp::Transition {
            t: Transition::SeenByDhcp,
            ip: None,
        };
        assert!(apply(&mut h, &seen, at(1), HOUR).save, "new → discovered");
        assert!(!apply(&mut h, &seen, at(2), HOUR).save);
        let from = HostOp::Transition {
            t: Transition::SeenByDhcp,
            ip: Some("10.0.0.7".parse().expect("ip")),
        };
        assert!(apply(&mut h, &from, at(3), HOUR).save);
        assert!(!apply(&mut h, &from, at(4), HOUR).save);
    }

    /// The installer's address on its install VLAN takes over a bound
    /// token (an event says from where); before the token is bound it is
    /// only the host's last address.
    #[test]
    fn a_move_carries_a_bound_token_to_the_install_vlan() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut h = host();
        let moved = apply(
            &mut h,
            &HostOp::Move {
                ip: ip("10.0.20.5"),
            },
            at(1),
            HOUR,
        );
        assert!(moved.effects.events.is_empty());
        assert_eq!((h.token_ip, h.last_ip), (None, Some(ip("10.0.20.5"))));

        let token = BuildToken::from_stored("t".into());
        let expires = at(100);
        apply(
            &mut h,
            &HostOp::Mint {
                token: token.clone(),
                expires,
            },
            at(2),
            HOUR,
        );
        apply(
            &mut h,
            &HostOp::Bind {
                token,
                ip: ip("10.0.0.5"),
            },
            at(3),
            HOUR,
        );
        let moved = apply(
            &mut h,
            &HostOp::Move {
                ip: ip("10.0.20.6"),
            },
            at(4),
            HOUR,
        );
        assert!(moved.save);
        assert_eq!(h.token_ip, Some(ip("10.0.20.6")));
        assert_eq!(h.last_ip, Some(ip("10.0.20.6")));
        assert_eq!(
            moved.effects.events,
            [(
                EventKind::TokenBound,
                json!({"ip": "10.0.20.6", "from": "10.0.0.5"})
            )]
        );
    }
}
