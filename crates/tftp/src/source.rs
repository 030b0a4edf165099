//! What the server serves: a root directory plus files the daemon
//! generates (per-host boot scripts) without touching the disk.

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The files a server offers. The daemon implements it over its profile
/// snapshot; [`DirSource`] serves a directory alone.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Directory whose regular files are served, read-only.
    fn root(&self) -> &Path;

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
    fn root(&self) -> &Path {
        &self.root
    }
}
