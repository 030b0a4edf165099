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
