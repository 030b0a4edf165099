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
//!
//! Copies in memory: the index also holds copies of small bodies
//! ([`crate::memory`]), under its one lock. Each entry has a version, new
//! at every commit, and a copy is kept and served only under the version
//! of the entry it was read under; an entry that goes (evicted, damaged,
//! replaced) takes its copy along. A copy stays what it was when it was
//! checked: damage to the file on disk afterwards is found, and the file
//! dropped, at the next read of the disk (the copy pushed out of memory, or
//! a restart), while the copy — what was committed — is still served.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::memory::{InMemory, Memory};

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
    /// The version of the index entry it was opened under; `None` when the
    /// entry changed (or went) while it was opened, so nothing learnt from
    /// this file is recorded for the entry now there.
    pub(crate) version: Option<u64>,
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

/// A header as read (or written) in this process, and which file it was
/// read from.
#[derive(Debug, Clone)]
struct Header {
    meta: Arc<Meta>,
    /// Where the body starts.
    offset: u64,
    /// The object file's device and inode: a file opened by name is paired
    /// with this header only if it is that very file, not one a commit
    /// renamed over it since.
    file: (u64, u64),
}

fn file_id(md: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino())
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
    /// The header, once read (or written) in this process: a hit needs no
    /// read of it, and no blocking-pool trip.
    header: Option<Header>,
    /// New for every entry (each commit makes one): what a reader learnt
    /// from the file — its header, that it was checked, a copy of its body
    /// — is recorded only if the entry is still the one it opened under.
    version: u64,
}

impl Entry {
    fn presence(&self, revalidate_after: Option<Duration>) -> Presence {
        match (self.trust, revalidate_after, self.validated) {
            // Whatever the path's policy: nothing but the mirror vouches for it.
            (Some(Trust::Unconfirmed), _, _) => Presence::Stale,
            (_, None, _) => Presence::Fresh,
            (_, Some(max_age), Some(at)) if at.elapsed() < max_age => Presence::Fresh,
            _ => Presence::Stale,
        }
    }
}

#[derive(Debug)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
    /// The last version given to an entry.
    versions: u64,
    /// Copies of small bodies, each under its entry's version.
    memory: Memory,
}

impl Index {
    fn next_version(&mut self) -> u64 {
        self.versions += 1;
        self.versions
    }

    /// Adds (or replaces) an entry; a copy in memory of what it replaces
    /// goes.
    fn insert(&mut self, hash: &str, entry: Entry) {
        self.memory.remove(hash);
        self.total += entry.size;
        if let Some(old) = self.entries.insert(hash.to_string(), entry) {
            self.total -= old.size;
        }
    }

    /// Removes an entry and its copy in memory.
    fn take(&mut self, hash: &str) -> Option<Entry> {
        self.memory.remove(hash);
        let e = self.entries.remove(hash)?;
        self.total -= e.size;
        Some(e)
    }

