//! Responses from what `obtain` found: a committed file (304 to a matching
//! conditional, a Range, or the whole file — the first whole serve in a
//! process checked as it streams), a download still arriving (followed by
//! a pump that holds the last byte back until the commit), or the mirror
//! itself (`pass`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use crate::body::{self, Body, Msg};
use crate::inflight::{End, Progress, wait_past};
use crate::serve::{Span, Want, not_modified, span};
use crate::store::{Damage, Meta};
use crate::{CacheStatus, Error, Inner};

use super::{Source, blocking, expected_digest};

/// Bytes read from disk per body frame; with the channel depth this bounds
/// memory per client.
const CHUNK: u64 = 512 * 1024;

/// A cached body up to this size is sent as one frame when the page cache
/// holds it all (most packages of an install and every repodata record
/// but primary).
const SMALL: u64 = 256 * 1024;

/// Builds the response for a source and starts the pump that feeds its body.
pub(crate) async fn respond(
    inner: &Arc<Inner>,
    source: Source,
    req: &HeaderMap,
    want: Want,
    stall: Duration,
) -> Result<Response<Body>, Error> {
    match source {
        Source::Cached(f, status) => {
            let m = &f.meta;
            if not_modified(req, m.etag.as_deref(), m.last_modified.as_deref()) {
                let (resp, _) = head(m, None, Span::Whole, status);
                return resp
                    .status(StatusCode::NOT_MODIFIED)
                    .body(body::empty())
                    .map_err(|e| Error::Io(io::Error::other(e)));
            }
            let sp = span(req, f.len, m.etag.as_deref(), m.last_modified.as_deref());
            let (resp, range) = head(m, Some(f.len), sp, status);
            // The first whole serve of an object not yet checked in this
            // process checks it as it streams: the last bytes go out only
            // once they hash to what was committed.
            let check = match (sp, f.checked) {
                (Span::Whole, false) => expected_digest(inner, &f.hash, m).map(|want| {
                    let (inner, hash, file) = (inner.clone(), f.hash.clone(), f.file.clone());
                    body::Check::new(want, move |whole| {
                        if whole {
                            inner.store.mark_checked(&hash);
                        } else {
                            drop(tokio::task::spawn_blocking(move || {
                                inner.store.drop_damaged(&hash, &file, Damage::Checksum)
                            }));
                        }
                    })
                }),
                _ => None,
            };
            Ok(finish(resp, range, want, |start, end| {
                let len = end.unwrap_or(f.len) - start;
                // A small file already checked goes out as one frame, read
                // from the page cache on the runtime.
                if check.is_none()
                    && len <= SMALL
                    && let Some(b) = body::read_cached(&f.file, f.offset + start, len)
                        .filter(|b| b.len() as u64 == len)
                {
                    inner.counters.served_bytes.inc_by(len);
                    return body::full(b);
                }
                body::file(
                    f.file.clone(),
                    f.offset + start,
                    end.unwrap_or(f.len) - start,
                    CHUNK,
                    check,
                    inner.counters.served_bytes.clone(),
                )
            }))
        }
        Source::Inflight(mut rx, status) => {
            let Progress::Body(b) = rx.borrow_and_update().clone() else {
                return Err(Error::UpstreamBody("download vanished".into()));
            };
            let sp = match b.expected {
                Some(len) => span(
                    req,
                    len,
                    b.meta.etag.as_deref(),
                    b.meta.last_modified.as_deref(),
                ),
                None => Span::Whole,
            };
            let (resp, range) = head(&b.meta, b.expected, sp, status);
            Ok(finish(resp, range, want, |start, end| {
                let (tx, body) = body::channel();
                let served = inner.counters.served_bytes.clone();
                tokio::spawn(pump(b.file, b.offset, start, end, rx, tx, served));
                body
            }))
        }
        Source::Pass(upstream) => super::pass::respond(inner, upstream, want, stall),
    }
}

