//! The live state as each protocol crate sees it: [`Front`] for HTTP,
//! [`Boot`] for ProxyDHCP, [`Source`] for TFTP. The boot script rule is
//! written once ([`Live::boot_script`]) and serves HTTP and TFTP alike;
//! what each protocol saw of a host becomes an event on its timeline.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Response, StatusCode};
use http_body_util::BodyExt as _;
use kickstand_dhcp::{Action, Boot, BootView, HostBoot, HostLookup, HostStatus, Reason};
use kickstand_http::route::{CacheOp, Report};
use kickstand_http::{ApiError, Body, Front, Loader, Reply, RouteKind};
use kickstand_profiles::{Mac, urls};
use kickstand_state::{EventKind, Phase, Transition};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::cache::{self, CacheEvent};
use crate::generation::BootDecision;
use crate::live::{Live, ReloadStatus};
use crate::operator;

impl Boot for Live {
    type View<'a> = PacketView<'a>;

    /// One generation for the packets read together.
    fn view(&self) -> PacketView<'_> {
        PacketView {
            live: self,
            generation: self.current(),
        }
    }

    fn rogue(&self, offer: &kickstand_dhcp::RogueOffer) {
        self.rogue_seen(offer);
    }
}

/// What ProxyDHCP decides a batch of packets with: one generation, and the
/// host states in memory.
pub(crate) struct PacketView<'a> {
    live: &'a Live,
    generation: Arc<crate::generation::Generation>,
}

impl HostLookup for PacketView<'_> {
    fn lookup(&self, mac: Mac) -> HostStatus {
        let generation = &self.generation;
        let profiled = || {
            let snapshot = generation.snapshot();
            let host = snapshot.host(&mac)?;
            let os = snapshot.oses.get(&host.os)?;
            let shim = urls::os_file_name(&os.name, &os.shim);
            Some(HostBoot::profiled(host.boot_loader, os.arch, shim))
        };
        match self.live.boot_for(generation, mac) {
            BootDecision::Install => profiled().map_or(HostStatus::Unknown, HostStatus::Netboot),
            BootDecision::LocalDisk => {
                profiled().map_or(HostStatus::Unknown, HostStatus::LocalDisk)
            }
            // Answers to machines without a profile share one rate: a flood
            // of forged MACs costs a bounded number of replies, and the
            // rest are counted, not answered.
            BootDecision::UnknownLocalBoot | BootDecision::Discover => {
                if self.live.answer_stranger() {
                    HostStatus::Netboot(HostBoot::ipxe())
                } else {
                    HostStatus::Unknown
                }
            }
            BootDecision::Ignore => HostStatus::Unknown,
        }
    }
}