    /// Marks the entry used now, if it is still at `version`.
    fn touch(&mut self, hash: &str, version: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(hash).filter(|e| e.version == version) {
            e.last_used = tick;
        }
    }
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
    /// crash and indexes the committed files, oldest first. Up to
    /// `memory_bytes` of small bodies are kept in memory as they are read.
    pub(crate) fn open(dir: &Path, max_bytes: u64, memory_bytes: u64) -> io::Result<Store> {
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
        let mut index = Index {
            entries: HashMap::with_capacity(found.len()),
            total: 0,
            tick: 0,
            versions: 0,
            memory: Memory::new(memory_bytes),
        };
        for (_, name, size) in found {
            index.tick += 1;
            let entry = Entry {
                size,
                last_used: index.tick,
                validated: None,
                trust: None,
                checked: false,
                header: None,
                version: index.next_version(),
            };
            index.insert(&name, entry);
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
        index
            .entries
            .get(hash)
            .map_or(Presence::Missing, |e| e.presence(revalidate_after))
    }

    /// The body, when memory holds it and it is [`Presence::Fresh`]: one
    /// lock, no disk.
    pub(crate) fn in_memory(
        &self,
        hash: &str,
        revalidate_after: Option<Duration>,
    ) -> Option<InMemory> {
        let mut guard = self.index();
        let index = &mut *guard;
        let e = index.entries.get_mut(hash)?;
        if e.presence(revalidate_after) != Presence::Fresh {
            return None;
        }
        // Only a final, checked entry ever has a copy (see `keep`); the
        // version makes sure it is this entry's.
        let copy = index.memory.get(hash, e.version)?;
        index.tick += 1;
        e.last_used = index.tick;
        Some(copy)
    }

    /// Keeps in memory the body just read whole from `f`, when it may be
    /// served from there: the entry is still the one `f` was opened under
    /// (no commit, eviction or damage since), its bytes were checked in
    /// this process, it is final (an unconfirmed one is confirmed with the
    /// mirror before every serve, so it is never a plain hit), and the body
    /// has the size the index has for it.
    pub(crate) fn keep(&self, f: &CachedFile, copy: &InMemory) {
        let Some(version) = f.version else {
            return;
        };
        let mut guard = self.index();
        let index = &mut *guard;
        let Some(e) = index.entries.get(&f.hash) else {
            return;
        };
        let whole = copy.body().len() as u64 == f.len && e.size == f.offset + f.len;
        if e.version == version
            && e.checked
            && e.trust == Some(Trust::Final)
            && copy.meta().trust == Trust::Final
            && whole
        {
            index.memory.put(&f.hash, version, copy.clone());
        }
    }

    /// A smaller (or larger) budget for copies in memory, at once.
    pub(crate) fn set_memory_bytes(&self, budget: u64) {
        self.index().memory.set_budget(budget);
    }

    /// (copies, bytes, budget, copies evicted) of the memory copies.
    pub(crate) fn memory_usage(&self) -> (u64, u64, u64, u64) {
        self.index().memory.usage()
    }

    /// Opens a committed file (blocking). `None` when it is gone (evicted
    /// under our feet), unreadable or damaged; the index forgets it then,
    /// and a damaged file is deleted so the next request fetches it again.
    pub(crate) fn open_entry(&self, hash: &str) -> Option<CachedFile> {
        let path = self.object_path(hash);
        // Taken before the open: a commit renames first and updates the
        // index after, so an unchanged version afterwards means the file
        // opened is no older than the entry.
        let version = self.index().entries.get(hash).map(|e| e.version);
        // The file and its header, or why it is damaged.
        type Opened = Result<(CachedFile, Header), (Damage, File)>;
        let opened = (|| -> io::Result<Opened> {
            let mut file = File::open(&path)?;
            // A stat of the descriptor we read from, so the size checked is
            // the size of the bytes served.
            let md = file.metadata()?;
            let total = md.len();
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
            let meta = Arc::new(meta);
            let header = Header {
                meta: meta.clone(),
                offset,
                file: file_id(&md),
            };
            let f = CachedFile {
                hash: hash.to_string(),
                file: Arc::new(file),
                offset,
                len,
                meta,
                checked: false,
                version: None,
            };
            Ok(Ok((f, header)))
        })();
        match opened {
            Ok(Ok((mut f, header))) => {
                let mut guard = self.index();
                let index = &mut *guard;
                index.tick += 1;
                if let Some(e) = index.entries.get_mut(hash)
                    && Some(e.version) == version
                {
                    e.last_used = index.tick;
                    e.trust = Some(f.meta.trust);
                    e.header = Some(header);
                    f.checked = e.checked;
                    f.version = version;
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
    /// the index; the same stat tells that it is the file the header was
    /// read from. Anything else is [`Opening::Cold`]: the caller takes the
    /// blocking path, [`Store::open_entry`].
    pub(crate) fn open_hot(&self, hash: &str) -> Opening {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let (header, size, version) = {
            let index = self.index();
            match index.entries.get(hash) {
                Some(Entry {
                    checked: true,
                    header: Some(header),
                    size,
                    version,
                    ..
                }) => (header.clone(), *size, *version),
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
        let Ok(md) = file.metadata() else {
            return Opening::Cold;
        };
        if file_id(&md) != header.file {
            // Renamed over by a commit since the header was read: the
            // blocking path reads this file's own.
            return Opening::Cold;
        }
        let total = md.len();
        if total != size {
            return Opening::Damaged(file);
        }
        self.index().touch(hash, version);
        Opening::Hot(CachedFile {
            hash: hash.to_string(),
            file: Arc::new(file),
            offset: header.offset,
            len: total - header.offset,
            meta: header.meta,
            checked: true,
            version: Some(version),
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
            index.take(hash);
            self.damaged.count(damage);
        }
    }

    /// Notes that the bytes of `f` were found to hash to what they were
    /// committed with: the object is not hashed again in this process —
    /// unless a commit has replaced it since.
    pub(crate) fn mark_checked(&self, f: &CachedFile) {
        if let Some(e) = self.index().entries.get_mut(&f.hash)
            && Some(e.version) == f.version
        {
            e.checked = true;
        }
    }

    fn forget(&self, hash: &str) {
        self.index().take(hash);
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
        let md = tmp.as_file().metadata()?;
        let size = md.len();
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
            let entry = Entry {
                size,
                last_used: index.tick,
                validated: Some(Instant::now()),
                trust: Some(meta.trust),
                checked: true,
                header: Some(Header {
                    meta,
                    offset,
                    file: file_id(&md),
                }),
                version: index.next_version(),
            };
            // A new version: nothing read from the file it replaces — its
            // copy in memory included — is taken for this one.
            index.insert(hash, entry);
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
                if index.take(&h).is_some() {
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
                if let Some(e) = index.take(&h) {
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
    use bytes::Bytes;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// Commits `body` as the object of `key`, as a download does.
    fn commit(store: &Store, key: &str, body: &[u8], trust: Trust) -> u64 {
        let meta = Meta {
            key: key.into(),
            length: Some(body.len() as u64),
            sha256: Some(Sha256::digest(body).into()),
            trust,
            ..Meta::default()
        };
        let mut bytes = meta.encode();
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(body);
        let tmp = store.new_temp().expect("temp");
        std::fs::write(tmp.path(), &bytes).expect("write");
        store
            .commit(tmp, &hash_key(key), Arc::new(meta), offset)
            .expect("commit");
        offset
    }

    /// Opens the object and reads its body whole, as a response does.
    fn read(store: &Store, hash: &str) -> (CachedFile, InMemory) {
        let f = match store.open_hot(hash) {
            Opening::Hot(f) => f,
            _ => store.open_entry(hash).expect("opens"),
        };
        let body = crate::body::read_at(&f.file, f.offset, f.len).expect("reads");
        let copy = InMemory::new(f.meta.clone(), body);
        (f, copy)
    }

    fn cut(store: &Store, hash: &str, to: u64) {
        File::options()
            .write(true)
            .open(store.object_path(hash))
            .expect("open")
            .set_len(to)
            .expect("truncate");
    }

    /// What a response's look-up finds: the body from memory, or the disk.
    #[derive(Debug, PartialEq)]
    enum Found {
        Memory(Vec<u8>),
        Disk(Presence),
    }

    /// What a response's look-up finds for a path revalidated every
    /// minute (`repomd.xml`); packages are never revalidated and find the
    /// same, stale or not.
    fn look(store: &Store, hash: &str) -> Found {
        let max_age = Some(Duration::from_secs(60));
        match store.in_memory(hash, max_age) {
            Some(m) => Found::Memory(m.body().to_vec()),
            None => Found::Disk(store.presence(hash, max_age)),
        }
    }

    /// From a body of "hello" committed here, read once and kept in memory:
    /// what each event leaves for the next response.
    #[test]
    fn a_copy_in_memory_is_only_ever_of_the_object_it_was_read_from() {
        type Event = fn(&Store, &str);
        let table: [(&str, Event, Found); 11] = [
            (
                "read once, kept",
                |_, _| {},
                Found::Memory(b"hello".to_vec()),
            ),
            (
                "replaced by a commit (a respin)",
                |s, _| {
                    commit(s, "m/a.rpm", b"world", Trust::Final);
                },
                Found::Disk(Presence::Fresh),
            ),
            (
                "read before a commit, offered after it",
                |s, h| {
                    let (old, body) = read(s, h);
                    commit(s, "m/a.rpm", b"world", Trust::Final);
                    s.keep(&old, &body);
                },
                Found::Disk(Presence::Fresh),
            ),
            (
                "replaced, then the new one read",
                |s, h| {
                    commit(s, "m/a.rpm", b"world", Trust::Final);
                    let (f, body) = read(s, h);
                    s.keep(&f, &body);
                },
                Found::Memory(b"world".to_vec()),
            ),
            (
                "replaced by an unconfirmed one, then read",
                |s, h| {
                    commit(s, "m/a.rpm", b"world", Trust::Unconfirmed);
                    let (f, body) = read(s, h);
                    s.keep(&f, &body);
                },
                Found::Disk(Presence::Stale),
            ),
            (
                "evicted from disk",
                |s, _| s.set_max_bytes(0),
                Found::Disk(Presence::Missing),
            ),
            (
                "cut short on disk: the copy is what was committed",
                |s, h| cut(s, h, 10),
                Found::Memory(b"hello".to_vec()),
            ),
            (
                "cut short, then found damaged by a read of the disk",
                |s, h| {
                    cut(s, h, 10);
                    let file = File::open(s.object_path(h)).expect("open");
                    s.drop_damaged(h, &file, Damage::Size);
                },
                Found::Disk(Presence::Missing),
            ),
            (
                "removed (it failed `cache verify`)",
                |s, h| s.remove(h),
                Found::Disk(Presence::Missing),
            ),
            (
                "memory's budget cut to nothing",
                |s, _| s.set_memory_bytes(0),
                Found::Disk(Presence::Fresh),
            ),
            (
                "made stale, then confirmed by the mirror",
                |s, h| {
                    s.expire(h);
                    assert_eq!(look(s, h), Found::Disk(Presence::Stale));
                    s.mark_validated(h);
                },
                Found::Memory(b"hello".to_vec()),
            ),
        ];
        for (name, event, want) in table {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), MIB, MIB).expect("open");
            let hash = hash_key("m/a.rpm");
            commit(&store, "m/a.rpm", b"hello", Trust::Final);
            assert_eq!(look(&store, &hash), Found::Disk(Presence::Fresh), "{name}");
            let (f, body) = read(&store, &hash);
            store.keep(&f, &body);
            event(&store, &hash);
            assert_eq!(look(&store, &hash), want, "{name}");
            let (files, ..) = store.memory_usage();
            assert_eq!(files, u64::from(matches!(want, Found::Memory(_))), "{name}");
        }
    }

    /// Only a body checked in this process, final and of the committed
    /// size goes into memory.
    #[test]
    fn only_checked_final_whole_bodies_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hash = hash_key("m/a.rpm");
        let unconfirmed = hash_key("m/b.img");
        {
            let store = Store::open(dir.path(), MIB, MIB).expect("open");
            commit(&store, "m/a.rpm", b"hello", Trust::Final);
            commit(&store, "m/b.img", b"torn?", Trust::Unconfirmed);
            let (f, _) = read(&store, &hash);
            store.keep(
                &f,
                &InMemory::new(f.meta.clone(), Bytes::from_static(b"hell")),
            );
            assert_eq!(look(&store, &hash), Found::Disk(Presence::Fresh), "short");
            let (f, body) = read(&store, &unconfirmed);
            store.keep(&f, &body);
            assert_eq!(look(&store, &unconfirmed), Found::Disk(Presence::Stale));
        }
        // After a restart: not until its bytes are checked.
        let store = Store::open(dir.path(), MIB, MIB).expect("reopen");
        store.mark_validated(&hash);
        let (f, body) = read(&store, &hash);
        assert!(!f.checked);
        store.keep(&f, &body);
        assert_eq!(look(&store, &hash), Found::Disk(Presence::Fresh));
        store.mark_checked(&f);
        store.keep(&f, &body);
        assert_eq!(look(&store, &hash), Found::Memory(b"hello".to_vec()));
    }

    /// The window between a commit's rename and its index update: a hit
    /// that opens the new file by name must not pair it with the old
    /// header, even when the sizes agree.
    #[test]
    fn a_hot_open_never_pairs_a_header_with_another_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), MIB, MIB).expect("open");
        let hash = hash_key("m/a.rpm");
        commit(&store, "m/a.rpm", b"hello", Trust::Final);
        assert!(matches!(store.open_hot(&hash), Opening::Hot(_)));
        // Renamed in place, the index not yet told.
        let path = store.object_path(&hash);
        let other = path.with_extension("new");
        std::fs::copy(&path, &other).expect("copy");
        std::fs::rename(&other, &path).expect("rename");
        assert!(matches!(store.open_hot(&hash), Opening::Cold));
    }

    #[test]
    fn a_hit_opens_without_blocking_only_when_it_safely_can() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), MIB, MIB).expect("open");
        let hash = hash_key("m/a.rpm");
        let offset = commit(&store, "m/a.rpm", b"hello", Trust::Final);
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
        let store = Store::open(dir.path(), MIB, MIB).expect("reopen");
        assert_eq!(hot(&store), None);
        let f = store.open_entry(&hash).expect("opens");
        assert!(!f.checked);
        assert_eq!(hot(&store), None, "header known, bytes not checked yet");
        store.mark_checked(&f);
        assert_eq!(hot(&store), Some(5));

        // Cut short: the stat of the open descriptor tells.
        cut(&store, &hash, offset + 2);
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
