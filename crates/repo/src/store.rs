//! On-disk cache: one file per cached URL under `objects/`, named by the
//! sha256 of the cache key, holding a small text header (key and validators)
//! followed by the body. Header and body live in one file so a commit — a
//! rename from `tmp/` — replaces both at once; a reader that opened the old
//! file keeps its inode and reads the whole old body.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

const MAGIC: &[u8] = b"KSCACHE1\n";
const MAX_HEADER: usize = 8 * 1024;
/// After ENOSPC, caching pauses this long before it is tried again.
const DISK_FULL_BACKOFF: Duration = Duration::from_secs(30);

/// What the cache remembers about a file besides its bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub(crate) key: String,
    pub(crate) content_type: Option<String>,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

impl Meta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut line = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                // Header values are visible ASCII already; the check keeps a
                // hostile upstream from smuggling a line break into the header.
                if v.len() < 1024 && !v.contains(['\n', '\r']) {
                    out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
                }
            }
        };
        line("key", &Some(self.key.clone()));
        line("content-type", &self.content_type);
        line("etag", &self.etag);
        line("last-modified", &self.last_modified);
        out.push(b'\n');
        out
    }

    /// Parses a header; returns it and the offset where the body starts.
    pub(crate) fn decode(buf: &[u8]) -> Option<(Meta, u64)> {
        let rest = buf.strip_prefix(MAGIC)?;
        let end = rest.windows(2).position(|w| w == b"\n\n")?;
        let text = std::str::from_utf8(&rest[..end]).ok()?;
        let mut meta = Meta::default();
        for line in text.lines() {
            let (k, v) = line.split_once(": ")?;
            let v = v.to_string();
            match k {
                "key" => meta.key = v,
                "content-type" => meta.content_type = Some(v),
                "etag" => meta.etag = Some(v),
                "last-modified" => meta.last_modified = Some(v),
                _ => {}
            }
        }
        Some((meta, (MAGIC.len() + end + 2) as u64))
    }
}

/// An open cached file: the inode is pinned for as long as this lives.
#[derive(Debug, Clone)]
pub(crate) struct CachedFile {
    pub(crate) file: Arc<File>,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) meta: Meta,
}

/// The state of a key in the index, decided without touching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    Missing,
    Fresh,
    Stale,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
    validated: Option<Instant>,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    objects: PathBuf,
    tmp: PathBuf,
    max_bytes: AtomicU64,
    index: Mutex<Index>,
    disk_full_until: Mutex<Option<Instant>>,
    pub(crate) evictions: AtomicU64,
}

pub(crate) fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