impl BootView for PacketView<'_> {
    fn context(&self) -> &kickstand_dhcp::Context {
        &self.generation.dhcp
    }

    fn profiled(&self, mac: Mac) -> bool {
        self.generation.snapshot().host(&mac).is_some()
    }

    fn decided(&self, mac: Option<Mac>, seen: &kickstand_dhcp::Seen, action: &Action) {
        let live = self.live;
        live.metrics.dhcp.observe(action);
        let Some(mac) = mac else { return };
        let generation = &self.generation;
        let known = generation.snapshot().host(&mac).is_some();
        let now = SystemTime::now();
        match action {
            Action::Respond(reply) if known => {
                let ip = seen.requested.map(IpAddr::V4);
                let detail = json!({
                    "boot_file": reply.boot_file,
                    "arch": reply.firmware.map(|f| format!("{f:?}")),
                });
                // In memory now, on disk with the writer's next batch: the
                // reply never waits for either.
                let _ = live
                    .store
                    .transition(mac, Transition::SeenByDhcp, ip, now)
                    .value();
                live.record(generation, mac, EventKind::DhcpOffer, detail);
            }
            Action::Respond(_) => {}
            // The machine took another server's address offer: where it
            // will be, so TFTP and HTTP requests from there are its own.
            Action::Ignore(Reason::ForOtherServer(_)) if known && seen.requested.is_some() => {
                let ip = seen.requested.map(IpAddr::V4);
                let _ = live
                    .store
                    .transition(mac, Transition::SeenByDhcp, ip, now)
                    .value();
            }
            Action::Ignore(
                reason @ (Reason::UnknownHost(_)
                | Reason::Installed(_)
                | Reason::UnsupportedArch(_)
                | Reason::MissingArch),
            ) => {
                // Once per machine per few minutes, and within a rate: an
                // operator should never need debug logs to learn why a
                // machine was not served, and a flood of forged MACs must
                // not become a flood of log lines.
                if !live.first_unanswered_in_a_while(mac) {
                    return;
                }
                let name = match reason {
                    Reason::UnknownHost(_) => "no-profile",
                    Reason::Installed(_) => "installed",
                    Reason::UnsupportedArch(_) => "unsupported-arch",
                    _ => "no-arch",
                };
                if let Some(unlogged) = live.may_log_unanswered() {
                    info!(%mac, from = %seen.from, %reason, unlogged, "dhcp: PXE client not answered");
                }
                live.record(
                    generation,
                    mac,
                    EventKind::DhcpIgnored,
                    json!({"reason": name, "detail": reason.to_string()}),
                );
                if matches!(reason, Reason::Installed(_)) {
                    live.record(
                        generation,
                        mac,
                        EventKind::LocalBoot,
                        json!({"how": "not-answered"}),
                    );
                }
            }
            Action::Ignore(_) => {}
        }
    }
}

impl Live {
    fn rogue_seen(&self, offer: &kickstand_dhcp::RogueOffer) {
        if self.rogues.note(offer, &self.metrics) {
            // Once per server, not per offer.
            warn!(
                server = %offer.server,
                offered = offer.offered.chars().take(64).collect::<String>(),
                client = %offer.client,
                "another server offers boot information on this segment: it can take machines away from Kickstand"
            );
        }
    }
}

impl kickstand_tftp::Source for Live {
    /// Asked per request, so a reload that moves `tftp.root` takes effect
    /// for the next transfer.
    fn root(&self) -> std::path::PathBuf {
        self.current().appliance().tftp_root.clone()
    }

