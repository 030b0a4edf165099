//! What a machine asks while it installs: its kickstart and callbacks
//! (build token checked here), the repo proxy (each file it pulls counted
//! for its install's progress and `cache warm --like`), and, for a machine
//! without a profile, its discovery report.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt as _;
use kickstand_http::route::Report;
use kickstand_http::{ApiError, Body};
use kickstand_profiles::Mac;
use kickstand_profiles::text::escaped;
use kickstand_repo::RepoProxy;
use kickstand_state::{EventKind, Facts, Nic, Outcome, StateStore, Transition};
use serde_json::json;
use tracing::{info, warn};

use crate::booting::Discovering;
use crate::generation::Generation;
use crate::hosts::{self, Fetched, ip_text, render_error};
use crate::metrics::Metrics;

/// The reason a `%onerror` sends is the tail of the installer's log:
/// kept to this much.
const MAX_REASON: usize = 2000;

#[derive(Debug)]
pub(crate) struct Installs {
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) discovering: Arc<Discovering>,
}

impl Installs {
    /// Checks a build token: a refusal is a 403 (and the store's event).
    fn check_token(&self, mac: Mac, token: Option<&str>, peer: IpAddr) -> Result<(), ApiError> {
        match self
            .store
            .check_token(mac, token, peer, SystemTime::now())
            .value()
        {
            Ok(()) => Ok(()),
            Err(rejected) => {
                self.metrics.token_rejections.inc();
                warn!(%mac, %peer, reason = rejected.name(), "build token rejected");
                Err(ApiError::Forbidden(format!(
                    "build token rejected: {rejected}"
                )))
            }
        }
    }

    pub(crate) fn kickstart(
        &self,
        generation: &Generation,
        mac: Mac,
        token: Option<&str>,
        peer: IpAddr,
    ) -> Result<String, ApiError> {
        if generation.snapshot().host(&mac).is_none() {
            self.metrics.unknown_hosts.inc();
            return Err(ApiError::NoProfile(mac));
        }
        self.check_token(mac, token, peer)?;
        let token = token.unwrap_or_default();
        let kickstart = generation
            .site
            .to(peer)
            .kickstart(&mac, token)
            .map_err(render_error)?;
        hosts::transition(&self.store, mac, Transition::KickstartFetched, Some(peer));
        hosts::record(
            &self.store,
            generation,
            mac,
            EventKind::KickstartFetch,
            json!({"ip": ip_text(peer)}),
        );
        self.metrics.kickstarts.inc();
        Ok(kickstart)
    }

    /// An install callback. Acknowledged once on disk: the installer's
    /// report is what moves the host to its disk, and a crash must not
    /// lose it.
    pub(crate) async fn report(
        &self,
        generation: &Generation,
        mac: Mac,
        report: Report,
        token: Option<&str>,
        detail: &[u8],
        peer: IpAddr,
    ) -> Result<serde_json::Value, ApiError> {
        let Some(host) = generation.snapshot().host(&mac) else {
            self.metrics.unknown_hosts.inc();
            return Err(ApiError::NoProfile(mac));
        };
        self.check_token(mac, token, peer)?;
        // Kept escaped: no byte from the installer can end a log line,
        // colour a terminal or fail a database write.
        let reason = escaped(
            String::from_utf8_lossy(&detail[detail.len().saturating_sub(MAX_REASON)..]).trim(),
        )
        .to_string();
        let (t, stage) = match report {
            Report::Installing => (Transition::PreCallback, "pre"),
            Report::Installed => (
                Transition::PostCallback {
                    os: host.os.clone(),
                },
                "post",
            ),
            Report::Failed => (
                Transition::OnError {
                    reason: if reason.is_empty() {
                        "the installer reported an error and gave no reason".into()
                    } else {
                        reason.clone()
                    },
                },
                "onerror",
            ),
        };
        let mut event = json!({"stage": stage, "ip": ip_text(peer)});
        if report == Report::Failed {
            event["reason"] = reason.into();
        }
        hosts::record(&self.store, generation, mac, EventKind::Callback, event);
        Metrics::named(&self.metrics.callbacks, stage);
        let (outcome, durability) =
            hosts::transition_reported(&self.store, mac, t, Some(peer)).await?;
        let phase = match outcome {
            Outcome::Refused { phase, reason } => {
                return Err(ApiError::Conflict(format!("{mac} is {phase}: {reason}")));
            }
            Outcome::Changed { to, .. } | Outcome::Unchanged(to) => to,
        };
        if report == Report::Installed {
            // What this install pulled is what `cache warm <os> --like` fetches.
            let (repo, os) = (self.repo.clone(), host.os.clone());
            let kept =
                tokio::task::spawn_blocking(move || repo.install_completed(&mac.to_string(), &os))
                    .await;
            match kept {
                Ok(Ok(files)) => {
                    info!(%mac, os = host.os, files, "install's file list kept for `cache warm --like`")
                }
                Ok(Err(e)) => warn!(%mac, error = %e, "could not keep the install's file list"),
                Err(e) => warn!(%mac, error = %e, "could not keep the install's file list"),
            }
        }
        Ok(json!({
            "mac": mac.to_string(),
            "hostname": host.hostname,
            "phase": phase,
            "stored": durability.as_str(),
        }))
    }