/// Status line and headers for a file of `len` bytes (unknown while a
/// chunked download runs) and the byte range to send.
fn head(
    meta: &Meta,
    len: Option<u64>,
    sp: Span,
    status: CacheStatus,
) -> (http::response::Builder, Option<(u64, Option<u64>)>) {
    let mut r = Response::builder()
        .header(
            header::CONTENT_TYPE,
            meta.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        )
        .header("x-kickstand-cache", status.as_str());
    for (name, v) in [
        (header::ETAG, &meta.etag),
        (header::LAST_MODIFIED, &meta.last_modified),
    ] {
        if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            r = r.header(name, v);
        }
    }
    let Some(len) = len else {
        return (r.status(StatusCode::OK), Some((0, None)));
    };
    r = r.header(header::ACCEPT_RANGES, "bytes");
    match sp {
        Span::Whole => (
            r.status(StatusCode::OK).header(header::CONTENT_LENGTH, len),
            Some((0, Some(len))),
        ),
        Span::Part { start, end } => (
            r.status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, end - start + 1)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
            Some((start, Some(end + 1))),
        ),
        Span::Unsatisfiable => (
            r.status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_LENGTH, 0)
                .header(header::CONTENT_RANGE, format!("bytes */{len}")),
            None,
        ),
    }
}

/// The response with its body: `body(start, end)` makes the body of the
/// range `head` chose, when the request wants one.
fn finish(
    resp: http::response::Builder,
    range: Option<(u64, Option<u64>)>,
    want: Want,
    body: impl FnOnce(u64, Option<u64>) -> Body,
) -> Response<Body> {
    let body = match (range, want) {
        (Some((start, end)), Want::Body) => body(start, end),
        _ => body::empty(),
    };
    resp.body(body)
        .unwrap_or_else(|e| crate::error_response(&Error::Io(io::Error::other(e))))
}

/// Copies `[start, end)` of a download's body (at `offset` in its temp
/// file) into the client's channel, waiting for the download to publish
/// more.
async fn pump(
    file: Arc<File>,
    offset: u64,
    start: u64,
    end: Option<u64>,
    mut rx: watch::Receiver<Progress>,
    tx: mpsc::Sender<Msg>,
    served: Counter,
) {
    let mut pos = start;
    // Wait until the download has more than this many bytes (or ended).
    let mut need = pos;
    loop {
        let seen = wait_past(&mut rx, need).await;
        let complete = matches!(seen.end, End::Complete);
        let mut limit = end.map_or(seen.written, |e| e.min(seen.written));
        // With Content-Length framing a client that has every byte sees a
        // clean end whatever happens next, so the last byte waits until the
        // fetch has verified and committed the file: a late failure
        // (checksum, trailing garbage) still reaches the client as an abort.
        if let Some(e) = end
            && !complete
        {
            limit = limit.min(e.saturating_sub(1));
        }
        if pos < limit {
            let n = (limit - pos).min(CHUNK) as usize;
            let f = file.clone();
            let at = offset + pos;
            // The temp file is shared by every client streaming it:
            // positioned reads only.
            let read = blocking(move || {
                let mut buf = vec![0; n];
                f.read_exact_at(&mut buf, at)?;
                Ok(Bytes::from(buf))
            })
            .await;
            let msg = match read {
                Ok(b) => Msg::Data(b),
                Err(e) => {
                    let _ = tx.send(Msg::Err(e)).await;
                    return;
                }
            };
            if tx.send(msg).await.is_err() {
                return; // client went away
            }
            served.inc_by(n as u64);
            pos += n as u64;
            need = pos;
            continue;
        }
        match seen.end {
            End::Complete => {
                let _ = tx.send(Msg::End).await;
                return;
            }
            End::Aborted(e) => {
                let _ = tx.send(Msg::Err(io::Error::other(e.to_string()))).await;
                return;
            }
            // Everything on disk is sent (or held back): wait for more.
            End::Open => need = seen.written,
        }
    }
}