impl Store {
    /// Opens (creating) the cache directory, discards temp files left by a
    /// crash and indexes the committed files, oldest first.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Store> {
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&objects)?;
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&tmp)? {
            let e = e?;
            let path = e.path();
            let r = if e.file_type()?.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(err) = r {
                tracing::warn!(path = %path.display(), error = %err, "could not remove leftover temp file");
            } else {
                tracing::info!(path = %path.display(), "removed leftover temp file");
            }
        }
        let mut found = Vec::new();
        for shard in fs::read_dir(&objects)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path())? {
                let e = e?;
                let name = e.file_name().to_string_lossy().to_string();
                if name.len() != 64
                    || !name.bytes().all(|b| b.is_ascii_hexdigit())
                    || !name.starts_with(&*shard.file_name().to_string_lossy())
                {
                    continue;
                }
                let md = e.metadata()?;
                let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, name, md.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, size) in found {
            index.tick += 1;
            index.total += size;
            index.entries.insert(
                name,
                Entry {
                    size,
                    last_used: index.tick,
                    validated: None,
                },
            );
        }
        let store = Store {
            objects,
            tmp,
            max_bytes: AtomicU64::new(max_bytes),
            index: Mutex::new(index),
            disk_full_until: Mutex::new(None),
            evictions: AtomicU64::new(0),
        };
        store.evict(None);
        Ok(store)
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn object_path(&self, hash: &str) -> PathBuf {
        self.objects.join(&hash[..2]).join(hash)
    }

    pub(crate) fn presence(&self, hash: &str, revalidate_after: Option<Duration>) -> Presence {
        let index = self.index();
        match index.entries.get(hash) {
            None => Presence::Missing,
            Some(e) => match (revalidate_after, e.validated) {
                (None, _) => Presence::Fresh,
                (Some(max_age), Some(at)) if at.elapsed() < max_age => Presence::Fresh,
                _ => Presence::Stale,
            },
        }
    }

    /// Opens a committed file (blocking). `None` when it is gone (evicted
    /// under our feet) or unreadable; the index forgets it then.
    pub(crate) fn open_entry(&self, hash: &str) -> Option<CachedFile> {
        let path = self.object_path(hash);
        let opened = (|| -> io::Result<Option<CachedFile>> {
            let mut file = File::open(&path)?;
            let total = file.metadata()?.len();
            let mut head = vec![0u8; MAX_HEADER.min(total as usize)];
            file.read_exact(&mut head)?;
            Ok(Meta::decode(&head).map(|(meta, offset)| CachedFile {
                file: Arc::new(file),
                offset,
                len: total - offset,
                meta,
            }))
        })();
        match opened {
            Ok(Some(f)) => {
                let mut index = self.index();
                index.tick += 1;
                let tick = index.tick;
                if let Some(e) = index.entries.get_mut(hash) {
                    e.last_used = tick;
                }
                Some(f)
            }
            Ok(None) | Err(_) => {
                if let Ok(None) = opened {
                    tracing::warn!(path = %path.display(), "cache file has a bad header, discarding");
                    let _ = fs::remove_file(&path);
                }
                self.forget(hash);
                None
            }
        }
    }

    fn forget(&self, hash: &str) {
        let mut index = self.index();
        if let Some(e) = index.entries.remove(hash) {
            index.total -= e.size;
        }
    }

    /// Deletes a committed file (e.g. it failed verification).
    pub(crate) fn remove(&self, hash: &str) {
        let _ = fs::remove_file(self.object_path(hash));
        self.forget(hash);
    }

    pub(crate) fn mark_validated(&self, hash: &str) {
        if let Some(e) = self.index().entries.get_mut(hash) {
            e.validated = Some(Instant::now());
        }
    }

    /// Makes a file stale at once: the next request asks the mirror.
    pub(crate) fn expire(&self, hash: &str) {
        if let Some(e) = self.index().entries.get_mut(hash) {
            e.validated = None;
        }
    }

    pub(crate) fn new_temp(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix("fetch-")
            .tempfile_in(&self.tmp)
    }

    /// Whether a body of `size` bytes may be cached at all.
    pub(crate) fn fits(&self, size: u64) -> bool {
        size <= self.max_bytes.load(Ordering::Relaxed)
    }

    /// Atomically replaces the object for `hash` with the complete temp
    /// file, then evicts least-recently-used files above the size limit.
    pub(crate) fn commit(&self, tmp: NamedTempFile, hash: &str) -> io::Result<()> {
        let size = tmp.as_file().metadata()?.len();
        let dest = self.object_path(hash);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        tmp.persist(&dest).map_err(|e| e.error)?;
        {
            let mut index = self.index();
            index.tick += 1;
            let tick = index.tick;
            let entry = Entry {
                size,
                last_used: tick,
                validated: Some(Instant::now()),
            };
            if let Some(old) = index.entries.insert(hash.to_string(), entry) {
                index.total -= old.size;
            }
            index.total += size;
        }
        self.evict(Some(hash));
        Ok(())
    }

    fn evict(&self, keep: Option<&str>) {
        let max = self.max_bytes.load(Ordering::Relaxed);
        let victims = {
            let mut index = self.index();
            if index.total <= max {
                return;
            }
            let mut order: Vec<(u64, String)> = index
                .entries
                .iter()
                .filter(|(h, _)| Some(h.as_str()) != keep)
                .map(|(h, e)| (e.last_used, h.clone()))
                .collect();
            order.sort_unstable();
            let mut victims = Vec::new();
            for (_, h) in order {
                if index.total <= max {
                    break;
                }
                if let Some(e) = index.entries.remove(&h) {
                    index.total -= e.size;
                    victims.push(h);
                }
            }
            victims
        };
        for h in victims {
            // Unlinking is safe while a client streams it: its fd keeps the inode.
            let _ = fs::remove_file(self.object_path(&h));
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(object = %h, "evicted");
        }
    }

    /// Evicts least-recently-used files totalling at least `need` bytes,
    /// after a write failed for lack of space. Evicts nothing and returns
    /// false when the whole cache is smaller than `need`.
    pub(crate) fn evict_for(&self, need: u64) -> bool {
        let victims = {
            let mut index = self.index();
            if index.total < need {
                return false;
            }
            let mut order: Vec<(u64, String)> = index
                .entries
                .iter()
                .map(|(h, e)| (e.last_used, h.clone()))
                .collect();
            order.sort_unstable();
            let mut freed = 0;
            let mut victims = Vec::new();
            for (_, h) in order {
                if freed >= need {
                    break;
                }
                if let Some(e) = index.entries.remove(&h) {
                    index.total -= e.size;
                    freed += e.size;
                    victims.push(h);
                }
            }
            victims
        };
        for h in victims {
            let _ = fs::remove_file(self.object_path(&h));
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    pub(crate) fn set_max_bytes(&self, max: u64) {
        self.max_bytes.store(max, Ordering::Relaxed);
        self.evict(None);
    }

    pub(crate) fn disk_full(&self) -> bool {
        let mut until = self
            .disk_full_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    pub(crate) fn set_disk_full(&self) {
        tracing::warn!("cache disk full: serving without caching for a while");
        *self
            .disk_full_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + DISK_FULL_BACKOFF);
    }

    /// (entries, bytes, max bytes)
    pub(crate) fn usage(&self) -> (u64, u64, u64) {
        let index = self.index();
        (
            index.entries.len() as u64,
            index.total,
            self.max_bytes.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn hashes(&self) -> Vec<String> {
        self.index().entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let m = Meta {
            key: "centos/a.rpm".into(),
            content_type: Some("application/x-rpm".into()),
            etag: Some("\"abc\"".into()),
            last_modified: None,
        };
        let mut buf = m.encode();
        let body_at = buf.len() as u64;
        buf.extend_from_slice(b"\n\nbody");
        let (d, off) = Meta::decode(&buf).expect("decodes");
        assert_eq!(off, body_at);
        assert_eq!(d.key, "centos/a.rpm");
        assert_eq!(d.etag.as_deref(), Some("\"abc\""));
        assert!(Meta::decode(b"garbage").is_none());
    }
}
