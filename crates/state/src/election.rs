//! One active appliance per segment, elected through the PostgreSQL the
//! appliances share: a lease row per segment, which the holder renews and
//! anyone may take once it has expired, by the database's clock.
//!
//! A lease row rather than a session's advisory lock: an advisory lock is
//! held as long as the server thinks the session lives, and a network cut
//! leaves a session alive on the server until TCP keepalive gives up
//! (minutes), so the standby could not take over within seconds. A row with
//! an expiry is decided by one clock, the database's, and needs no other
//! protocol between the appliances.
//!
//! A renewal names its holder (the appliance's name and a number drawn at
//! start, so a restart is a new holder) and takes only its own unexpired
//! row or an expired one: an appliance that lost the lease (frozen, cut
//! off) cannot renew it once another has taken it. Each change of holder
//! adds one to the row's `term`, which says in logs, on the status page
//! and in `/metrics` which tenure an answer belonged to.
//!
//! The caller keeps the safety rule (`kickstand serve`'s segment duty): it
//! answers only until the moment it *sent* its last successful renewal plus
//! the lease, less a margin, by its own monotonic clock. The row expires a
//! lease after the database *ran* that renewal, which is later, so the old
//! holder has stopped before anyone can take the row.

use std::time::{Duration, SystemTime};

use crate::StateError;
use crate::clock::from_ms;
use crate::db::{Db, params};

/// What one round of the election found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// This appliance holds the lease, renewed (or just taken) now.
    Holding {
        /// The tenure: one more at every change of holder.
        term: u64,
        /// When this tenure began, by the database's clock.
        since: SystemTime,
    },
    /// Another appliance holds it.
    HeldBy {
        /// Its name (`state.appliance`).
        appliance: String,
        term: u64,
        since: SystemTime,
        /// How long until its lease runs out unless renewed.
        expires_in: Duration,
    },
}

/// This appliance's side of a segment's election, on a connection of its
/// own: a renewal never waits behind the writer's batch.
#[derive(Debug)]
pub struct Election {
    db: Db,
    segment: String,
    /// Unique to this process: a restart is a new holder, and two
    /// appliances given the same name by mistake are still two.
    holder: String,
    appliance: String,
}

/// Takes the segment's row when it is free or expired, renews it when this
/// holder has it; returns the tenure when it holds it. The database's
/// clock decides expiry, so no two appliances' clocks need agree.
const TAKE: &str = "
    WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
    INSERT INTO segments AS s (segment, holder, appliance, term, since, expires)
    SELECT $1, $2, $3, 1, now.ms, now.ms + $4 FROM now
    ON CONFLICT (segment) DO UPDATE SET
        holder = excluded.holder,
        appliance = excluded.appliance,
        term = CASE WHEN s.holder = excluded.holder AND s.expires > excluded.since
                    THEN s.term ELSE s.term + 1 END,
        since = CASE WHEN s.holder = excluded.holder AND s.expires > excluded.since
                     THEN s.since ELSE excluded.since END,
        expires = excluded.expires
    WHERE s.expires <= excluded.since
       OR (s.holder = excluded.holder AND s.expires > excluded.since)
    RETURNING term, since";

const HOLDER: &str = "
    SELECT appliance, term, since,
           expires - (extract(epoch FROM clock_timestamp()) * 1000)::bigint
    FROM segments WHERE segment = $1";

impl Election {
    pub(crate) fn new(db: Db, segment: &str, holder: String, appliance: &str) -> Election {
        Election {
            db,
            segment: segment.to_owned(),
            holder,
            appliance: appliance.to_owned(),
        }
    }

    /// Takes or renews the lease for `lease`, or learns who holds it.
    pub async fn round(&self, lease: Duration) -> Result<Round, StateError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.db.begin().await?;
        let taken = tx
            .query_opt(
                TAKE,
                params![
                    self.segment.as_str(),
                    self.holder.as_str(),
                    self.appliance.as_str(),
                    lease_ms
                ],
            )
            .await?;
        let round = match taken {
            Some(row) => Round::Holding {
                term: unsigned(row.int(0)?),
                since: from_ms(row.int(1)?),
            },
            None => {
                let row = tx
                    .query_opt(HOLDER, params![self.segment.as_str()])
                    .await?
                    .ok_or_else(|| StateError::Corrupt("segment row vanished".into()))?;
                Round::HeldBy {
                    appliance: row.text(0)?.to_owned(),
                    term: unsigned(row.int(1)?),
                    since: from_ms(row.int(2)?),
                    expires_in: Duration::from_millis(unsigned(row.int(3)?)),
                }
            }
        };
        tx.commit().await?;
        Ok(round)
    }

    /// Gives the lease up (at shutdown): a standby takes over at its next
    /// round instead of after the lease runs out. Only this holder's row.
    pub async fn resign(&self) -> Result<(), StateError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE segments SET expires = 0 WHERE segment = $1 AND holder = $2",
            params![self.segment.as_str(), self.holder.as_str()],
        )
        .await?;
        tx.commit().await
    }
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
