//! Records as the database holds them: the columns of each table, the row
//! ↔ record conversions, and the reads the store makes at open and when
//! another appliance changed something. Written once for both backends.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;

use crate::StateError;
use crate::audit::{AuditEntry, OperatorAction};
use crate::clock::{self, to_ms};
use crate::db::{Row, Tx, Value, params};
use crate::discovery::Discovered;
use crate::event::{Class, Event, EventKind};
use crate::host::{Host, Pulled};
use crate::phase::Phase;
use crate::store::InstallSize;
use crate::token::BuildToken;

pub(crate) const HOST_COLUMNS: &str = "mac, phase, since, token, token_issued, token_expires, \
     token_ip, last_ip, install_started, install_ended, last_error, pulled_bytes, pulled_files, \
     appliance";

pub(crate) const SAVE_HOST: &str = "INSERT INTO hosts (mac, phase, since, token, token_issued, \
     token_expires, token_ip, last_ip, install_started, install_ended, last_error, pulled_bytes, \
     pulled_files, appliance) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (mac) DO UPDATE SET phase = excluded.phase, since = excluded.since, \
     token = excluded.token, token_issued = excluded.token_issued, \
     token_expires = excluded.token_expires, token_ip = excluded.token_ip, \
     last_ip = excluded.last_ip, install_started = excluded.install_started, \
     install_ended = excluded.install_ended, last_error = excluded.last_error, \
     pulled_bytes = excluded.pulled_bytes, pulled_files = excluded.pulled_files, \
     appliance = excluded.appliance";

pub(crate) const EVENT_COLUMNS: &str = "id, time, mac, appliance, kind, detail";

const DISCOVERED_COLUMNS: &str = "mac, first_seen, last_seen, ip, facts, appliance";

fn time(ms: Option<i64>) -> Option<SystemTime> {
    ms.map(clock::from_ms)
}

pub(crate) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn host_from(r: &Row) -> Result<Host, StateError> {
    let mac = r
        .parsed::<Mac>(0)?
        .ok_or_else(|| StateError::Corrupt("host without a MAC".into()))?;
    let phase = r
        .text(1)?
        .parse::<Phase>()
        .map_err(|e| StateError::Corrupt(format!("host {mac}: {e}")))?;
    Ok(Host {
        mac,
        phase,
        since: clock::from_ms(r.int(2)?),
        token: r
            .opt_text(3)?
            .map(|t| BuildToken::from_stored(t.to_owned())),
        token_issued: time(r.opt_int(4)?),
        token_expires: time(r.opt_int(5)?),
        token_ip: r.parsed(6)?,
        last_ip: r.parsed(7)?,
        install_started: time(r.opt_int(8)?),
        install_ended: time(r.opt_int(9)?),
        last_error: r.opt_text(10)?.map(str::to_owned),
        pulled: Pulled {
            bytes: count(r.int(11)?),
            files: count(r.int(12)?),
        },
        appliance: r.text(13)?.to_owned(),
    })
}

pub(crate) fn host_params(h: &Host) -> Vec<Value> {
    let ms = |t: Option<SystemTime>| t.map(to_ms);
    params![
        h.mac.to_string(),
        h.phase.as_str(),
        to_ms(h.since),
        h.token.as_ref().map(|t| t.as_str().to_owned()),
        ms(h.token_issued),
        ms(h.token_expires),
        h.token_ip.map(|ip| ip.to_string()),
        h.last_ip.map(|ip| ip.to_string()),
        ms(h.install_started),
        ms(h.install_ended),
        h.last_error.clone(),
        h.pulled.bytes,
        h.pulled.files,
        h.appliance.clone(),
    ]
}

pub(crate) fn event_from(r: &Row) -> Result<Event, StateError> {
    let detail = r.text(5)?;
    Ok(Event {
        id: r.int(0)?,
        time: clock::from_ms(r.int(1)?),
        mac: r
            .parsed(2)?
            .ok_or_else(|| StateError::Corrupt("event without a MAC".into()))?,
        appliance: r.text(3)?.to_owned(),
        kind: EventKind::parse(r.text(4)?),
        detail: serde_json::from_str(detail)
            .map_err(|e| StateError::Corrupt(format!("event detail {detail:?}: {e}")))?,
    })
}

fn discovered_from(r: &Row) -> Result<Discovered, StateError> {
    let facts = r.text(4)?;
    Ok(Discovered {
        mac: r
            .parsed(0)?
            .ok_or_else(|| StateError::Corrupt("discovered without a MAC".into()))?,
        first_seen: clock::from_ms(r.int(1)?),
        last_seen: clock::from_ms(r.int(2)?),
        ip: r.parsed(3)?,
        facts: serde_json::from_str(facts)
            .map_err(|e| StateError::Corrupt(format!("facts {facts:?}: {e}")))?,
        appliance: r.text(5)?.to_owned(),
    })
}

pub(crate) fn discovered_params(d: &Discovered) -> Result<Vec<Value>, StateError> {
    let facts = serde_json::to_string(&d.facts)
        .map_err(|e| StateError::Corrupt(format!("facts do not serialise: {e}")))?;
    Ok(params![
        d.mac.to_string(),
        to_ms(d.first_seen),
        to_ms(d.last_seen),
        d.ip.map(|ip| ip.to_string()),
        facts,
        d.appliance.clone()
    ])
}

