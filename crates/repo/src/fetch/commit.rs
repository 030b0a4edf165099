//! The commit decision, a pure function: given what a finished download
//! saw — its length against Content-Length, its checksum against the one
//! the metadata gives, what the mirror said about the file before and
//! after — whether it is kept as final, kept unconfirmed, served but not
//! kept, or aborted for its clients. The download task gathers the facts
//! (`download`, `revalidate`) and acts on the outcome; nothing here does
//! I/O.

use std::time::Duration;

/// A file with no checksum whose `Last-Modified` is less than this before
/// the response's `Date` is being written right now (mirrors are not
/// atomic: nginx sends the size of the moment): it is served, not even
/// kept. An older one may still be mid-write too — a writer may pause for
/// any length of time — which is why no such file is ever kept as final
/// (see [`crate::store::Trust::Unconfirmed`]); this only spares a disk write of a file
/// that is visibly changing.
const STILL_WRITING: Duration = Duration::from_secs(10);

/// How a downloaded body compares with the checksum the metadata gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksum {
    Matches,
    /// Also after `.treeinfo` was read again (a respin).
    Mismatch,
    /// No metadata gives one (or the body was not whole, so it was not asked).
    Unknown,
}

/// What a download saw, gathered by the task that ran it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// Body bytes received, and the Content-Length announced, if any.
    pub(crate) received: u64,
    pub(crate) announced: Option<u64>,
    pub(crate) checksum: Checksum,
    /// A `repomd.xml` whose every record was fetched and verified: it
    /// parsed whole (a torn XML document does not), and what it names is
    /// checked by checksum.
    pub(crate) records_verified: bool,
    /// How long before the response the mirror says the file was last
    /// written (`Date` − `Last-Modified`).
    pub(crate) modified_ago: Option<Duration>,
    /// The mirror sent `Last-Modified`: the body is a file on its disk,
    /// which a writer may rewrite in place.
    pub(crate) last_modified: bool,
    /// A HEAD after the download disagreed with the GET (`Some(true)`) or
    /// agreed; `None` when it was not asked or not answered.
    pub(crate) changed: Option<bool>,
    /// The body fits the cache's size limit at all.
    pub(crate) fits: bool,
    pub(crate) disk_full: bool,
}

/// What becomes of a finished download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Whole by its checksum (or by the mirror's word, with nothing to
    /// doubt it): kept as final.
    Commit,
    /// Whole by its framing, but only the mirror vouches for it and a
    /// writer may still be rewriting it: kept, confirmed with the mirror
    /// before every serve.
    KeepUnconfirmed,
    /// Its clients get it whole; it is not kept, so the next request
    /// fetches it again.
    ServeButDontKeep(NotKept),
    /// Its clients see the transfer aborted; nothing is kept.
    Abort(Refused),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotKept {
    StillBeingWritten,
    Changed,
    TooLarge,
    DiskFull,
}

impl NotKept {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotKept::StillBeingWritten => {
                "modified on the mirror seconds ago: it may still be being written"
            }
            NotKept::Changed => "changed on the mirror during the download (a respin in progress)",
            NotKept::TooLarge => "larger than the whole cache",
            NotKept::DiskFull => "the cache's disk is full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Fewer (or more) bytes than Content-Length announced.
    Length,
    /// The bytes are not what the metadata says they must be.
    Checksum,
}

