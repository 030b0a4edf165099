//! On-disk cache: one file per cached URL under `objects/`, named by the
//! sha256 of the cache key, holding a small text header (key, validators,
//! and the body's length and sha256) followed by the body. Header and body
//! live in one file so a commit — a rename from `tmp/` — replaces both at
//! once; a reader that opened the old file keeps its inode and reads the
//! whole old body.
//!
//! Integrity at rest: the header records what the body was when it was
//! committed, so an object cut short or rotted on disk (a failing USB
//! stick, a power cut, an operator's `truncate`) is told from a good one.
//! Opening an object compares its size with the recorded length (a stat of
//! the open descriptor, no extra read); its sha256 is checked once per
//! object per process, on its first whole serve (see `fetch`), and the index
//! remembers that it was. A damaged object is dropped, never served.

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

/// How far a cached copy may be trusted without asking the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Trust {
    /// Whole by a checksum, or by the mirror's word with nothing to doubt
    /// it: served as a hit within its revalidation policy.
    #[default]
    Final,
    /// No checksum anywhere vouches for it and it is a file on the mirror's
    /// disk (the mirror gave its Last-Modified), which a writer may be
    /// rewriting in place — paused for any length of time. Kept so an
    /// offline install still has it, but served only once the mirror has
    /// confirmed it for the request at hand (a conditional GET).
    Unconfirmed,
}

impl Trust {
    /// Fixed width, so the header can be rewritten in place at commit.
    fn word(self) -> &'static str {
        match self {
            Trust::Final => "final      ",
            Trust::Unconfirmed => "unconfirmed",
        }
    }
}

/// What the cache remembers about a file besides its bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub(crate) key: String,
    pub(crate) content_type: Option<String>,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    /// The body's length and sha256 when it was committed; `None` in
    /// objects written before they were recorded (they get the size check
    /// against the index only).
    pub(crate) length: Option<u64>,
    pub(crate) sha256: Option<[u8; 32]>,
    pub(crate) trust: Trust,
}

impl Meta {
    /// The header. `length`, `sha256` and `trust` are always written, at a
    /// fixed width (zeros until the download is complete), so the commit
    /// can fill them in place without moving the body.
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
        out.extend_from_slice(
            format!(
                "length: {:020}\nsha256: {}\ntrust: {}\n\n",
                self.length.unwrap_or(0),
                hex(&self.sha256.unwrap_or([0; 32])),
                self.trust.word()
            )
            .as_bytes(),
        );
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
            match k {
                "key" => meta.key = v.to_string(),
                "content-type" => meta.content_type = Some(v.to_string()),
                "etag" => meta.etag = Some(v.to_string()),
                "last-modified" => meta.last_modified = Some(v.to_string()),
                "length" => meta.length = Some(v.trim().parse().ok()?),
                "sha256" => meta.sha256 = Some(crate::metadata::parse_sha256("sha256", v.trim())?),
                "trust" => {
                    meta.trust = match v.trim() {
                        "final" => Trust::Final,
                        "unconfirmed" => Trust::Unconfirmed,
                        _ => return None,
                    }
                }
                _ => {}
            }
        }
        Some((meta, (MAGIC.len() + end + 2) as u64))
    }
}

/// Why an object on disk was found damaged and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Damage {
    /// The header cannot be read.
    Header,
    /// Its size is not the length it was committed with.
    Size,
    /// Its bytes do not hash to the sha256 it was committed with.
    Checksum,
}

/// An open cached file: the inode is pinned for as long as this lives.
#[derive(Debug, Clone)]
pub(crate) struct CachedFile {
    /// The object's name: the sha256 of its cache key.
    pub(crate) hash: String,
    pub(crate) file: Arc<File>,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) meta: Arc<Meta>,
    /// Its sha256 was checked in this process (it was committed here, or
    /// hashed since): only an unchecked object is hashed on a whole serve.
    pub(crate) checked: bool,
}

