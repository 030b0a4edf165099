//! Per-host install state: what makes "boot once" work. A host that reported
//! `installed` from its kickstart's `%post` boots its local disk from then
//! on, until an operator re-arms it.
//!
//! State is keyed by MAC and kept in one small JSON file, rewritten whole
//! through a temporary file and a rename so a crash never leaves half a
//! file. It knows nothing of profiles: a host removed from the profiles
//! keeps its record, harmlessly.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Never seen installing, or re-armed: its next PXE boot installs.
    #[default]
    New,
    /// Its kickstart's `%pre` reported in.
    Installing,
    /// Its `%post` reported success: it boots from its disk.
    Installed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub phase: Phase,
    /// Seconds since the Unix epoch of the last change.
    pub since: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The store. Keys are MACs in their canonical lowercase, colon form.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    hosts: Mutex<BTreeMap<String, Record>>,
}

impl StateStore {
    /// Opens (creating the directory if needed) `dir/hosts.json`.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let path = dir.join("hosts.json");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let hosts = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(StateStore {
            path,
            hosts: Mutex::new(hosts),
        })
    }

    pub fn get(&self, mac: &str) -> Record {
        self.lock().get(mac).copied().unwrap_or(Record {
            phase: Phase::New,
            since: 0,
        })
    }

    pub fn all(&self) -> BTreeMap<String, Record> {
        self.lock().clone()
    }

    /// Records a new phase and persists the whole table before returning, so
    /// an acknowledged `installed` survives a crash.
    pub fn set(&self, mac: &str, phase: Phase) -> Result<Record, StateError> {
        let mut hosts = self.lock();
        let record = Record {
            phase,
            since: now(),
        };
        let previous = hosts.insert(mac.to_owned(), record);
        if let Err(e) = self.persist(&hosts) {
            // Keep memory and disk in agreement: undo what could not be saved.
            match previous {
                Some(p) => hosts.insert(mac.to_owned(), p),
                None => hosts.remove(mac),
            };
            return Err(e);
        }
        Ok(record)
    }

    fn persist(&self, hosts: &BTreeMap<String, Record>) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(hosts).map_err(|e| io(e.into()))?;
        tmp.write_all(&json).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Record>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is one insert), so a poisoned lock is still usable.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_defaults_to_new() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|source| StateError::Io {
            path: "tmp".into(),
            source,
        })?;
        let store = StateStore::open(dir.path())?;
        assert_eq!(store.get("52:54:00:00:00:01").phase, Phase::New);
        store.set("52:54:00:00:00:01", Phase::Installed)?;
        let reopened = StateStore::open(dir.path())?;
        assert_eq!(reopened.get("52:54:00:00:00:01").phase, Phase::Installed);
        assert_eq!(reopened.all().len(), 1);
        Ok(())
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hosts.json"), b"{ not json").expect("write");
        let err = StateStore::open(dir.path()).expect_err("corrupt file must not load");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