/// The commit decision: whole, verified, settled — or why not.
pub(crate) fn decide(seen: &Seen) -> Outcome {
    if seen.announced.is_some_and(|n| n != seen.received) {
        return Outcome::Abort(Refused::Length);
    }
    if seen.checksum == Checksum::Mismatch {
        return Outcome::Abort(Refused::Checksum);
    }
    let vouched = seen.checksum == Checksum::Matches || seen.records_verified;
    if !vouched {
        if seen.changed == Some(true) {
            return Outcome::ServeButDontKeep(NotKept::Changed);
        }
        if seen.modified_ago.is_some_and(|age| age < STILL_WRITING) {
            return Outcome::ServeButDontKeep(NotKept::StillBeingWritten);
        }
    }
    if seen.disk_full {
        return Outcome::ServeButDontKeep(NotKept::DiskFull);
    }
    if !seen.fits {
        return Outcome::ServeButDontKeep(NotKept::TooLarge);
    }
    if vouched || !seen.last_modified {
        // Without Last-Modified the body is not a file the mirror says it
        // wrote at some time (a generated answer, or a server that tells
        // nothing): there is no in-place writer to wait for.
        Outcome::Commit
    } else {
        Outcome::KeepUnconfirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole body of a file the mirror last wrote an hour ago, no
    /// checksum known, unchanged by the HEAD after it, room in the cache.
    fn settled() -> Seen {
        Seen {
            received: 1000,
            announced: Some(1000),
            checksum: Checksum::Unknown,
            records_verified: false,
            modified_ago: Some(Duration::from_secs(3600)),
            last_modified: true,
            changed: Some(false),
            fits: true,
            disk_full: false,
        }
    }

    #[test]
    fn every_row() {
        use Outcome::*;
        fn secs(n: u64) -> Option<Duration> {
            Some(Duration::from_secs(n))
        }
        let row = |f: fn(&mut Seen)| {
            let mut s = settled();
            f(&mut s);
            s
        };
        let table: [(&str, Seen, Outcome); 22] = [
            // Length first: nothing else matters for a body cut short.
            (
                "short of Content-Length",
                row(|s| s.received = 999),
                Abort(Refused::Length),
            ),
            (
                "past Content-Length",
                row(|s| s.received = 1001),
                Abort(Refused::Length),
            ),
            (
                "short, and its checksum cannot match",
                row(|s| {
                    s.received = 10;
                    s.checksum = Checksum::Mismatch;
                }),
                Abort(Refused::Length),
            ),
            // A checksum decides for the files that have one.
            (
                "checksum matches",
                row(|s| s.checksum = Checksum::Matches),
                Commit,
            ),
            (
                "chunked, checksum matches",
                row(|s| {
                    s.announced = None;
                    s.checksum = Checksum::Matches;
                }),
                Commit,
            ),
            (
                "checksum matches, written a second ago",
                row(|s| {
                    s.checksum = Checksum::Matches;
                    s.modified_ago = secs(1);
                }),
                Commit,
            ),
            (
                "checksum matches, HEAD says changed since",
                row(|s| {
                    s.checksum = Checksum::Matches;
                    s.changed = Some(true);
                }),
                Commit,
            ),
            (
                "checksum mismatch",
                row(|s| s.checksum = Checksum::Mismatch),
                Abort(Refused::Checksum),
            ),
            (
                "repomd.xml whose records all verified",
                row(|s| {
                    s.records_verified = true;
                    s.modified_ago = secs(1);
                }),
                Commit,
            ),
            // No checksum anywhere: the mirror's word, never final.
            (
                "no checksum, changed during the download",
                row(|s| s.changed = Some(true)),
                ServeButDontKeep(NotKept::Changed),
            ),
            (
                "no checksum, written two seconds ago",
                row(|s| s.modified_ago = secs(2)),
                ServeButDontKeep(NotKept::StillBeingWritten),
            ),
            (
                "no checksum, written just under the window",
                row(|s| s.modified_ago = Some(STILL_WRITING - Duration::from_millis(1))),
                ServeButDontKeep(NotKept::StillBeingWritten),
            ),
            (
                "no checksum, written exactly the window ago",
                row(|s| s.modified_ago = Some(STILL_WRITING)),
                KeepUnconfirmed,
            ),
            (
                "no checksum, a writer paused an hour",
                settled(),
                KeepUnconfirmed,
            ),
            (
                "no checksum, Last-Modified but no Date",
                row(|s| s.modified_ago = None),
                KeepUnconfirmed,
            ),
            (
                "no checksum, HEAD not answered",
                row(|s| s.changed = None),
                KeepUnconfirmed,
            ),
            (
                "no checksum, no Last-Modified (generated, or a server that says nothing)",
                row(|s| {
                    s.last_modified = false;
                    s.modified_ago = None;
                    s.changed = None;
                }),
                Commit,
            ),
            // Room in the cache.
            (
                "checksum matches, disk full",
                row(|s| {
                    s.checksum = Checksum::Matches;
                    s.disk_full = true;
                }),
                ServeButDontKeep(NotKept::DiskFull),
            ),
            (
                "checksum matches, larger than the cache",
                row(|s| {
                    s.checksum = Checksum::Matches;
                    s.fits = false;
                }),
                ServeButDontKeep(NotKept::TooLarge),
            ),
            (
                "no checksum, disk full",
                row(|s| s.disk_full = true),
                ServeButDontKeep(NotKept::DiskFull),
            ),
            (
                "no checksum, larger than the cache",
                row(|s| s.fits = false),
                ServeButDontKeep(NotKept::TooLarge),
            ),
            (
                "changed during the download and the disk full: the change is the reason",
                row(|s| {
                    s.changed = Some(true);
                    s.disk_full = true;
                }),
                ServeButDontKeep(NotKept::Changed),
            ),
        ];
        for (name, seen, want) in table {
            assert_eq!(decide(&seen), want, "{name}: {seen:?}");
        }
    }
}