/// How [`Store::open_hot`] went.
#[derive(Debug)]
pub(crate) enum Opening {
    Hot(CachedFile),
    /// Its size is not the size it was committed with (for
    /// [`Store::drop_damaged`], off the runtime).
    Damaged(File),
    /// Not without a chance of waiting for the disk.
    Cold,
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
    /// The object file's size (header and body) as committed, or as found
    /// when the cache was opened.
    size: u64,
    last_used: u64,
    validated: Option<Instant>,
    /// `None` until the header is read in this process.
    trust: Option<Trust>,
    checked: bool,
    /// The header and where the body starts, once read (or written) in
    /// this process: a hit needs no read of it, and no blocking-pool trip.
    header: Option<(Arc<Meta>, u64)>,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
}

/// Objects found damaged on disk and dropped, by kind.
#[derive(Debug, Default)]
pub(crate) struct Damaged {
    pub(crate) header: AtomicU64,
    pub(crate) size: AtomicU64,
    pub(crate) checksum: AtomicU64,
}

impl Damaged {
    fn count(&self, d: Damage) {
        let c = match d {
            Damage::Header => &self.header,
            Damage::Size => &self.size,
            Damage::Checksum => &self.checksum,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> u64 {
        [&self.header, &self.size, &self.checksum]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[derive(Debug)]
pub(crate) struct Store {
    objects: PathBuf,
    tmp: PathBuf,
    max_bytes: AtomicU64,
    index: Mutex<Index>,
    disk_full_until: Mutex<Option<Instant>>,
    pub(crate) evictions: AtomicU64,
    pub(crate) damaged: Damaged,
}

pub(crate) fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    // On every request (the object name of its key): no formatter per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

/// Whether an object's size is not what it was committed with: the
/// length its header records, or for an object written before lengths were
/// recorded, the size the index has for it.
fn size_disagrees(file: &File, indexed: Option<u64>) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(total) = file.metadata().map(|m| m.len()) else {
        return true;
    };
    let mut head = vec![0u8; MAX_HEADER.min(total as usize)];
    match file
        .read_exact_at(&mut head, 0)
        .ok()
        .and_then(|()| Meta::decode(&head))
    {
        Some((
            Meta {
                length: Some(n), ..
            },
            offset,
        )) => total.checked_sub(offset) != Some(n),
        Some(_) => indexed.is_some_and(|size| size != total),
        None => true,
    }
}

/// Makes the entries of `dir` (a rename into it, a new subdirectory)
/// durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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
                    trust: None,
                    checked: false,
                    header: None,
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
            damaged: Damaged::default(),
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
            // Whatever the path's policy: nothing but the mirror vouches for it.
            Some(Entry {
                trust: Some(Trust::Unconfirmed),
                ..
            }) => Presence::Stale,
            Some(e) => match (revalidate_after, e.validated) {
                (None, _) => Presence::Fresh,
                (Some(max_age), Some(at)) if at.elapsed() < max_age => Presence::Fresh,
                _ => Presence::Stale,
            },
        }
    }

    /// Opens a committed file (blocking). `None` when it is gone (evicted
    /// under our feet), unreadable or damaged; the index forgets it then,
    /// and a damaged file is deleted so the next request fetches it again.
    pub(crate) fn open_entry(&self, hash: &str) -> Option<CachedFile> {
        let path = self.object_path(hash);
        let opened = (|| -> io::Result<Result<CachedFile, (Damage, File)>> {
            let mut file = File::open(&path)?;
            // A stat of the descriptor we read from, so the size checked is
            // the size of the bytes served.
            let total = file.metadata()?.len();
            let mut head = vec![0u8; MAX_HEADER.min(total as usize)];
            file.read_exact(&mut head)?;
            let Some((meta, offset)) = Meta::decode(&head) else {
                return Ok(Err((Damage::Header, file)));
            };
            let len = total - offset;
            let recorded = meta.length.is_none_or(|n| n == len);
            let indexed = self
                .index()
                .entries
                .get(hash)
                .is_none_or(|e| e.size == total);
            if !(recorded && indexed) {
                return Ok(Err((Damage::Size, file)));
            }
            Ok(Ok(CachedFile {
                hash: hash.to_string(),
                file: Arc::new(file),
                offset,
                len,
                meta: Arc::new(meta),
                checked: false,
            }))
        })();
        match opened {
            Ok(Ok(mut f)) => {
                let mut index = self.index();
                index.tick += 1;
                let tick = index.tick;
                if let Some(e) = index.entries.get_mut(hash) {
                    e.last_used = tick;
                    e.trust = Some(f.meta.trust);
                    e.header = Some((f.meta.clone(), f.offset));
                    f.checked = e.checked;
                }
                Some(f)
            }
            Ok(Err((damage, file))) => {
                self.drop_damaged(hash, &file, damage);
                None
            }
            Err(_) => {
                self.forget(hash);
                None
            }
        }
    }

