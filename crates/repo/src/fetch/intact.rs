//! Whether a cached object is still what was committed, checked where it
//! is opened: the store compares sizes on every open; here an object not
//! yet checked in this process is hashed against its recorded sha256 —
//! before the first serve of a small one (the very bytes then sent, and
//! kept in memory), or when a reader outside HTTP takes it whole
//! (`crate::open`); a large one is checked while its first whole serve
//! streams (`respond`).

use std::io;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::Inner;
use crate::body;
use crate::memory::{self, InMemory};
use crate::store::{CachedFile, Damage, Meta};

use super::{Found, body_reader};

/// Objects up to this size are hashed before their first serve in this
/// process — one read, which the serve then finds in the page cache; larger
/// ones are hashed while their first whole serve streams (see `respond`).
const CHECK_BEFORE_SERVING: u64 = 1 << 20;

/// Opens a committed object (on the blocking pool); a small one not yet
/// checked in this process is checked against its recorded sha256 first.
pub(super) async fn open_entry(inner: &Arc<Inner>, hash: &str) -> Option<CachedFile> {
    let inner2 = inner.clone();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || {
        let f = inner2.store.open_entry(&hash)?;
        if !f.checked && f.len <= CHECK_BEFORE_SERVING && !check_whole(&inner2, &f) {
            return None;
        }
        Some(f)
    })
    .await
    .ok()
    .flatten()
}

/// [`open_entry`] for a response: a small body is read whole, checked if
/// it was not yet in this process (the bytes read are the bytes hashed and
/// sent), and kept in memory when it may be.
pub(super) async fn load(inner: &Arc<Inner>, hash: &str) -> Option<Found> {
    let inner = inner.clone();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || {
        let f = inner.store.open_entry(&hash)?;
        if f.len > memory::MAX_EACH {
            if !f.checked && f.len <= CHECK_BEFORE_SERVING && !check_whole(&inner, &f) {
                return None;
            }
            return Some(Found::File(f));
        }
        let body = match body::read_at(&f.file, f.offset, f.len) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(object = hash, error = %e, "cached file could not be read");
                return None;
            }
        };
        if !f.checked && !judge(&inner, &f, || Ok(Sha256::digest(&body).into())) {
            return None;
        }
        let copy = InMemory::new(f.meta.clone(), body);
        inner.store.keep(&f, &copy);
        Some(Found::InMemory(copy))
    })
    .await
    .ok()
    .flatten()
}

/// The sha256 a cached body must have: the one recorded at its commit, or
/// for an object written before those were recorded, what the metadata
/// says.
pub(crate) fn expected_digest(inner: &Inner, hash: &str, meta: &Meta) -> Option<[u8; 32]> {
    meta.sha256
        .or_else(|| inner.known.expected(hash).map(|e| e.sha256))
}

/// The sha256 of a cached body (blocking).
pub(crate) fn body_sha256(f: &CachedFile) -> io::Result<[u8; 32]> {
    let mut r = body_reader(&f.file, f.offset, f.len)?;
    let mut h = Sha256::new();
    io::copy(&mut r, &mut h)?;
    Ok(h.finalize().into())
}

/// Hashes a cached body (blocking) and compares it with what it must be:
/// a match is remembered, a mismatch drops the object. Whether it may be
/// served.
pub(crate) fn check_whole(inner: &Inner, f: &CachedFile) -> bool {
    judge(inner, f, || body_sha256(f))
}

/// Compares the sha256 `digest` gives for the body of `f` with what it
/// must be (not computed when nothing says): a match is remembered, a
/// mismatch drops the object. Whether it may be served.
fn judge(inner: &Inner, f: &CachedFile, digest: impl FnOnce() -> io::Result<[u8; 32]>) -> bool {
    let Some(want) = expected_digest(inner, &f.hash, &f.meta) else {
        inner.store.mark_checked(f);
        return true;
    };
    match digest() {
        Ok(got) if got == want => {
            inner.store.mark_checked(f);
            true
        }
        Ok(_) => {
            inner.store.drop_damaged(&f.hash, &f.file, Damage::Checksum);
            false
        }
        Err(e) => {
            tracing::warn!(object = f.hash, error = %e, "cached file could not be read");
            false
        }
    }
}
