//! Whether a cached object is still what was committed, checked where it
//! is opened: the store compares sizes on every open; here an object not
//! yet checked in this process is hashed against its recorded sha256 —
//! before the first serve of a small one, or when a reader outside HTTP
//! takes it whole (`crate::open`); a large one is checked while its first
//! whole serve streams (`respond`).

use std::io;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::Inner;
use crate::store::{CachedFile, Damage, Meta};

use super::body_reader;

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
        if !f.checked && f.len <= CHECK_BEFORE_SERVING && !check_whole(&inner2, &hash, &f) {
            return None;
        }
        Some(f)
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
pub(crate) fn check_whole(inner: &Inner, hash: &str, f: &CachedFile) -> bool {
    let Some(want) = expected_digest(inner, hash, &f.meta) else {
        inner.store.mark_checked(hash);
        return true;
    };
    match body_sha256(f) {
        Ok(got) if got == want => {
            inner.store.mark_checked(hash);
            true
        }
        Ok(_) => {
            inner.store.drop_damaged(hash, &f.file, Damage::Checksum);
            false
        }
        Err(e) => {
            tracing::warn!(object = hash, error = %e, "cached file could not be read");
            false
        }
    }
}