    /// Opens an object without blocking, when that is sure to need no disk
    /// I/O: its header is in memory, its sha256 was checked in this
    /// process, and its name resolves from the kernel's dentry cache
    /// (`openat2` with `RESOLVE_CACHED`, which fails rather than read a
    /// directory). The size check is a stat of the open descriptor against
    /// the index. Anything else is [`Opening::Cold`]: the caller takes the
    /// blocking path, [`Store::open_entry`].
    pub(crate) fn open_hot(&self, hash: &str) -> Opening {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let (meta, offset, size) = {
            let index = self.index();
            match index.entries.get(hash) {
                Some(Entry {
                    checked: true,
                    header: Some((meta, offset)),
                    size,
                    ..
                }) => (meta.clone(), *offset, *size),
                _ => return Opening::Cold,
            }
        };
        let Ok(fd) = rustix::fs::openat2(
            rustix::fs::CWD,
            self.object_path(hash),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        ) else {
            // EAGAIN (not cached), ENOENT (evicted: the blocking path
            // forgets it), ENOSYS or EINVAL (a kernel before 5.12).
            return Opening::Cold;
        };
        let file = File::from(fd);
        let Ok(total) = file.metadata().map(|m| m.len()) else {
            return Opening::Cold;
        };
        if total != size {
            return Opening::Damaged(file);
        }
        let mut index = self.index();
        index.tick += 1;
        let tick = index.tick;
        if let Some(e) = index.entries.get_mut(hash) {
            e.last_used = tick;
        }
        Opening::Hot(CachedFile {
            hash: hash.to_string(),
            file: Arc::new(file),
            offset,
            len: total - offset,
            meta,
            checked: true,
        })
    }

    /// Deletes the object `file` was opened from, found damaged — unless a
    /// commit has replaced it since (a respin), which is whole.
    pub(crate) fn drop_damaged(&self, hash: &str, file: &File, damage: Damage) {
        use std::os::unix::fs::MetadataExt;
        let path = self.object_path(hash);
        tracing::warn!(path = %path.display(), ?damage, "cached file is damaged: dropped, fetched again on the next request");
        // Under the index lock, which a commit takes after its rename: the
        // name still points at the damaged inode, or was replaced and is left.
        let mut index = self.index();
        let ours = file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let named = fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
        // A size that disagreed with the index may have been read across a
        // commit (the new file opened, the index not yet updated): the
        // file's own header settles it.
        let damaged = damage != Damage::Size || {
            let entry = index.entries.get(hash).map(|e| e.size);
            size_disagrees(file, entry)
        };
        if damaged && ours.is_some() && ours == named {
            let _ = fs::remove_file(&path);
            if let Some(e) = index.entries.remove(hash) {
                index.total -= e.size;
            }
            self.damaged.count(damage);
        }
    }

