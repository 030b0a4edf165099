//! The one-time import of the JSON store this crate replaced: a
//! `hosts.json` of `{"<mac>": {"phase": "new|installing|installed",
//! "since": <unix seconds>}}` found in the state directory. The store
//! imports it at open, in one transaction that skips MACs it already has
//! (so an import interrupted before the rename below and run again adds
//! nothing twice), then renames it `hosts.json.imported`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kickstand_profiles::Mac;
use serde::Deserialize;

use crate::StateError;
use crate::clock::to_ms;
use crate::db::{Db, params};
use crate::event::EventKind;
use crate::phase::Phase;

pub(crate) const FILE: &str = "hosts.json";
pub(crate) const DONE: &str = "hosts.json.imported";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Old {
    phase: String,
    since: u64,
}

/// One host of the old file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Imported {
    pub(crate) mac: Mac,
    pub(crate) phase: Phase,
    pub(crate) since: SystemTime,
}

pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Imported>, StateError> {
    let bad = |reason: String| StateError::Import {
        path: path.to_owned(),
        reason,
    };
    let old: BTreeMap<String, Old> =
        serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    old.into_iter()
        .map(|(mac, old)| {
            let mac: Mac = mac.parse().map_err(|e| bad(format!("{mac:?}: {e}")))?;
            let phase = match old.phase.as_str() {
                "new" | "installing" | "installed" => old
                    .phase
                    .parse()
                    .map_err(|e: crate::phase::UnknownPhase| bad(format!("{mac}: {e}")))?,
                other => return Err(bad(format!("{mac}: unknown phase {other:?}"))),
            };
            Ok(Imported {
                mac,
                phase,
                since: UNIX_EPOCH + Duration::from_secs(old.since),
            })
        })
        .collect()
}

/// Imports `dir/hosts.json` into `db` if it is there, then renames it.
pub(crate) async fn import(
    db: &Db,
    dir: &Path,
    appliance: &str,
    now: SystemTime,
) -> Result<(), StateError> {
    let path = dir.join(FILE);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let hosts = parse(&path, &bytes)?;
    let mut tx = db.begin().await?;
    let mut added = 0;
    for h in &hosts {
        let since = to_ms(h.since);
        let started = (h.phase == Phase::Installing).then_some(since);
        let ended = (h.phase == Phase::Installed).then_some(since);
        let n = tx
            .execute(
                "INSERT INTO hosts (mac, phase, since, install_started, install_ended, appliance) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (mac) DO NOTHING",
                params![
                    h.mac.to_string(),
                    h.phase.as_str(),
                    since,
                    started,
                    ended,
                    appliance
                ],
            )
            .await?;
        if n > 0 {
            added += 1;
            let detail = serde_json::json!({"from": null, "to": h.phase, "transition": "import"});
            let kind = EventKind::PhaseChange;
            tx.execute(
                "INSERT INTO events (time, mac, appliance, kind, detail, class) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                params![
                    to_ms(now),
                    h.mac.to_string(),
                    appliance,
                    kind.as_str(),
                    detail.to_string(),
                    kind.class().code()
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    let done = dir.join(DONE);
    tokio::fs::rename(&path, &done)
        .await
        .map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
    tracing::info!(
        "imported {added} of {} hosts from {}; renamed it {}",
        hosts.len(),
        path.display(),
        done.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_old_format_and_names_what_is_wrong() {
        let path = Path::new("hosts.json");
        let got = parse(
            path,
            br#"{"52:54:00:00:00:01": {"phase": "installed", "since": 1700000000},
                 "52:54:00:00:00:02": {"phase": "installing", "since": 5}}"#,
        );
        let got = got.expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].phase, Phase::Installed);
        assert_eq!(got[1].since, UNIX_EPOCH + Duration::from_secs(5));
        let err = parse(
            path,
            br#"{"52:54:00:00:00:01": {"phase": "done", "since": 1}}"#,
        )
        .expect_err("unknown phase");
        assert!(err.to_string().contains("\"done\""), "{err}");
        let err = parse(path, br#"{"nope": {"phase": "new", "since": 1}}"#).expect_err("bad mac");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
