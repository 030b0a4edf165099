//! Responses from what `obtain` found: a small body in memory or a
//! committed file (304 to a matching conditional, a Range, or the whole
//! file — the first whole serve of a large file in a process checked as it
//! streams), a download still arriving (followed by a pump that holds the
//! last byte back until the commit), or the mirror itself (`pass`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
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

const X_CACHE: HeaderName = HeaderName::from_static("x-kickstand-cache");

/// A response's status line and headers.
type Lines = (StatusCode, HeaderMap);

/// Body bytes `[start, end)` to send (`end` unknown while a chunked
/// download runs), if any.
type Part = Option<(u64, Option<u64>)>;

/// The headers every response of one body carries, made once: a copy in
/// memory keeps them, so a hit from memory parses and allocates none of
/// them again.
#[derive(Debug)]
pub(crate) struct Head {
    content_type: HeaderValue,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    /// The body's length (unknown while a chunked download runs), and it
    /// as a Content-Length.
    len: Option<(u64, HeaderValue)>,
}

impl Head {
    pub(crate) fn new(meta: &Meta, len: Option<u64>) -> Head {
        // The mirror's values went through hyper's parser, and the header
        // on disk refuses line breaks: they are valid, or left out.
        let value = |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        Head {
            content_type: value(&meta.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            etag: value(&meta.etag),
            last_modified: value(&meta.last_modified),
            len: len.map(|n| (n, HeaderValue::from(n))),
        }
    }
}

/// Builds the response for a source and starts the pump that feeds its body.
pub(crate) async fn respond(
    inner: &Arc<Inner>,
    source: Source,
    req: &HeaderMap,
    want: Want,
    stall: Duration,
) -> Result<Response<Body>, Error> {
    match source {
        Source::InMemory(m, status) => Ok(committed(
            m.meta(),
            m.head(),
            req,
            want,
            status,
            |_, start, end| {
                inner.counters.served_bytes.inc_by(end - start);
                body::full(m.body().slice(start as usize..end as usize))
            },
        )),
        Source::Cached(f, status) => {
            let h = Head::new(&f.meta, Some(f.len));
            Ok(committed(
                &f.meta,
                &h,
                req,
                want,
                status,
                |sp, start, end| {
                    // The first whole serve of an object not yet checked in this
                    // process checks it as it streams: the last bytes go out only
                    // once they hash to what was committed.
                    let check = match (sp, f.checked) {
                        (Span::Whole, false) => {
                            expected_digest(inner, &f.hash, &f.meta).map(|want| {
                                let (inner, f) = (inner.clone(), f.clone());
                                body::Check::new(want, move |whole| {
                                    if whole {
                                        inner.store.mark_checked(&f);
                                    } else {
                                        drop(tokio::task::spawn_blocking(move || {
                                            inner.store.drop_damaged(
                                                &f.hash,
                                                &f.file,
                                                Damage::Checksum,
                                            )
                                        }));
                                    }
                                })
                            })
                        }
                        _ => None,
                    };
                    body::file(
                        f.file.clone(),
                        f.offset + start,
                        end - start,
                        CHUNK,
                        check,
                        inner.counters.served_bytes.clone(),
                    )
                },
            ))
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
            let (resp, range) = head(&Head::new(&b.meta, b.expected), sp, status);
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

/// The response for a committed body (`h` knows its length): 304 to a
/// matching conditional, else the part the request asks for; `body(span,
/// start, end)` makes the body of bytes `[start, end)`, when one is sent.
fn committed(
    meta: &Meta,
    h: &Head,
    req: &HeaderMap,
    want: Want,
    status: CacheStatus,
    body: impl FnOnce(Span, u64, u64) -> Body,
) -> Response<Body> {
    let (etag, last_modified) = (meta.etag.as_deref(), meta.last_modified.as_deref());
    if not_modified(req, etag, last_modified) {
        let head = (StatusCode::NOT_MODIFIED, common(h, status));
        return finish(head, None, want, |_, _| body::empty());
    }
    let len = h.len.as_ref().map_or(0, |(n, _)| *n);
    let sp = span(req, len, etag, last_modified);
    let (head, range) = head(h, sp, status);
    finish(head, range, want, |start, end| {
        body(sp, start, end.unwrap_or(len))
    })
}

/// The headers of every response of a body, 304s included.
fn common(h: &Head, status: CacheStatus) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(header::CONTENT_TYPE, h.content_type.clone());
    headers.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    for (name, v) in [
        (header::ETAG, &h.etag),
        (header::LAST_MODIFIED, &h.last_modified),
    ] {
        if let Some(v) = v {
            headers.insert(name, v.clone());
        }
    }
    headers
}

/// Status line and headers for a body (of a length unknown while a
/// chunked download runs) and the byte range to send.
fn head(h: &Head, sp: Span, status: CacheStatus) -> (Lines, Part) {
    let mut headers = common(h, status);
    let Some((len, length)) = &h.len else {
        return ((StatusCode::OK, headers), Some((0, None)));
    };
    let len = *len;
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let mut range = |from: String| {
        // Digits, a dash and a slash: always a valid value.
        if let Ok(v) = HeaderValue::try_from(from) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    };
    let (code, length, send) = match sp {
        Span::Whole => (StatusCode::OK, length.clone(), Some((0, Some(len)))),
        Span::Part { start, end } => {
            range(format!("bytes {start}-{end}/{len}"));
            let n = HeaderValue::from(end - start + 1);
            (StatusCode::PARTIAL_CONTENT, n, Some((start, Some(end + 1))))
        }
        Span::Unsatisfiable => {
            range(format!("bytes */{len}"));
            let zero = HeaderValue::from_static("0");
            (StatusCode::RANGE_NOT_SATISFIABLE, zero, None)
        }
    };
    headers.insert(header::CONTENT_LENGTH, length);
    ((code, headers), send)
}

/// The response with its body: `body(start, end)` makes the body of the
/// range `head` chose, when the request wants one.
fn finish(
    (code, headers): Lines,
    range: Part,
    want: Want,
    body: impl FnOnce(u64, Option<u64>) -> Body,
) -> Response<Body> {
    let body = match (range, want) {
        (Some((start, end)), Want::Body) => body(start, end),
        _ => body::empty(),
    };
    let mut r = Response::new(body);
    *r.status_mut() = code;
    *r.headers_mut() = headers;
    r
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