    /// Notes that the object's bytes were found to hash to what it was
    /// committed with: it is not hashed again in this process.
    pub(crate) fn mark_checked(&self, hash: &str) {
        if let Some(e) = self.index().entries.get_mut(hash) {
            e.checked = true;
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
    /// Returns once the new object is durable: its bytes, then its name.
    pub(crate) fn commit(
        &self,
        tmp: NamedTempFile,
        hash: &str,
        meta: Arc<Meta>,
        offset: u64,
    ) -> io::Result<()> {
        // Bytes and header reach the disk before the name does: after a
        // power cut the object is absent or whole, never a committed name
        // over blocks that were never written (delayed allocation).
        tmp.as_file().sync_data()?;
        let size = tmp.as_file().metadata()?.len();
        let dest = self.object_path(hash);
        let shard = dest.parent().unwrap_or(&self.objects);
        match fs::create_dir(shard) {
            Ok(()) => sync_dir(&self.objects)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
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
                trust: Some(meta.trust),
                checked: true,
                header: Some((meta, offset)),
            };
            if let Some(old) = index.entries.insert(hash.to_string(), entry) {
                index.total -= old.size;
            }
            index.total += size;
        }
        self.evict(Some(hash));
        // The rename is durable only once its directory is; until this
        // returns the download's clients wait for their last byte. (Other
        // requests of this process may read the new object already: a power
        // cut takes them along.)
        sync_dir(shard)
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
    fn a_hit_opens_from_memory_only_when_it_safely_can() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("open");
        let hash = hash_key("m/a.rpm");
        let meta = Meta {
            key: "m/a.rpm".into(),
            length: Some(5),
            sha256: Some(Sha256::digest(b"hello").into()),
            ..Meta::default()
        };
        let mut bytes = meta.encode();
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(b"hello");
        let tmp = store.new_temp().expect("temp");
        std::fs::write(tmp.path(), &bytes).expect("write");
        store
            .commit(tmp, &hash, Arc::new(meta), offset)
            .expect("commit");
        let hot = |s: &Store| match s.open_hot(&hash) {
            Opening::Hot(f) => Some(f.len),
            Opening::Cold => None,
            Opening::Damaged(_) => panic!("not damaged"),
        };
        assert_eq!(
            hot(&store),
            Some(5),
            "committed here: header and checksum known"
        );

        // After a restart neither is known until the blocking path has read
        // the header and the first serve has checked the bytes.
        let store = Store::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(hot(&store), None);
        let f = store.open_entry(&hash).expect("opens");
        assert!(!f.checked);
        assert_eq!(hot(&store), None, "header known, bytes not checked yet");
        store.mark_checked(&hash);
        assert_eq!(hot(&store), Some(5));

        // Cut short: the stat of the open descriptor tells.
        let path = store.object_path(&hash);
        File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(offset + 2)
            .expect("truncate");
        assert!(matches!(store.open_hot(&hash), Opening::Damaged(_)));
    }

    #[test]
    fn header_round_trip() {
        let m = Meta {
            key: "centos/a.rpm".into(),
            content_type: Some("application/x-rpm".into()),
            etag: Some("\"abc\"".into()),
            last_modified: None,
            length: Some(4),
            sha256: Some([7; 32]),
            trust: Trust::Unconfirmed,
        };
        let mut buf = m.encode();
        let body_at = buf.len() as u64;
        buf.extend_from_slice(b"\n\nbody");
        let (d, off) = Meta::decode(&buf).expect("decodes");
        assert_eq!(off, body_at);
        assert_eq!(d.key, "centos/a.rpm");
        assert_eq!(d.etag.as_deref(), Some("\"abc\""));
        assert_eq!((d.length, d.sha256, d.trust), (m.length, m.sha256, m.trust));
        assert!(Meta::decode(b"garbage").is_none());
        // Filled in at commit without moving the body.
        let done = Meta {
            length: Some(u64::MAX),
            trust: Trust::Final,
            ..m.clone()
        };
        assert_eq!(done.encode().len(), m.encode().len());
        // Objects written before length and sha256 were recorded still read.
        let (old, _) = Meta::decode(b"KSCACHE1\nkey: c/a.rpm\n\nbody").expect("old header");
        assert_eq!(
            (old.length, old.sha256, old.trust),
            (None, None, Trust::Final)
        );
    }
}
