//! The HTTP front as the daemon answers it: each route takes the
//! generation in force once and hands it, with the request, to the part
//! of the daemon that owns the answer — booting (scripts, loaders, boot
//! files), installs (kickstarts, callbacks, the repo proxy, discovery
//! reports), views (hosts, timelines, status, metrics) or the operator
//! (rearm, adopt, cache) or power control. Nothing is decided here.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use kickstand_http::route::{CacheOp, PowerVerb, Report};
use kickstand_http::{ApiError, Body, Channel, Front, Loader, OperatorAct, Reply, RouteKind};
use kickstand_profiles::Mac;
use serde::Serialize;

use crate::booting::Booting;
use crate::installs::{self, Installs};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::operator::Operator;
use crate::power::Power;
use crate::views::Views;

#[derive(Debug)]
pub(crate) struct HttpFront {
    pub(crate) live: Arc<Live>,
    pub(crate) booting: Arc<Booting>,
    pub(crate) installs: Arc<Installs>,
    pub(crate) views: Arc<Views>,
    pub(crate) operator: Arc<Operator>,
    pub(crate) power: Arc<Power>,
    pub(crate) metrics: Arc<Metrics>,
}

impl HttpFront {
    /// A host's routes (boot scripts, loaders, kickstarts, callbacks) are
    /// answered by the segment's active appliance only: a build token is
    /// honoured by one appliance at a time, and an install follows the
    /// segment's address to whichever that is.
    fn on_duty(&self) -> Result<(), ApiError> {
        if self.booting.duty.answering() {
            return Ok(());
        }
        let segment = self.booting.duty.standing().map(|s| s.segment);
        Err(ApiError::Unavailable(format!(
            "this appliance stands by for segment {}: the active one answers at the segment's address",
            segment.unwrap_or_default()
        )))
    }
}

fn json<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(value)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

impl Front for HttpFront {
    async fn boot_script(&self, mac: Mac, peer: SocketAddr) -> Result<String, ApiError> {
        self.on_duty()?;
        let generation = self.live.current();
        self.booting.boot_script(&generation, mac, peer.ip()).await
    }

    async fn loader(&self, file: &str, peer: SocketAddr) -> Result<Loader, ApiError> {
        self.on_duty()?;
        let generation = self.live.current();
        self.booting.loader(&generation, file, peer).await
    }

    async fn kickstart(
        &self,
        mac: Mac,
        token: Option<&str>,
        peer: SocketAddr,
    ) -> Result<String, ApiError> {
        self.on_duty()?;
        let generation = self.live.current();
        self.installs.kickstart(&generation, mac, token, peer.ip())
    }

    async fn report(
        &self,
        mac: Mac,
        report: Report,
        token: Option<&str>,
        detail: Bytes,
        peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        self.on_duty()?;
        let generation = self.live.current();
        self.installs
            .report(&generation, mac, report, token, &detail, peer.ip())
            .await
            .map(Reply::Json)
    }

    fn authorize_operator(
        &self,
        presented: Option<&str>,
        channel: Channel,
    ) -> Result<(), ApiError> {
        self.operator
            .authorize(&self.live.current(), presented, channel)
    }

    fn record_operator(&self, act: OperatorAct) {
        self.operator.record(act);
    }

    async fn audit(&self) -> Result<Reply, ApiError> {
        json(&self.operator.audit().await?)
    }

    async fn rearm(&self, mac: Mac, peer: SocketAddr) -> Result<Reply, ApiError> {
        let generation = self.live.current();
        self.operator.rearm(&generation, mac, peer.ip()).await
    }

    async fn power(
        &self,
        mac: Mac,
        verb: PowerVerb,
        body: Bytes,
        peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        let generation = self.live.current();
        self.power
            .act(&generation, mac, verb, &body, peer.ip())
            .await
    }

    /// Streamed host by host: at 5,000 hosts the whole array is megabytes
    /// that no one needs to hold at once.
    async fn hosts(&self) -> Result<Reply, ApiError> {
        use futures_util::StreamExt as _;
        let rows = self.views.host_rows(&self.live.current());
        let items = rows
            .into_iter()
            .map(|row| serde_json::to_value(row).map_err(std::io::Error::other));
        Ok(Reply::JsonArray(futures_util::stream::iter(items).boxed()))
    }

    async fn timeline(&self, mac: Mac) -> Result<Reply, ApiError> {
        let generation = self.live.current();
        json(&self.views.timeline(&generation, mac).await?)
    }

    async fn installer_log(&self, mac: Mac) -> Result<Reply, ApiError> {
        self.views.installer_log(mac).await
    }

    async fn discovered(&self) -> Result<Reply, ApiError> {
        json(&self.views.discovered_rows())
    }

    async fn discovery_report(
        &self,
        mac: Mac,
        query: &str,
        peer: SocketAddr,
    ) -> Result<Reply, ApiError> {
        self.on_duty()?;
        self.installs
            .discovery_report(mac, query, peer.ip())
            .map(Reply::Text)
    }

    async fn adopt(&self, mac: Mac, body: Bytes) -> Result<Reply, ApiError> {
        self.operator.adopt(mac, &body).await
    }

    async fn forget(&self, mac: Option<Mac>) -> Result<Reply, ApiError> {
        self.operator.forget(mac).await
    }

    async fn os_file(
        &self,
        os: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> Response<Body> {
        if let Err(e) = self.on_duty() {
            return e.into_response();
        }
        let generation = self.live.current();
        self.booting.os_file(&generation, os, path, req, peer).await
    }

    async fn repo(
        &self,
        mirror: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let generation = self.live.current();
        let installs = &self.installs;
        installs::serve_repo(
            &installs.store,
            &installs.repo,
            &generation,
            mirror,
            path,
            req,
            peer,
        )
        .await
    }

    async fn cache(&self, op: CacheOp<'_>) -> Result<Reply, ApiError> {
        self.operator.cache(&self.live.current(), op)
    }

    async fn status(&self) -> Result<Reply, ApiError> {
        Ok(Reply::Text(self.views.status_page(&self.live.current())))
    }

    async fn status_json(&self, query: &str) -> Result<Reply, ApiError> {
        let page = crate::hosts_page::PageQuery::parse(query)?;
        let generation = self.live.current();
        self.views.status_json(&generation, page.as_ref()).await
    }

    async fn metrics(&self) -> Result<Reply, ApiError> {
        let generation = self.live.current();
        self.views.metrics(&generation).await
    }

    fn observe(&self, route: RouteKind, status: StatusCode) {
        self.metrics.http.observe(route, status);
    }
}