    /// What Kickstand serves by name rather than from the root:
    /// - `boot/<mac>.ipxe`, for iPXE builds without HTTP: the same script
    ///   the HTTP route serves;
    /// - GRUB's configs (`grub.cfg`, `grub.cfg-01-<mac>`), where GRUB
    ///   builds look for them;
    /// - `os/<os>/<path>`: an OS's shim, GRUB, kernel and initrd, from the
    ///   repo cache (one download through the office proxy for the rack).
    fn open<'a>(
        &'a self,
        path: &'a str,
        peer: SocketAddr,
    ) -> kickstand_tftp::BoxFuture<
        'a,
        Result<Option<kickstand_tftp::Content>, kickstand_tftp::OpenError>,
    > {
        use kickstand_tftp::{Content, OpenError};
        let text = |text: String| Content::Bytes(Bytes::from(text));
        Box::pin(async move {
            if let Some(Ok(mac)) = urls::parse_boot_script_name(path) {
                return Ok(self.boot_script(mac, peer.ip()).await.ok().map(text));
            }
            match urls::parse_grub_config_name(path) {
                Some(urls::GrubConfig::Host(mac)) => {
                    return self
                        .grub_config(mac, peer.ip())
                        .await
                        .map(|cfg| Some(text(cfg)))
                        .map_err(|_| OpenError::NotFound);
                }
                Some(urls::GrubConfig::Generic) => {
                    return self
                        .current()
                        .site
                        .grub_chain()
                        .map(|cfg| Some(text(cfg)))
                        .map_err(|_| OpenError::NotFound);
                }
                None => {}
            }
            let Some((os, file)) = urls::parse_os_file_name(path) else {
                return Ok(None);
            };
            let Some((mirror, repo_path)) = self.current().os_boot_file(os, file) else {
                return Err(OpenError::NotFound);
            };
            self.note_boot_file(peer.ip(), &mirror, &repo_path);
            match self.repo.open_file(&mirror, &repo_path).await {
                Ok(kickstand_repo::Opened::Complete { file, offset, len }) => {
                    Ok(Some(Content::File {
                        file,
                        offset,
                        size: len,
                    }))
                }
                Ok(kickstand_repo::Opened::Arriving(arriving)) => {
                    Ok(Some(Content::Growing(Box::new(FromCache(arriving)))))
                }
                Err(e) => {
                    warn!(%peer, file = path, error = %e, "boot file not available from the repo cache");
                    Err(match kickstand_repo::status_for(&e) {
                        StatusCode::NOT_FOUND => OpenError::NotFound,
                        _ => OpenError::Io(std::io::Error::other(e.to_string())),
                    })
                }
            }
        })
    }

    fn transfer_ended(&self, peer: SocketAddr, report: &kickstand_tftp::TransferReport) {
        self.metrics.tftp.observe(report);
        let mut detail = json!({
            "file": report.file,
            "bytes": report.bytes,
            "duration_ms": report.duration.as_millis() as u64,
            "outcome": report.outcome.name(),
            "ip": peer.ip().to_string(),
        });
        if let kickstand_tftp::TransferOutcome::ClientAborted { code, .. } = report.outcome {
            detail["error_code"] = code.into();
        }
        let loader = report.outcome == kickstand_tftp::TransferOutcome::Complete
            && urls::parse_boot_script_name(&report.file).is_none();
        let Some(mac) = self.store.host_by_ip(peer.ip()) else {
            return;
        };
        let now = SystemTime::now();
        self.store
            .record(mac, EventKind::TftpTransfer, detail, now)
            .value();
        if loader {
            let _ = self
                .store
                .transition(mac, Transition::BootFetched, Some(peer.ip()), now)
                .value();
        }
    }
}

impl Front for Live {
    async fn boot_script(&self, mac: Mac, peer: SocketAddr) -> Result<String, ApiError> {
        Live::boot_script(self, mac, peer.ip()).await
    }

