//! The table of downloads in progress: the coalescing lock, in the manner
//! of pingora-cache's `lock.rs`. The first request to miss a file takes a
//! [`Permit`] and starts the one download; everyone else joins it and
//! follows its [`Progress`]. The permit's `Drop` is what keeps the table
//! honest: a download that ends any way at all — finished, failed, or its
//! task panicked or was cancelled at shutdown — leaves the table, and its
//! followers see an end rather than waiting forever, so the next request
//! starts a fresh download.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::Error;
use crate::store::Meta;

/// What followers of a download see.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    Connecting,
    /// The mirror confirmed the cached copy.
    NotModified,
    /// The cached copy stands while a new generation of the repository's
    /// metadata is fetched and checked behind it.
    Cached,
    Body(BodyState),
    /// It failed before any body arrived.
    Failed(Arc<Error>),
}

/// A body being written to a temp file.
#[derive(Debug, Clone)]
pub(crate) struct BodyState {
    pub(crate) file: Arc<File>,
    /// Where the body starts in `file` (after the stored headers).
    pub(crate) offset: u64,
    pub(crate) meta: Arc<Meta>,
    pub(crate) expected: Option<u64>,
    /// Body bytes on disk so far.
    pub(crate) written: u64,
    pub(crate) end: End,
}

#[derive(Debug, Clone)]
pub(crate) enum End {
    Open,
    /// Verified and committed (or served uncached): the bytes are final.
    Complete,
    Aborted(Arc<Error>),
}

type Table = Arc<Mutex<HashMap<String, watch::Receiver<Progress>>>>;

#[derive(Debug, Default)]
pub(crate) struct Inflight {
    table: Table,
}

impl Inflight {
    /// Joins the download of `hash`, or hands the caller the vacant slot —
    /// with the table locked, so a cache lookup made while holding it
    /// cannot race a commit.
    pub(crate) fn claim<R>(
        &self,
        hash: &str,
        vacant: impl FnOnce(Slot<'_>) -> R,
    ) -> Result<watch::Receiver<Progress>, R> {
        let mut map = lock(&self.table);
        if let Some(rx) = map.get(hash) {
            return Ok(rx.clone());
        }
        Err(vacant(Slot {
            map: &mut map,
            table: &self.table,
            hash,
        }))
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.table).len()
    }
}

/// The vacant entry of one file, under the table's lock.
pub(crate) struct Slot<'a> {
    map: &'a mut HashMap<String, watch::Receiver<Progress>>,
    table: &'a Table,
    hash: &'a str,
}

impl Slot<'_> {
    /// Starts the download: the caller's task owns the permit.
    pub(crate) fn lead(self) -> (Permit, watch::Receiver<Progress>) {
        let (tx, rx) = watch::channel(Progress::Connecting);
        self.map.insert(self.hash.to_owned(), rx.clone());
        let permit = Permit {
            table: self.table.clone(),
            hash: self.hash.to_owned(),
            tx,
            finished: false,
        };
        (permit, rx)
    }
}

/// The right and duty to run one download.
#[derive(Debug)]
pub(crate) struct Permit {
    table: Table,
    hash: String,
    tx: watch::Sender<Progress>,
    finished: bool,
}

impl Permit {
    pub(crate) fn send_replace(&self, progress: Progress) {
        self.tx.send_replace(progress);
    }

    pub(crate) fn send_modify(&self, f: impl FnOnce(&mut Progress)) {
        self.tx.send_modify(f);
    }

    /// Ends the download. The entry leaves the table first — the file is
    /// committed (or not) by now, so new requests find the index — then
    /// followers see the final state.
    pub(crate) fn finish(mut self, last: impl FnOnce(&mut Progress)) {
        lock(&self.table).remove(&self.hash);
        self.tx.send_modify(last);
        self.finished = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        lock(&self.table).remove(&self.hash);
        let e = Arc::new(Error::UpstreamBody(
            "the download stopped unexpectedly".into(),
        ));
        self.tx.send_modify(|p| match p {
            Progress::Body(b) if !matches!(b.end, End::Complete) => b.end = End::Aborted(e),
            Progress::Body(_) => {}
            other => *other = Progress::Failed(e),
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under this lock is one insert or remove: a panic while
    // holding it leaves the map whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How far a followed download has come.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) written: u64,
    pub(crate) end: End,
}

/// Waits until the download has more than `pos` body bytes on disk, or has
/// ended. One function for every reader of a live download.
pub(crate) async fn wait_past(rx: &mut watch::Receiver<Progress>, pos: u64) -> Seen {
    loop {
        let seen = match &*rx.borrow_and_update() {
            Progress::Body(b) => Seen {
                written: b.written,
                end: b.end.clone(),
            },
            // Not a body (any more): nothing to read.
            Progress::Failed(e) => Seen {
                written: 0,
                end: End::Aborted(e.clone()),
            },
            Progress::Connecting | Progress::NotModified | Progress::Cached => Seen {
                written: 0,
                end: End::Open,
            },
        };
        if seen.written > pos || !matches!(seen.end, End::Open) {
            return seen;
        }
        if rx.changed().await.is_err() {
            // The permit always publishes an end before the sender goes,
            // so this is the last state; report it as it is.
            let last = match &*rx.borrow() {
                Progress::Body(b) => b.end.clone(),
                Progress::Failed(e) => End::Aborted(e.clone()),
                _ => End::Aborted(Arc::new(Error::UpstreamBody("download vanished".into()))),
            };
            return Seen {
                written: seen.written,
                end: last,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_download_leaves_the_table_and_its_followers_see_an_end() {
        let inflight = Inflight::default();
        let (permit, mut follower) = match inflight.claim("h", |slot| slot.lead()) {
            Err(lead) => lead,
            Ok(_) => panic!("the table was empty"),
        };
        assert_eq!(inflight.len(), 1);
        assert!(inflight.claim("h", |_| ()).is_ok(), "a second miss joins");
        let job = tokio::spawn(async move {
            let _permit = permit;
            panic!("a download task panics on purpose");
        });
        assert!(job.await.is_err(), "the task panicked");
        assert_eq!(inflight.len(), 0, "the entry left with the permit");
        let seen = wait_past(&mut follower, 0).await;
        assert!(matches!(seen.end, End::Aborted(_)), "{seen:?}");
        assert!(
            matches!(inflight.claim("h", |_| ()), Err(())),
            "the next request finds the slot vacant and may start afresh"
        );
    }

    #[tokio::test]
    async fn finish_removes_the_entry_before_followers_see_the_end() {
        let inflight = Inflight::default();
        let Err((permit, mut follower)) = inflight.claim("h", |slot| slot.lead()) else {
            panic!("the table was empty");
        };
        permit.finish(|p| *p = Progress::NotModified);
        assert_eq!(inflight.len(), 0);
        assert!(follower.changed().await.is_ok());
        assert!(matches!(*follower.borrow(), Progress::NotModified));
    }
}