pub(crate) const UPSERT_DISCOVERED: &str = "INSERT INTO discovered (mac, first_seen, last_seen, \
     ip, facts, appliance) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (mac) DO UPDATE SET \
     last_seen = excluded.last_seen, ip = excluded.ip, facts = excluded.facts, \
     appliance = excluded.appliance";

pub(crate) fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

// ---- reads -----------------------------------------------------------------

pub(crate) async fn host(
    tx: &mut Tx<'_>,
    mac: Mac,
    lock: bool,
) -> Result<Option<Host>, StateError> {
    let lock = if lock { tx.dialect().for_update() } else { "" };
    tx.query_opt(
        &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE mac = $1{lock}"),
        params![mac.to_string()],
    )
    .await?
    .as_ref()
    .map(host_from)
    .transpose()
}

pub(crate) async fn hosts(tx: &mut Tx<'_>) -> Result<Vec<Host>, StateError> {
    tx.query(
        &format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY mac"),
        params![],
    )
    .await?
    .iter()
    .map(host_from)
    .collect()
}

/// The newest `limit` events of `mac`, oldest first; `noise` picks the
/// noise class, or everything else.
pub(crate) async fn tail(
    tx: &mut Tx<'_>,
    mac: Mac,
    noise: bool,
    limit: usize,
) -> Result<Vec<Event>, StateError> {
    let op = if noise { "=" } else { "<>" };
    newest(
        tx,
        &format!("mac = $1 AND class {op} $2"),
        params![mac.to_string(), Class::Noise.code(), limit as u64],
    )
    .await
}

/// The newest events matching `filter` (its parameters first, the limit
/// last in `params`), oldest first.
async fn newest(
    tx: &mut Tx<'_>,
    filter: &str,
    params: Vec<Value>,
) -> Result<Vec<Event>, StateError> {
    let limit = params.len();
    let mut events = tx
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE {filter} ORDER BY id DESC LIMIT ${limit}"
            ),
            params,
        )
        .await?
        .iter()
        .map(event_from)
        .collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// A host's tail in both classes, as the book keeps it.
pub(crate) async fn tails(tx: &mut Tx<'_>, mac: Mac) -> Result<Vec<Event>, StateError> {
    let mut events = tail(tx, mac, false, crate::book::TAIL).await?;
    events.extend(tail(tx, mac, true, crate::book::NOISE_TAIL).await?);
    Ok(events)
}

pub(crate) async fn timeline(
    tx: &mut Tx<'_>,
    mac: Mac,
    limit: u64,
) -> Result<Vec<Event>, StateError> {
    let mut events = tx
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE mac = $1 ORDER BY id DESC LIMIT $2"),
            params![mac.to_string(), limit],
        )
        .await?
        .iter()
        .map(event_from)
        .collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// The newest `limit` rows of the audit log, newest first.
pub(crate) async fn audit(tx: &mut Tx<'_>, limit: u64) -> Result<Vec<AuditEntry>, StateError> {
    tx.query(
        "SELECT id, time, appliance, peer, token_id, action, target, error \
         FROM audit ORDER BY id DESC LIMIT $1",
        params![limit],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(AuditEntry {
            id: r.int(0)?,
            time: clock::from_ms(r.int(1)?),
            appliance: r.text(2)?.to_owned(),
            action: OperatorAction {
                peer: r
                    .parsed(3)?
                    .ok_or_else(|| StateError::Corrupt("audit row without an address".into()))?,
                token_id: r.opt_text(4)?.map(str::to_owned),
                action: r.text(5)?.to_owned(),
                target: r.text(6)?.to_owned(),
                error: r.opt_text(7)?.map(str::to_owned),
            },
        })
    })
    .collect()
}

pub(crate) async fn discovered(tx: &mut Tx<'_>) -> Result<Vec<Discovered>, StateError> {
    tx.query(
        &format!("SELECT {DISCOVERED_COLUMNS} FROM discovered ORDER BY last_seen DESC, mac"),
        params![],
    )
    .await?
    .iter()
    .map(discovered_from)
    .collect()
}

/// The last completed install of every OS.
pub(crate) async fn installs(tx: &mut Tx<'_>) -> Result<Vec<(String, InstallSize)>, StateError> {
    tx.query(
        "SELECT os, bytes, files, duration_ms FROM installs WHERE id IN \
         (SELECT max(id) FROM installs GROUP BY os)",
        params![],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.text(0)?.to_owned(),
            InstallSize {
                bytes: count(r.int(1)?),
                files: count(r.int(2)?),
                duration: Duration::from_millis(count(r.int(3)?)),
            },
        ))
    })
    .collect()
}

pub(crate) async fn max_event_id(tx: &mut Tx<'_>) -> Result<i64, StateError> {
    Ok(tx
        .query_opt("SELECT max(id) FROM events", params![])
        .await?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

/// Events of `mac` by class, to know when its timeline needs pruning.
pub(crate) async fn class_counts(tx: &mut Tx<'_>, mac: Mac) -> Result<[u64; 3], StateError> {
    let mut counts = [0; 3];
    for r in tx
        .query(
            "SELECT class, count(*) FROM events WHERE mac = $1 GROUP BY class",
            params![mac.to_string()],
        )
        .await?
    {
        if let Some(n) = usize::try_from(r.int(0)?)
            .ok()
            .and_then(|c| counts.get_mut(c))
        {
            *n = count(r.int(1)?);
        }
    }
    Ok(counts)
}
