//! What the server serves: a root directory plus files the daemon
//! generates (per-host boot scripts) without touching the disk.

use std::path::PathBuf;

use bytes::Bytes;

/// The files a server offers. The daemon implements it over its profile
/// snapshot; [`DirSource`] serves a directory alone.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Directory whose regular files are served, read-only. Asked once per
    /// request and returned owned, so an implementation over a snapshot
    /// that a reload swaps can hand out its current value.
    fn root(&self) -> PathBuf;

    /// A generated file for `path`, which is already normalised (see
    /// [`crate::normalize`]: relative, `/`-separated, no leading `/`). It
    /// shadows a file of the same name under [`Source::root`].
    fn generated(&self, path: &str) -> Option<Bytes> {
        let _ = path;
        None
    }
}

/// A [`Source`] that serves one directory and generates nothing.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl Source for DirSource {
    fn root(&self) -> PathBuf {
        self.root.clone()
    }
}
