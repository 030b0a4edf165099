//! What the metadata that passes through teaches the cache: after a
//! `repomd.xml` or primary is committed, and from every whole `.treeinfo`,
//! the checksums of the files they name become known (`crate::known`);
//! after a restart the same is read back from the cached metadata.

use std::fs::File;
use std::io;
use std::sync::Arc;

use crate::known;
use crate::metadata;
use crate::path::RepoPath;
use crate::{Error, Inner};

use super::{body_reader, is_repomd, is_treeinfo};

pub(super) async fn blocking_repodata<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Repodata(format!("task: {e}"))))
}

/// After a commit: what the file says about others becomes known.
pub(super) async fn learn(
    inner: &Arc<Inner>,
    mirror: &str,
    path: &RepoPath,
    hash: &str,
    file: &Arc<File>,
    offset: u64,
    len: u64,
) {
    let (inner2, mirror2, path2, hash2, f) = (
        inner.clone(),
        mirror.to_string(),
        path.clone(),
        hash.to_string(),
        file.clone(),
    );
    let work = move || learn_file(&inner2, &mirror2, &path2, &hash2, &f, offset, len);
    if inner.known.primary(hash).is_some() {
        // Primary metadata can be large: its packages become known in the
        // background, the download is done.
        tokio::task::spawn_blocking(work);
    } else if is_repomd(path) {
        let _ = tokio::task::spawn_blocking(work).await;
    }
    // (`.treeinfo` was learnt before the commit decision, kept or not.)
}

pub(super) fn learn_file(
    inner: &Inner,
    mirror: &str,
    path: &RepoPath,
    hash: &str,
    file: &File,
    offset: u64,
    len: u64,
) {
    let result = (|| -> Result<(), Error> {
        if let Some(at) = inner.known.primary(hash) {
            let packages = metadata::parse_primary(body_reader(file, offset, len)?, &at.href)?;
            inner
                .known
                .learn_packages(&at.mirror, &at.prefix, &packages);
        } else if let Some(prefix) = known::repo_prefix(path, "repodata/repomd.xml")
            && is_repomd(path)
        {
            let records = metadata::parse_repomd(body_reader(file, offset, len)?)?;
            inner.known.learn_repomd(mirror, &prefix, &records);
        } else if is_treeinfo(path)
            && let Some(prefix) = known::repo_prefix(path, ".treeinfo")
        {
            let mut text = String::new();
            io::Read::read_to_string(&mut body_reader(file, offset, len)?, &mut text)?;
            let files = metadata::parse_treeinfo(&text)?;
            inner.known.learn_treeinfo(mirror, path, &prefix, &files);
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(key = %format!("{mirror}/{path}"), error = %e, "cached metadata could not be read");
    }
}

/// Rebuilds what the cached metadata says (checksums of repodata, packages,
/// images), e.g. after a restart. Blocking: it reads every cached file's
/// header once.
pub(crate) fn learn_from_cache(inner: &Inner) {
    let started = std::time::Instant::now();
    let mut metadata_files = Vec::new();
    for hash in inner.store.hashes() {
        let Some(f) = inner.store.open_entry(&hash) else {
            continue;
        };
        let Some((mirror, rest)) = f.meta.key.split_once('/') else {
            continue;
        };
        let Ok(path) = crate::path::normalize(rest) else {
            continue;
        };
        if is_repomd(&path) || is_treeinfo(&path) {
            metadata_files.push((mirror.to_string(), path, hash, f));
        }
    }
    let mut primaries = Vec::new();
    for (mirror, path, hash, f) in &metadata_files {
        learn_file(inner, mirror, path, hash, &f.file, f.offset, f.len);
        if is_repomd(path)
            && let Some(prefix) = known::repo_prefix(path, "repodata/repomd.xml")
        {
            primaries.push((mirror.clone(), prefix));
        }
    }
    for (mirror, prefix) in primaries {
        let Some(repomd) = known::join(&prefix, "repodata/repomd.xml") else {
            continue;
        };
        let Some(f) = inner
            .store
            .open_entry(&known::object_hash(&mirror, &repomd))
        else {
            continue;
        };
        let Ok(records) = body_reader(&f.file, f.offset, f.len)
            .map_err(Error::Io)
            .and_then(metadata::parse_repomd)
        else {
            continue;
        };
        for r in records.iter().filter(|r| r.kind == "primary") {
            let Some(path) = known::join(&prefix, &r.file.href) else {
                continue;
            };
            let hash = known::object_hash(&mirror, &path);
            if let Some(p) = inner.store.open_entry(&hash) {
                learn_file(inner, &mirror, &path, &hash, &p.file, p.offset, p.len);
            }
        }
    }
    if !metadata_files.is_empty() {
        tracing::info!(
            files = metadata_files.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "checksums read from the cached metadata"
        );
    }
}
