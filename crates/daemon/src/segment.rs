//! One appliance answers a segment: with `server.segment` set, the
//! appliances that share a PostgreSQL and name the same segment elect one
//! ([`kickstand_state::election`]); it answers ProxyDHCP, TFTP and the
//! hosts' HTTP routes and holds `server.address` on the segment's
//! interface, and the others stand by, answering nothing on the segment,
//! until it dies or loses the database.
//!
//! The rule that keeps two from ever answering at once is local: each
//! packet and request asks [`Duty::answering`], which is true only until
//! the instant the last successful renewal was *sent* plus the lease, less
//! a margin, by the monotonic clock. The database expires the lease a full
//! lease after it *ran* that renewal, so an appliance that is frozen, cut
//! off or dead has stopped before a standby can take the row. A frozen
//! process that wakes finds its deadline passed on its first packet.
//!
//! The segment's address moves with the lease, as keepalived's virtual
//! address does: added to the interface (`ip address add`, iproute2 being
//! on every appliance) when this appliance takes the segment, announced by
//! gratuitous ARP so the switch and the machines' ARP caches follow at
//! once, removed when it lets go. An install in progress keeps talking to
//! the same address and finds the new active appliance there, with the
//! host's state and build token from the shared database.
//!
//! A small process of its own holds the address ([`keep_address`],
//! `kickstand keep-address`, started by `serve`): told after each renewal
//! how long it may hold it, it removes the address when that runs out or
//! when `serve` dies (its pipe closes). An address left on a killed
//! appliance would otherwise still answer ARP, and a machine that asks
//! anew could reach the dead appliance's kernel instead of the new active
//! one (seen in the netboot bed: iPXE's connection was reset); and a frozen
//! `serve` cannot remove anything itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kickstand_state::{Election, Round};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::live::lock;

mod address;

use address::Keeper;
pub(crate) use address::{SegmentAddress, keep_address, may_hold_addresses};

/// How long a lease runs unless renewed.
const LEASE: Duration = Duration::from_secs(6);
/// How long before the database would expire it this appliance stops: room
/// for a standby that takes the row the moment it expires.
const MARGIN: Duration = Duration::from_secs(1);
/// How often the holder renews, and a standby tries to take the lease:
/// a dead holder is replaced within `LEASE` + this.
const ROUND_EVERY: Duration = Duration::from_secs(1);
/// A round that takes longer is given up (the lease may lapse meanwhile).
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this appliance answers its segment now, and what it knows of
/// the election, for the status page and `/metrics`.
#[derive(Debug)]
pub(crate) struct Duty {
    origin: Instant,
    /// Nanoseconds after `origin` until which this appliance answers; 0:
    /// not at all; `u64::MAX`: always (no segment).
    until: AtomicU64,
    standing: Mutex<Option<Standing>>,
}

/// The election as this appliance last saw it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Standing {
    pub(crate) segment: String,
    /// `active`, `standby`, or `unknown` while the database cannot be asked.
    pub(crate) role: &'static str,
    /// The active appliance's name, when known.
    pub(crate) active: Option<String>,
    /// The active appliance's tenure: one more at every takeover.
    pub(crate) term: u64,
    /// When that tenure began, in seconds since the epoch.
    pub(crate) since: Option<u64>,
    /// Why the last round failed, while it does.
    pub(crate) error: Option<String>,
}

impl Duty {
    /// No segment: this appliance alone answers, always.
    pub(crate) fn alone() -> Duty {
        Duty {
            origin: Instant::now(),
            until: AtomicU64::new(u64::MAX),
            standing: Mutex::new(None),
        }
    }

    /// A segment's member, answering nothing until it holds the lease.
    fn member(segment: &str) -> Duty {
        Duty {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            standing: Mutex::new(Some(Standing {
                segment: segment.to_owned(),
                role: "unknown",
                active: None,
                term: 0,
                since: None,
                error: None,
            })),
        }
    }

    /// Whether to answer a packet or request now: one atomic read, on
    /// every packet.
    pub(crate) fn answering(&self) -> bool {
        self.nanos(Instant::now()) < self.until.load(Ordering::Acquire)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn answer_until(&self, deadline: Instant) {
        self.until.store(self.nanos(deadline), Ordering::Release);
    }

    fn stop(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// The election as last seen; `None` without a segment.
    pub(crate) fn standing(&self) -> Option<Standing> {
        let mut standing = lock(&self.standing).clone()?;
        // The deadline may have passed since the last round said "active".
        if standing.role == "active" && !self.answering() {
            standing.role = "unknown";
        }
        Some(standing)
    }

    fn see(&self, f: impl FnOnce(&mut Standing)) {
        if let Some(s) = lock(&self.standing).as_mut() {
            f(s);
        }
    }

    /// How long it may answer yet.
    fn left(&self) -> Duration {
        let until = self.until.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.nanos(Instant::now())))
    }
}

