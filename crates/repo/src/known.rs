//! What the cache knows a file must hash to, learnt from the metadata that
//! passed through it: `repomd.xml` gives the repodata records, primary the
//! packages, `.treeinfo` the installer images. A download of a known file
//! is checked against it before it is committed. The knowledge is kept in
//! memory and rebuilt from the cached metadata when the cache is opened.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::metadata::{Listed, Record};
use crate::path::{RepoPath, normalize};
use crate::store::hash_key;

/// Where an expected checksum came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `repomd.xml` record (content-addressed: its name changes with it).
    Repomd,
    /// A package of primary metadata (immutable).
    Primary,
    /// `.treeinfo`'s checksums, at this path of this mirror: images change
    /// in place on a respin, so a mismatch may mean `.treeinfo` moved on.
    Treeinfo { mirror: String, path: RepoPath },
}

#[derive(Debug, Clone)]
pub(crate) struct Expect {
    pub(crate) sha256: [u8; 32],
    pub(crate) origin: Origin,
}

/// A primary metadata file: when it is committed its packages become known.
#[derive(Debug, Clone)]
pub(crate) struct PrimaryAt {
    pub(crate) mirror: String,
    /// The repository directory (`…/os/`), with its trailing slash.
    pub(crate) prefix: String,
    pub(crate) href: String,
}

#[derive(Debug, Default)]
pub(crate) struct Known {
    /// By object hash (the cache key's sha256).
    expect: Mutex<HashMap<String, Expect>>,
    primaries: Mutex<HashMap<String, PrimaryAt>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one insert: a panic while holding it leaves the map whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `prefix` + `href` as a repo path, or `None` when the metadata names
/// something the proxy would refuse anyway.
pub(crate) fn join(prefix: &str, href: &str) -> Option<RepoPath> {
    normalize(&format!("{prefix}{href}")).ok()
}

/// The directory of a metadata file's repository: `a/b/repodata/repomd.xml`
/// → `a/b/`, `a/b/.treeinfo` → `a/b/`.
pub(crate) fn repo_prefix(path: &RepoPath, suffix: &str) -> Option<String> {
    path.as_str().strip_suffix(suffix).map(str::to_string)
}

pub(crate) fn object_hash(mirror: &str, path: &RepoPath) -> String {
    hash_key(&format!("{mirror}/{path}"))
}

impl Known {
    pub(crate) fn expected(&self, hash: &str) -> Option<Expect> {
        lock(&self.expect).get(hash).cloned()
    }

    fn insert(&self, mirror: &str, prefix: &str, file: &Listed, origin: &Origin) {
        let (Some(sha256), Some(path)) = (file.sha256, join(prefix, &file.href)) else {
            return;
        };
        lock(&self.expect).insert(
            object_hash(mirror, &path),
            Expect {
                sha256,
                origin: origin.clone(),
            },
        );
    }

    pub(crate) fn learn_repomd(&self, mirror: &str, prefix: &str, records: &[Record]) {
        for r in records {
            self.insert(mirror, prefix, &r.file, &Origin::Repomd);
            if r.kind == "primary"
                && let Some(path) = join(prefix, &r.file.href)
            {
                lock(&self.primaries).insert(
                    object_hash(mirror, &path),
                    PrimaryAt {
                        mirror: mirror.to_string(),
                        prefix: prefix.to_string(),
                        href: r.file.href.clone(),
                    },
                );
            }
        }
    }

    pub(crate) fn learn_packages(&self, mirror: &str, prefix: &str, packages: &[Listed]) {
        for p in packages {
            self.insert(mirror, prefix, p, &Origin::Primary);
        }
    }

    pub(crate) fn learn_treeinfo(
        &self,
        mirror: &str,
        treeinfo: &RepoPath,
        prefix: &str,
        files: &[Listed],
    ) {
        let origin = Origin::Treeinfo {
            mirror: mirror.to_string(),
            path: treeinfo.clone(),
        };
        for f in files {
            self.insert(mirror, prefix, f, &origin);
        }
    }

    /// The primary metadata file at `hash`, if it is one.
    pub(crate) fn primary(&self, hash: &str) -> Option<PrimaryAt> {
        lock(&self.primaries).get(hash).cloned()
    }
}
