//! Pass-through: with the cache's disk full, a missing file is streamed
//! straight from the mirror to the client, uncached, instead of failing.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, Body, Msg};
use crate::path::RepoPath;
use crate::serve::Want;
use crate::upstream::{Fetched, Upstream, Validators};
use crate::{CacheStatus, Error, Inner};

use super::Source;

/// Asks the mirror for the file, to be passed on uncached.
pub(super) async fn pass_through(
    inner: &Arc<Inner>,
    up: &Arc<Upstream>,
    mirror: &str,
    path: &RepoPath,
) -> Result<Source, Error> {
    inner.counters.passthrough.inc();
    inner.counters.upstream_requests.inc();
    match up.fetch(mirror, path, &Validators::default()).await? {
        Fetched::Full { response, .. } => Ok(Source::Pass(response)),
        Fetched::NotModified => Err(Error::UpstreamBody("unexpected 304".into())),
    }
}

/// The mirror's response passed on: its headers that matter, and its body
/// pumped through a channel, a stalled mirror aborting the client's body.
pub(super) fn respond(
    inner: &Arc<Inner>,
    upstream: Response<Incoming>,
    want: Want,
    stall: Duration,
) -> Result<Response<Body>, Error> {
    let (parts, incoming) = upstream.into_parts();
    let mut resp = Response::builder().status(StatusCode::OK);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            resp = resp.header(name, v.clone());
        }
    }
    resp = resp.header("x-kickstand-cache", CacheStatus::Pass.as_str());
    if want == Want::HeadersOnly {
        return resp
            .body(body::empty())
            .map_err(|e| Error::Io(io::Error::other(e)));
    }
    let (tx, b) = body::channel();
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut incoming = incoming;
        loop {
            let msg = match tokio::time::timeout(stall, incoming.frame()).await {
                Err(_) => Msg::Err(io::Error::new(io::ErrorKind::TimedOut, "upstream stalled")),
                Ok(None) => Msg::End,
                Ok(Some(Err(e))) => Msg::Err(io::Error::other(e)),
                Ok(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        inner.counters.upstream_bytes.inc_by(d.len() as u64);
                        inner.counters.served_bytes.inc_by(d.len() as u64);
                        Msg::Data(d)
                    }
                    Err(_) => continue,
                },
            };
            let last = !matches!(msg, Msg::Data(_));
            if tx.send(msg).await.is_err() || last {
                return;
            }
        }
    });
    resp.body(b).map_err(|e| Error::Io(io::Error::other(e)))
}