/// Starts the election for `segment`: the duty every answer asks, and
/// the task that keeps it.
pub(crate) fn start(
    segment: &str,
    election: Election,
    address: SegmentAddress,
    shutdown: CancellationToken,
) -> (Arc<Duty>, impl Future<Output = ()> + use<>) {
    let duty = Arc::new(Duty::member(segment));
    (
        duty.clone(),
        keep(duty, election, Keeper::new(address), shutdown),
    )
}

/// Rounds of the election until `shutdown`; then the lease is given up so
/// a standby takes over at once.
async fn keep(
    duty: Arc<Duty>,
    election: Election,
    mut keeper: Keeper,
    shutdown: CancellationToken,
) {
    // Started now, it removes what a crash may have left.
    keeper.release();
    let mut held = false;
    loop {
        let sent = Instant::now();
        // A round never outlasts the deadline: it is let go of on time.
        let bound = if held {
            duty.left().min(ROUND_TIMEOUT)
        } else {
            ROUND_TIMEOUT
        };
        let round = tokio::select! {
            r = tokio::time::timeout(bound, election.round(LEASE)) => r,
            () = shutdown.cancelled() => break,
        };
        match round {
            Ok(Ok(Round::Holding { term, since })) => {
                duty.answer_until(sent + LEASE - MARGIN);
                keeper.hold(duty.left());
                let taken = !held;
                held = true;
                duty.see(|s| {
                    if taken {
                        info!(segment = %s.segment, term, "active: this appliance answers the segment");
                    }
                    s.role = "active";
                    s.active = None;
                    s.term = term;
                    s.since = seconds(since);
                    s.error = None;
                });
            }
            Ok(Ok(Round::HeldBy {
                appliance,
                term,
                since,
                expires_in,
            })) => {
                if held {
                    held = false;
                    duty.stop();
                    keeper.release();
                    warn!(active = %appliance, term, "lost the segment to another appliance: standing by");
                }
                duty.see(|s| {
                    if s.role != "standby" || s.active.as_deref() != Some(&appliance) {
                        info!(segment = %s.segment, active = %appliance, term, expires_in = ?expires_in, "standing by");
                    }
                    s.role = "standby";
                    s.active = Some(appliance);
                    s.term = term;
                    s.since = seconds(since);
                    s.error = None;
                });
            }
            Ok(Err(e)) => failed(&duty, &e.to_string()),
            Err(_) => failed(&duty, "the state database did not answer in time"),
        }
        let next = if held {
            ROUND_EVERY.min(duty.left())
        } else {
            ROUND_EVERY
        };
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = shutdown.cancelled() => break,
        }
        if held && !duty.answering() {
            held = false;
            keeper.release();
            warn!(
                "could not renew the segment's lease in time: stopped answering and gave up its address"
            );
            duty.see(|s| s.role = "unknown");
        }
    }
    if held {
        duty.stop();
        keeper.release();
        match tokio::time::timeout(ROUND_TIMEOUT, election.resign()).await {
            Ok(Ok(())) => info!("gave up the segment: a standby takes over now"),
            _ => warn!(
                "could not give up the segment's lease: a standby takes over when it runs out"
            ),
        }
    }
}

fn failed(duty: &Duty, why: &str) {
    duty.see(|s| {
        if s.error.is_none() {
            warn!(segment = %s.segment, error = %why, "cannot reach the state database for the segment's election");
        }
        s.error = Some(why.to_owned());
        if s.role == "standby" {
            s.role = "unknown";
        }
    });
}

fn seconds(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duty_answers_until_its_deadline_only() {
        assert!(Duty::alone().answering());
        let duty = Duty::member("rack-a");
        assert!(
            !duty.answering(),
            "a member answers nothing before it holds the lease"
        );
        duty.answer_until(Instant::now() + Duration::from_secs(60));
        assert!(duty.answering());
        duty.answer_until(Instant::now());
        assert!(!duty.answering(), "past the deadline");
        duty.answer_until(Instant::now() + Duration::from_secs(60));
        duty.stop();
        assert!(!duty.answering());
    }
}