    async fn loader(&self, file: &str, peer: SocketAddr) -> Result<Loader, ApiError> {
        let root = self.current().appliance().tftp_root.clone();
        let not_found = || ApiError::NotFound("no such boot loader".into());
        // TFTP's own rules, so the two protocols refuse the same names.
        let name = kickstand_tftp::normalize(file.as_bytes()).map_err(|_| not_found())?;
        let (opened, len) =
            tokio::task::spawn_blocking(move || kickstand_tftp::path::open_file(&root, &name))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|_| not_found())?;
        if let Some(mac) = self.store.host_by_ip(peer.ip()) {
            let now = SystemTime::now();
            self.store
                .record(
                    mac,
                    EventKind::LoaderFetch,
                    json!({"file": file, "ip": peer.ip().to_string()}),
                    now,
                )
                .value();
            self.transition(mac, Transition::BootFetched, Some(peer.ip()));
        }
        Ok(Loader {
            file: tokio::fs::File::from_std(opened),
            len,
        })
    }

    async fn kickstart(
        &self,
        mac: Mac,
        token: Option<&str>,
        peer: SocketAddr,
    ) -> Result<String, ApiError> {
        Live::kickstart(self, mac, token, peer.ip()).await
    }

    async fn report(
        &self,
        mac: Mac,
        report: Report,
        token: Option<&str>,
        detail: Bytes,
        peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        let reply = Live::report(self, mac, report, token, &detail, peer.ip()).await?;
        if report == Report::Installed
            && let Some(host) = self.current().snapshot().host(&mac)
        {
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
        Ok(Reply::Json(reply))
    }

    fn authorize_operator(&self, presented: Option<&str>) -> Result<(), ApiError> {
        match presented {
            Some(p) if operator::matches(self.operator_token(), p) => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this action needs the operator token (Authorization: Bearer …, from {}); `kickstand` reads it for you",
                self.current()
                    .appliance()
                    .state
                    .operator_token_file
                    .display()
            ))),
        }
    }

    async fn rearm(&self, mac: Mac, peer: SocketAddr) -> Result<Reply, ApiError> {
        let reply = Live::rearm(self, mac, peer.ip()).await?;
        self.repo.forget_pulls(&mac.to_string());
        Ok(Reply::Json(reply))
    }

    async fn hosts(&self) -> Result<Reply, ApiError> {
        json(&self.host_rows())
    }

    async fn timeline(&self, mac: Mac) -> Result<Reply, ApiError> {
        json(&Live::timeline(self, mac).await?)
    }

    async fn installer_log(&self, mac: Mac) -> Result<Reply, ApiError> {
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || logs.tail(mac, 256 * 1024))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map(Reply::Text)
            .map_err(|_| ApiError::NotFound(format!("no installer log for {mac} yet")))
    }

    async fn discovered(&self) -> Result<Reply, ApiError> {
        json(&self.discovered_rows())
    }

    async fn discovery_report(
        &self,
        mac: Mac,
        query: &str,
        peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        Live::discovery_report(self, mac, query, peer.ip())
            .await
            .map(Reply::Text)
    }

    async fn adopt(&self, mac: Mac, body: Bytes) -> Result<Reply, ApiError> {
        let adopted = Live::adopt(self, mac, &body).await?;
        // Put the new profile in force now rather than at the watcher's
        // next look, so the machine's next boot installs. Rare, and it
        // blocks only this request's worker.
        tokio::task::block_in_place(|| self.reload(crate::live::Trigger::Adopt));
        match self.reload_status() {
            ReloadStatus::Loaded => Ok(Reply::Json(adopted)),
            ReloadStatus::Rejected { errors } => Err(ApiError::Conflict(format!(
                "the profile was written but the reload was rejected: {}",
                errors.join("; ")
            ))),
        }
    }

    async fn os_file(
        &self,
        os: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> Response<Body> {
        match self.current().os_boot_file(os, path) {
            Some((mirror, repo_path)) => {
                if let Some(mac) = self.store.host_by_ip(peer.ip()) {
                    self.store
                        .record(
                            mac,
                            EventKind::LoaderFetch,
                            json!({"file": format!("{os}/{path}"), "ip": peer.ip().to_string()}),
                            SystemTime::now(),
                        )
                        .value();
                }
                Front::repo(self, &mirror, &repo_path, req, peer).await
            }
            None => ApiError::NotFound("no such boot file".into()).into_response(),
        }
    }

    async fn repo(
        &self,
        mirror: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let response = self.repo.handle(mirror, path, req).await;
        let mac = self.store.host_by_ip(peer.ip());
        let Some(mac) = mac.filter(|_| response.status() == StatusCode::OK) else {
            return response.map(|b| b.boxed_unsync());
        };
        self.repo.note_pull(&mac.to_string(), mirror, path);
        if ["vmlinuz", "initrd.img", "install.img", "squashfs.img"]
            .iter()
            .any(|image| path.ends_with(image))
        {
            self.store
                .record(
                    mac,
                    EventKind::InstallerImage,
                    json!({"file": path, "ip": peer.ip().to_string()}),
                    SystemTime::now(),
                )
                .value();
        }
        // Counted as the client reads it: what the host actually pulled.
        let store = self.store.clone();
        response.map(move |body| {
            Counted {
                inner: body,
                bytes: 0,
                done: Some(Box::new(move |bytes| store.add_pulled(mac, bytes, 1))),
            }
            .boxed_unsync()
        })
    }

    async fn cache(&self, op: CacheOp<'_>) -> Result<Reply, ApiError> {
        let repo = self.repo.clone();
        match op {
            CacheOp::Stats => json(&repo.stats()),
            CacheOp::Verify => Ok(events(cache::verify(repo, &self.tasks))),
            CacheOp::Warm(target) => {
                let plan = cache::warm_plan(self.current().snapshot(), target)
                    .map_err(ApiError::NotFound)?;
                Ok(events(cache::warm(repo, plan, &self.tasks)))
            }
        }
    }

    async fn status(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Text(self.status_page().await?))
    }

    async fn status_json(&self) -> Result<Reply, ApiError> {
        let body = self
            .status_doc
            .get(STATUS_FRESH, || self.status_document())
            .await?;
        Ok(Reply::Encoded {
            body,
            content_type: "application/json",
        })
    }

    async fn metrics(&self) -> Result<Reply, ApiError> {
        // Scrapes that overlap share one encoding; each gets one made after
        // it asked.
        let text = self
            .metrics_doc
            .get(std::time::Duration::ZERO, || {
                Ok::<_, ApiError>(bytes::Bytes::from(self.metrics_text()))
            })
            .await?;
        Ok(Reply::OpenMetrics(
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }

    fn observe(&self, route: RouteKind, status: StatusCode) {
        self.metrics.http.observe(route, status);
    }
}

/// A boot file still downloading into the repo cache, as TFTP reads it.
#[derive(Debug)]
struct FromCache(kickstand_repo::Arriving);

impl kickstand_tftp::Growing for FromCache {
    fn size(&self) -> u64 {
        self.0.len()
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

impl Live {
    /// A boot file a known host pulls over TFTP joins its install's file
    /// list (`cache warm --like`), and its installer images its timeline.
    fn note_boot_file(&self, peer: IpAddr, mirror: &str, repo_path: &str) {
        let Some(mac) = self.store.host_by_ip(peer) else {
            return;
        };
        self.repo.note_pull(&mac.to_string(), mirror, repo_path);
        if ["vmlinuz", "initrd.img"]
            .iter()
            .any(|image| repo_path.ends_with(image))
        {
            self.store
                .record(
                    mac,
                    EventKind::InstallerImage,
                    json!({"file": repo_path, "ip": peer.to_string(), "via": "tftp"}),
                    SystemTime::now(),
                )
                .value();
        }
    }
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

/// A stream of cache events as the JSON lines the CLI reads.
fn events(stream: futures_util::stream::BoxStream<'static, CacheEvent>) -> Reply {
    Reply::JsonLines(
        stream
            .map(|event| serde_json::to_value(event).unwrap_or_default())
            .boxed(),
    )
}

fn json<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(value)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// How long one status document serves every viewer: a room of browsers
/// polling every two seconds costs one walk over the rack per second.
const STATUS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Live {
    /// Everything the status page shows, in one document, encoded once for
    /// all who read it.
    fn status_document(&self) -> Result<Bytes, ApiError> {
        let generation = self.current();
        let snap = generation.snapshot();
        let appliance = snap.appliance.clone();
        let now = SystemTime::now();
        let mut hosts = Vec::new();
        for row in self.host_rows() {
            let diagnosis = match row.mac.parse::<Mac>() {
                Ok(mac) => self.store.diagnose(mac, now).to_string(),
                Err(_) => String::new(),
            };
            let mut value =
                serde_json::to_value(&row).map_err(|e| ApiError::Internal(e.to_string()))?;
            value["diagnosis"] = diagnosis.into();
            hosts.push(value);
        }
        let loaders: Vec<serde_json::Value> = [
            "undionly.kpxe",
            appliance.dhcp.uefi_loader.as_str(),
        ]
        .iter()
        .map(|file| json!({"file": file, "present": appliance.tftp_root.join(file).is_file()}))
        .collect();
        let errors = match self.reload_status() {
            ReloadStatus::Loaded => Vec::new(),
            ReloadStatus::Rejected { errors } => errors,
        };
        let stats = self.repo.stats();
        let mut cache =
            serde_json::to_value(stats).map_err(|e| ApiError::Internal(e.to_string()))?;
        cache["downloads_in_flight"] = self.repo.downloads_in_flight().into();
        let doc = json!({
            "now": humantime::format_rfc3339_seconds(now).to_string(),
            "appliance": {
                "address": appliance.server.address.to_string(),
                "base_url": generation.urls().base(),
                "dhcp_mode": appliance.dhcp.mode.as_str(),
                "unknown": appliance.dhcp.unknown.as_str(),
                "interfaces": appliance.server.interfaces,
                "loaders": loaders,
                "proxy": appliance.proxy.as_ref().map(|p| p.url.clone()),
                "mirrors": appliance.mirrors.iter().map(|(name, urls)| json!({
                    "name": name,
                    "urls": urls.iter().map(|u| u.base()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "rogue_dhcp": self.rogues.list(appliance.dhcp.rogue_forget_after, &self.metrics),
            },
            "profiles": {
                "generation": generation.id,
                "loaded_at": humantime::format_rfc3339_seconds(generation.loaded_at).to_string(),
                "files": snap.files.len(),
                "oses": snap.oses.len(),
                "hosts": snap.hosts.len(),
                "errors": errors,
            },
            "cache": cache,
            "hosts": hosts,
            "discovered": self.discovered_rows(),
        });
        serde_json::to_vec_pretty(&doc)
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    async fn status_page(&self) -> Result<String, ApiError> {
        let generation = self.current();
        let snap = generation.snapshot();
        let mut page = String::from("Kickstand\n=========\n\n");
        let _ = writeln!(page, "serving at   {}", generation.urls().base());
        let _ = writeln!(page, "dhcp mode    {}", snap.appliance.dhcp.mode.as_str());
        let _ = writeln!(
            page,
            "profiles     {} file(s), {} OS, {} host(s); generation {} loaded {}",
            snap.files.len(),
            snap.oses.len(),
            snap.hosts.len(),
            generation.id,
            humantime::format_rfc3339_seconds(generation.loaded_at)
        );
        match self.reload_status() {
            ReloadStatus::Loaded => page.push_str("last reload  ok\n"),
            ReloadStatus::Rejected { errors } => {
                page.push_str(
                    "last reload  REJECTED — the previous profiles are still in force:\n",
                );
                for e in errors {
                    let _ = writeln!(page, "  {e}");
                }
            }
        }
        let s = self.repo.stats();
        let _ = writeln!(
            page,
            "cache        {} file(s), {} of {} MiB; {} hit(s), {} download(s), {} failure(s){}",
            s.entries,
            s.bytes >> 20,
            s.max_bytes >> 20,
            s.hits,
            s.downloads,
            s.failures,
            if s.disk_full {
                "; DISK FULL: passing through"
            } else {
                ""
            }
        );
        page.push_str("\nhosts\n");
        for row in self.host_rows() {
            let _ = writeln!(
                page,
                "  {}  {:<16} {:<18} {:<10} {}",
                row.mac,
                row.hostname,
                row.os,
                row.phase.as_str(),
                row.last_error.as_deref().unwrap_or("")
            );
        }
        Ok(page)
    }

    /// The registry, with the gauges that are read from the store set
    /// first.
    fn metrics_text(&self) -> String {
        let generation = self.current();
        let m = &self.metrics;
        m.profiles.set(generation.snapshot().hosts.len() as i64);
        // Forgets servers gone quiet, so their gauge goes with them.
        self.rogues
            .list(generation.appliance().dhcp.rogue_forget_after, m);
        let mut by_phase: std::collections::BTreeMap<&'static str, i64> =
            Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
        for mac in generation.snapshot().hosts.keys() {
            *by_phase.entry(self.store.phase(*mac).as_str()).or_default() += 1;
        }
        for (phase, n) in by_phase {
            m.hosts
                .get_or_create(&crate::metrics::PhaseLabel { phase })
                .set(n);
        }
        m.encode()
    }
}
