//! Small files held in memory and shared by every transfer that asks for
//! them. A rack powering on sends hundreds of requests for the same boot
//! loader (70 KiB – 1 MiB) within a second; each would otherwise read its own
//! copy. An entry is only served while the file on disk still has the
//! identity it was read with, so an edited or replaced file is read anew.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// What tells two versions of a file apart without reading it. Editors and
/// installers replace files by rename (new inode); an in-place rewrite
/// changes `mtime` and `ctime`, to the nanosecond on the filesystems a
/// root lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    /// The part of the file that is served.
    range: (u64, u64),
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub(crate) fn of(meta: &Metadata, offset: u64, len: u64) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            range: (offset, len),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: FileId,
    bytes: Bytes,
}

#[derive(Debug)]
struct Inner {
    entries: LruCache<PathBuf, Entry>,
    bytes: usize,
}

/// Files up to `max_file` bytes, `max_total` bytes in all; the least
/// recently served go first.
#[derive(Debug)]
pub(crate) struct FileCache {
    inner: Mutex<Inner>,
    max_file: u64,
    max_total: usize,
}

impl FileCache {
    pub(crate) fn new(max_file: u64, max_total: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_file,
            max_total,
        }
    }

    /// Whether a file of `size` bytes is kept in memory at all.
    pub(crate) fn admits(&self, size: u64) -> bool {
        size <= self.max_file && usize::try_from(size).is_ok_and(|s| s <= self.max_total)
    }

    /// `size` bytes from `offset` of the open `file` served as `path`: from
    /// memory if this version was read before, else read now and kept.
    /// Blocking.
    pub(crate) fn get_or_read(
        &self,
        path: &Path,
        file: &File,
        offset: u64,
        size: u64,
    ) -> io::Result<Bytes> {
        let id = FileId::of(&file.metadata()?, offset, size);
        if let Some(bytes) = self.lookup(path, id) {
            return Ok(bytes);
        }
        // Read without the lock: a cold file on a slow disk must not hold up
        // requests for other files. Two transfers that miss together both
        // read; the second insert keeps the first copy.
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        // A file that shrinks while being read fails here (UnexpectedEof)
        // rather than being kept short.
        file.read_exact_at(&mut buf, offset)?;
        Ok(self.insert(path, id, Bytes::from(buf)))
    }

    fn lookup(&self, path: &Path, id: FileId) -> Option<Bytes> {
        let mut inner = self.lock();
        match inner.entries.get(path) {
            Some(entry) if entry.id == id => Some(entry.bytes.clone()),
            Some(_) => {
                // Stale: this path now names another version of the file.
                if let Some(old) = inner.entries.pop(path) {
                    inner.bytes -= old.bytes.len();
                }
                None
            }
            None => None,
        }
    }

    fn insert(&self, path: &Path, id: FileId, bytes: Bytes) -> Bytes {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get(path)
            && entry.id == id
        {
            return entry.bytes.clone();
        }
        inner.bytes += bytes.len();
        if let Some(old) = inner.entries.put(
            path.to_owned(),
            Entry {
                id,
                bytes: bytes.clone(),
            },
        ) {
            inner.bytes -= old.bytes.len();
        }
        while inner.bytes > self.max_total {
            let Some((_, old)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= old.bytes.len();
        }
        bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every update
        // is a few statements with no early return.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(cache: &FileCache, path: &Path) -> Bytes {
        let file = File::open(path).expect("open");
        let size = file.metadata().expect("meta").len();
        cache.get_or_read(path, &file, 0, size).expect("read")
    }

    #[test]
    fn serves_one_copy_until_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("undionly.kpxe");
        std::fs::write(&path, b"first").expect("write");
        let cache = FileCache::new(1 << 20, 4 << 20);
        let a = read(&cache, &path);
        let b = read(&cache, &path);
        assert_eq!(&a[..], b"first");
        assert_eq!(a.as_ptr(), b.as_ptr(), "second transfer shares the copy");

        // Same size, rewritten in place: mtime/ctime differ.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"secnd").expect("rewrite");
        assert_eq!(&read(&cache, &path)[..], b"secnd");

        // Replaced by rename, as editors and installers do.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"third").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(&read(&cache, &path)[..], b"third");
        assert_eq!(cache.held(), (1, 5));
    }

    #[test]
    fn memory_stays_bounded_and_the_least_recent_goes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = FileCache::new(100, 250);
        let paths: Vec<_> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, [i as u8; 100]).expect("write");
                p
            })
            .collect();
        let first = read(&cache, &paths[0]);
        read(&cache, &paths[1]);
        // Touch f0 so f1 is the least recently used when f2 arrives.
        assert_eq!(read(&cache, &paths[0]).as_ptr(), first.as_ptr());
        read(&cache, &paths[2]);
        assert_eq!(cache.held(), (2, 200));
        assert_eq!(read(&cache, &paths[0]).as_ptr(), first.as_ptr(), "kept");
        assert!(cache.admits(100));
        assert!(!cache.admits(101));
    }
}