    /// What iPXE's discovery script reports: taken only from the address
    /// that just fetched that script for this MAC.
    pub(crate) fn discovery_report(
        &self,
        mac: Mac,
        query: &str,
        peer: IpAddr,
    ) -> Result<String, ApiError> {
        if !self.discovering.may_report(mac, peer) {
            warn!(%mac, %peer, "discovery report refused: no discovery script was sent there");
            return Err(ApiError::Forbidden(format!(
                "a report for {mac} is taken only from the machine that was just sent its discovery script"
            )));
        }
        let facts = facts(query);
        let now = SystemTime::now();
        let outcome = self.store.report_discovered(mac, peer, &facts, now).value();
        Metrics::named(&self.metrics.discovery_reports, outcome.name());
        info!(%mac, %peer, outcome = outcome.name(), product = facts.product.as_deref().unwrap_or("-"), "discovery report");
        self.store
            .record_stranger(
                mac,
                EventKind::DiscoveryReport,
                json!({"ip": ip_text(peer), "outcome": outcome.name()}),
                now,
            )
            .value();
        Ok("#!ipxe\n".into())
    }
}

/// `GET|HEAD /repo/<mirror>/<path>` (and the OS boot files behind
/// `/os/`): the repo proxy's answer, and for a host the file joins its
/// install's list and its bytes its progress, counted as the client reads
/// them.
pub(crate) async fn serve_repo(
    store: &StateStore,
    repo: &RepoProxy,
    generation: &Generation,
    mirror: &str,
    path: &str,
    req: http::Request<()>,
    peer: SocketAddr,
) -> Response<Body> {
    let response = repo
        .handle_with(&generation.upstream, mirror, path, req)
        .await;
    let host = match response.status() {
        StatusCode::OK => hosts::fetched(store, peer.ip(), Fetched::File(path), None),
        _ => None,
    };
    let Some(mac) = host else {
        return response.map(|b| b.boxed_unsync());
    };
    repo.note_pull(&mac.to_string(), mirror, path);
    let store = store.clone();
    response.map(move |body| {
        Counted {
            inner: body,
            bytes: 0,
            done: Some(Box::new(move |bytes| store.add_pulled(mac, bytes, 1))),
        }
        .boxed_unsync()
    })
}

/// A response body that reports how many bytes went through it, once, when
/// it ends (whole or not).
struct Counted {
    inner: kickstand_repo::Body,
    bytes: u64,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.bytes);
        }
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The facts in a discovery report's query string; empty values (a
/// setting iPXE does not have) are left out. Values are percent-decoded
/// only: iPXE encodes spaces but leaves `+` as it is, so form decoding
/// (`+` as a space) would garble names like "i440FX + PIIX".
fn facts(query: &str) -> Facts {
    let mut f = Facts::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .trim()
            .to_owned();
        if value.is_empty() {
            continue;
        }
        let value = Some(value);
        match key {
            "uuid" => f.uuid = value,
            "serial" => f.serial = value,
            "manufacturer" => f.manufacturer = value,
            "product" => f.product = value,
            "asset" => f.asset = value,
            "platform" => f.platform = value,
            "buildarch" => f.buildarch = value,
            "memsize" => f.memsize = value,
            nic if nic.starts_with("nic") => f.nics.push(Nic {
                name: Some(format!("net{}", &nic[3..])),
                mac: value,
                ..Nic::default()
            }),
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_as_debian_12_ipxe_sends_them() {
        // Captured from Debian 12's iPXE (QEMU's SMBIOS), plain expansions.
        let f = facts(
            "uuid=00000000-0000-0000-0000-000000000000&serial=&manufacturer=QEMU&product=Standard%20PC%20(i440FX%20+%20PIIX,%201996)&memsize=2047&nic0=52:54:00:99:99:01&nic1=",
        );
        assert_eq!(
            f.product.as_deref(),
            Some("Standard PC (i440FX + PIIX, 1996)")
        );
        assert_eq!(f.manufacturer.as_deref(), Some("QEMU"));
        assert_eq!(f.serial, None, "an empty setting is left out");
        assert_eq!(f.memsize.as_deref(), Some("2047"));
        assert_eq!(f.nics.len(), 1);
        assert_eq!(f.nics[0].mac.as_deref(), Some("52:54:00:99:99:01"));
        assert_eq!(facts(""), Facts::default());
    }
}
