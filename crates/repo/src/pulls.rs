//! What an install actually pulled through the proxy, for `cache warm <os>
//! --like <host>`: while a client installs, every file it is served is
//! noted under its name (the daemon passes the host's MAC); when it reports
//! its install done, the list is written to `learned/<os>/<client>.list` in
//! the cache directory. The cache directory, not the host state store: the
//! list is knowledge about the cache's contents, useless without them, and
//! removing the cache directory should take it along. One text file per
//! (OS, client), one `mirror/path` per line, replaced by rename.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use crate::path::RepoPath;

/// A flood of clients (or of paths) empties the table instead of growing it:
/// a rack install pulls a few thousand files.
const MAX_CLIENTS: usize = 4096;
const MAX_FILES: usize = 200_000;

#[derive(Debug)]
pub(crate) struct Pulls {
    dir: PathBuf,
    by_client: Mutex<HashMap<String, BTreeSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // One insert or remove per update.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name safe as one file name component.
fn safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl Pulls {
    pub(crate) fn new(cache_dir: &std::path::Path) -> Pulls {
        Pulls {
            dir: cache_dir.join("learned"),
            by_client: Mutex::default(),
        }
    }

    pub(crate) fn note(&self, client: &str, mirror: &str, path: &RepoPath) {
        let mut map = lock(&self.by_client);
        if !map.contains_key(client) && map.len() >= MAX_CLIENTS {
            map.clear();
        }
        let files = map.entry(client.to_string()).or_default();
        if files.len() < MAX_FILES {
            files.insert(format!("{mirror}/{path}"));
        }
    }

    /// Forgets what `client` pulled (a new install starts afresh).
    pub(crate) fn forget(&self, client: &str) {
        lock(&self.by_client).remove(client);
    }

    /// Writes what `client` pulled as the files an install of `os` needs,
    /// and forgets it. Returns how many files were written.
    pub(crate) fn complete(&self, client: &str, os: &str) -> io::Result<usize> {
        if !safe(client) || !safe(os) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "client or OS name is not a plain name",
            ));
        }
        let Some(files) = lock(&self.by_client).remove(client) else {
            return Ok(0);
        };
        let dir = self.dir.join(os);
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        for f in &files {
            writeln!(tmp, "{f}")?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(dir.join(format!("{client}.list")))
            .map_err(|e| e.error)?;
        Ok(files.len())
    }

    /// The files the last completed install of `os` by `client` pulled, as
    /// `(mirror, path)`; `NotFound` when there is none.
    pub(crate) fn load(&self, os: &str, client: &str) -> io::Result<Vec<(String, String)>> {
        if !safe(client) || !safe(os) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "client or OS name is not a plain name",
            ));
        }
        let text = std::fs::read_to_string(self.dir.join(os).join(format!("{client}.list")))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('/'))
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect())
    }

    /// The clients with a completed install of `os`, for an error message.
    pub(crate) fn clients(&self, os: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.join(os))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".list"))
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalize;

    #[test]
    fn a_completed_install_is_kept_per_os_and_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Pulls::new(dir.path());
        let path = |s: &str| normalize(s).expect("path");
        p.note("52:54:00:00:00:01", "centos", &path("os/.treeinfo"));
        p.note("52:54:00:00:00:01", "centos", &path("os/Packages/a.rpm"));
        p.note("52:54:00:00:00:01", "centos", &path("os/.treeinfo"));
        p.note("52:54:00:00:00:02", "centos", &path("os/Packages/b.rpm"));
        assert_eq!(p.complete("52:54:00:00:00:01", "el9").expect("write"), 2);
        assert_eq!(
            p.load("el9", "52:54:00:00:00:01").expect("read"),
            vec![
                ("centos".to_string(), "os/.treeinfo".to_string()),
                ("centos".to_string(), "os/Packages/a.rpm".to_string())
            ]
        );
        assert_eq!(p.clients("el9"), vec!["52:54:00:00:00:01".to_string()]);
        assert!(p.load("el9", "52:54:00:00:00:02").is_err(), "not completed");
        assert!(p.complete("../x", "el9").is_err());
        assert!(p.load("..", "x").is_err());
    }
}
