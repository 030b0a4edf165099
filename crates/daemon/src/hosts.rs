//! What happens to a host, request by request: its boot script (with a
//! build token when it installs), its kickstart and callbacks (token
//! checked), an operator's rearm, a discovered machine's report and its
//! adoption — each a transition of its state and an event on its timeline.
//! Also the JSON views of hosts, timelines and discovered machines.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use kickstand_http::ApiError;
use kickstand_http::route::Report;
use kickstand_profiles::{Mac, parse};
use kickstand_render::{BootAction, RenderError, UnknownAction};
use kickstand_state::{EventKind, Facts, Nic, Outcome, Phase, StateError, Transition};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use crate::generation::{BootDecision, Generation};
use crate::live::Live;
use crate::metrics::Metrics;

/// The reason a `%onerror` sends is the tail of the installer's log:
/// kept to this much.
const MAX_REASON: usize = 2000;

pub(crate) fn state_error(e: StateError) -> ApiError {
    warn!(error = %e, "host state store failed");
    ApiError::Unavailable(format!("the host state store failed: {e}"))
}

fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::UnknownHost(mac) => ApiError::NoProfile(mac),
        e => {
            // Every host rendered when the generation was built, so this is
            // a bug, not bad input; say so instead of serving half a script.
            warn!(error = %e, "render failed");
            ApiError::Internal(format!("render failed: {e}"))
        }
    }
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

/// The loader a boot config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    Ipxe,
    Grub,
}

impl Chain {
    fn name(self) -> &'static str {
        match self {
            Chain::Ipxe => "ipxe",
            Chain::Grub => "grub",
        }
    }
}

impl Live {
    /// A machine's iPXE script, over HTTP or TFTP: its boot decision made
    /// into a script. A machine that is to be ignored gets none.
    pub(crate) async fn boot_script(&self, mac: Mac, peer: IpAddr) -> Result<String, ApiError> {
        self.boot_config(mac, peer, Chain::Ipxe).await
    }

    /// A machine's GRUB config, over TFTP: the same decision for the shim →
    /// GRUB chain.
    pub(crate) async fn grub_config(&self, mac: Mac, peer: IpAddr) -> Result<String, ApiError> {
        self.boot_config(mac, peer, Chain::Grub).await
    }

    /// The boot decision for `mac` made into its loader's file. Fetching
    /// the install is what moves the host to `booting`; every fetch is an
    /// event on its timeline.
    async fn boot_config(&self, mac: Mac, peer: IpAddr, chain: Chain) -> Result<String, ApiError> {
        let generation = self.current();
        let site = &generation.site;
        let now = SystemTime::now();
        let decision = self.boot_for(&generation, mac);
        let kind = match decision {
            BootDecision::Install => "install",
            BootDecision::LocalDisk => "local-boot",
            BootDecision::UnknownLocalBoot => "unknown-local-boot",
            BootDecision::Discover => "discover",
            BootDecision::Ignore => "none",
        };
        let render = |action, token: &str| match chain {
            Chain::Ipxe => site.ipxe(&mac, action, token),
            Chain::Grub => site.grub(&mac, action, token),
        };
        let script = match decision {
            // A new token waits for its commit: a token handed out that the
            // disk never saw would be refused after a restart. A live one
            // (every later fetch of the script) waits for nothing.
            BootDecision::Install => match self.store.ensure_token(mac, now) {
                Ok(token) => match token.await.map_err(state_error)? {
                    Some(token) => {
                        let script =
                            render(BootAction::Install, token.as_str()).map_err(render_error)?;
                        self.transition(mac, Transition::BootFetched, Some(peer));
                        self.record_host(
                            mac,
                            EventKind::BootScript,
                            json!({"script": "install", "loader": chain.name(), "ip": ip_text(peer)}),
                        );
                        script
                    }
                    // It finished or failed a moment ago: its disk, then.
                    None => self.local_disk(&generation, mac, peer, chain)?,
                },
                Err(e) => return Err(state_error(e)),
            },
            BootDecision::LocalDisk => self.local_disk(&generation, mac, peer, chain)?,
            // A machine without a profile is never offered GRUB; a GRUB
            // that asks anyway reads the generic config, which boots its
            // disk.
            BootDecision::UnknownLocalBoot | BootDecision::Discover if chain == Chain::Grub => {
                site.grub_chain().map_err(render_error)?
            }
            BootDecision::UnknownLocalBoot => site
                .unknown_ipxe(&mac, UnknownAction::LocalDisk)
                .map_err(render_error)?,
            BootDecision::Discover => {
                self.discovering(mac, peer);
                site.unknown_ipxe(&mac, UnknownAction::Discover)
                    .map_err(render_error)?
            }
            BootDecision::Ignore => {
                self.metrics.unknown_hosts.inc();
                return Err(ApiError::NoProfile(mac));
            }
        };
        Metrics::named(&self.metrics.boot_scripts, kind);
        Ok(script)
    }

    fn local_disk(
        &self,
        generation: &Generation,
        mac: Mac,
        peer: IpAddr,
        chain: Chain,
    ) -> Result<String, ApiError> {
        let (script, how) = match chain {
            Chain::Ipxe => (
                generation.site.ipxe(&mac, BootAction::LocalDisk, ""),
                "exit",
            ),
            Chain::Grub => (
                generation.site.grub(&mac, BootAction::LocalDisk, ""),
                "chainload",
            ),
        };
        let script = script.map_err(render_error)?;
        self.record_host(
            mac,
            EventKind::BootScript,
            json!({"script": "local-boot", "loader": chain.name(), "ip": ip_text(peer)}),
        );
        self.record_host(
            mac,
            EventKind::LocalBoot,
            json!({"how": how, "ip": ip_text(peer)}),
        );
        Ok(script)
    }

    /// Records an event on a profiled host's timeline, without waiting.
    fn record_host(&self, mac: Mac, kind: EventKind, detail: serde_json::Value) {
        self.store
            .record(mac, kind, detail, SystemTime::now())
            .value();
    }

    /// Applies a transition in memory (on disk with the writer's next
    /// batch); a refused one is recorded by the store.
    pub(crate) fn transition(&self, mac: Mac, t: Transition, ip: Option<IpAddr>) -> Outcome {
        let name = t.name();
        let outcome = self.store.transition(mac, t, ip, SystemTime::now()).value();
        log_phase(mac, name, outcome);
        outcome
    }

    /// Applies a transition and waits until it is on disk: for the
    /// callbacks and operator actions whose answer says it happened.
    async fn transition_durably(
        &self,
        mac: Mac,
        t: Transition,
        ip: Option<IpAddr>,
    ) -> Result<Outcome, ApiError> {
        let name = t.name();
        let outcome = self
            .store
            .transition(mac, t, ip, SystemTime::now())
            .await
            .map_err(state_error)?;
        log_phase(mac, name, outcome);
        Ok(outcome)
    }

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

    pub(crate) async fn kickstart(
        &self,
        mac: Mac,
        token: Option<&str>,
        peer: IpAddr,
    ) -> Result<String, ApiError> {
        let generation = self.current();
        if generation.snapshot().host(&mac).is_none() {
            self.metrics.unknown_hosts.inc();
            return Err(ApiError::NoProfile(mac));
        }
        self.check_token(mac, token, peer)?;
        let token = token.unwrap_or_default();
        let kickstart = generation
            .site
            .kickstart(&mac, token)
            .map_err(render_error)?;
        self.transition(mac, Transition::KickstartFetched, Some(peer));
        self.record_host(mac, EventKind::KickstartFetch, json!({"ip": ip_text(peer)}));
        self.metrics.kickstarts.inc();
        Ok(kickstart)
    }

    pub(crate) async fn report(
        &self,
        mac: Mac,
        report: Report,
        token: Option<&str>,
        detail: &[u8],
        peer: IpAddr,
    ) -> Result<serde_json::Value, ApiError> {
        let generation = self.current();
        let Some(host) = generation.snapshot().host(&mac) else {
            self.metrics.unknown_hosts.inc();
            return Err(ApiError::NoProfile(mac));
        };
        self.check_token(mac, token, peer)?;
        let reason = escape_controls(
            String::from_utf8_lossy(&detail[detail.len().saturating_sub(MAX_REASON)..]).trim(),
        );
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
        self.record_host(mac, EventKind::Callback, event);
        Metrics::named(&self.metrics.callbacks, stage);
        // Acknowledged once on disk: the installer's report is what moves
        // the host to its disk, and a crash must not lose it.
        match self.transition_durably(mac, t, Some(peer)).await? {
            Outcome::Refused { phase, reason } => {
                Err(ApiError::Conflict(format!("{mac} is {phase}: {reason}")))
            }
            Outcome::Changed { to: phase, .. } | Outcome::Unchanged(phase) => {
                Ok(json!({"mac": mac.to_string(), "hostname": host.hostname, "phase": phase}))
            }
        }
    }

    /// An operator sends a host back to the installer: a new build token
    /// is made at its next boot, the old one is dead.
    pub(crate) async fn rearm(
        &self,
        mac: Mac,
        peer: IpAddr,
    ) -> Result<serde_json::Value, ApiError> {
        let generation = self.current();
        let Some(host) = generation.snapshot().host(&mac) else {
            return Err(ApiError::NoProfile(mac));
        };
        let outcome = self
            .transition_durably(mac, Transition::Rearm, None)
            .await?;
        info!(%mac, hostname = host.hostname, operator = %peer, "re-armed: its next boot installs");
        let phase = match outcome {
            Outcome::Changed { to, .. } | Outcome::Unchanged(to) => to,
            Outcome::Refused { phase, .. } => phase,
        };
        Ok(json!({"mac": mac.to_string(), "hostname": host.hostname, "phase": phase}))
    }

    pub(crate) fn host_rows(&self) -> Vec<HostRow> {
        let generation = self.current();
        let now = SystemTime::now();
        let states: BTreeMap<Mac, kickstand_state::Host> =
            self.store.hosts().into_iter().map(|h| (h.mac, h)).collect();
        let last: BTreeMap<Mac, kickstand_state::Event> = self
            .store
            .last_events()
            .into_iter()
            .map(|e| (e.mac, e))
            .collect();
        let mut expected = BTreeMap::new();
        let mut rows = Vec::new();
        for (mac, host) in &generation.snapshot().hosts {
            let state = states.get(mac);
            let phase = state.map_or(Phase::New, |s| s.phase);
            if !expected.contains_key(&host.os) {
                expected.insert(host.os.clone(), self.store.expected_install(&host.os));
            }
            let next_boot = match generation.boot_for(*mac, phase) {
                BootDecision::Install => "install",
                _ => "local-disk",
            };
            rows.push(HostRow {
                mac: mac.to_string(),
                hostname: host.hostname.clone(),
                os: host.os.clone(),
                groups: host.groups.clone(),
                phase,
                since: state.map(|s| stamp(s.since)),
                in_phase_secs: state
                    .map(|s| now.duration_since(s.since).unwrap_or_default().as_secs()),
                next_boot,
                last_ip: state.and_then(|s| s.last_ip).map(ip_text),
                last_event: last.get(mac).map(EventRow::from),
                last_error: state.and_then(|s| s.last_error.clone()),
                pulled_bytes: state.map_or(0, |s| s.pulled.bytes),
                pulled_files: state.map_or(0, |s| s.pulled.files),
                expected_bytes: expected
                    .get(&host.os)
                    .and_then(|e| e.as_ref())
                    .map(|e| e.bytes),
            });
        }
        rows
    }

    pub(crate) async fn timeline(&self, mac: Mac) -> Result<TimelineView, ApiError> {
        let generation = self.current();
        let now = SystemTime::now();
        let events = self.store.timeline(mac, 500).await.map_err(state_error)?;
        let diagnosis = self.store.diagnose(mac, now);
        let host = generation.snapshot().host(&mac);
        Ok(TimelineView {
            mac: mac.to_string(),
            hostname: host.map(|h| h.hostname.clone()),
            events: events.iter().map(EventRow::from).collect(),
            diagnosis: diagnosis.to_string(),
        })
    }

    pub(crate) fn discovered_rows(&self) -> Vec<DiscoveredRow> {
        self.store
            .discovered()
            .into_iter()
            .map(|d| DiscoveredRow {
                adopt: format!("kickstand adopt {} --hostname <name>", d.mac),
                mac: d.mac.to_string(),
                first_seen: stamp(d.first_seen),
                last_seen: stamp(d.last_seen),
                ip: d.ip.map(ip_text),
                facts: d.facts,
            })
            .collect()
    }

    /// What iPXE's discovery script reports: taken only from the address
    /// that just fetched that script for this MAC.
    pub(crate) async fn discovery_report(
        &self,
        mac: Mac,
        query: &str,
        peer: IpAddr,
    ) -> Result<String, ApiError> {
        if !self.may_report(mac, peer) {
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

    /// Writes a host profile for a discovered machine: a new file under the
    /// profiles directory (never an operator's), in force once the reload
    /// it triggers accepts it.
    pub(crate) async fn adopt(&self, mac: Mac, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        let req: AdoptRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "adopt wants {{\"hostname\": …, \"group\": …, \"os\": …}}: {e}"
            ))
        })?;
        let generation = self.current();
        let snapshot = generation.snapshot();
        if snapshot.host(&mac).is_some() {
            return Err(ApiError::Conflict(format!(
                "{mac} already has a host profile"
            )));
        }
        if !parse::valid_hostname(&req.hostname) {
            return Err(ApiError::BadRequest(format!(
                "`{}` is not a valid hostname",
                req.hostname
            )));
        }
        if let Some(taken) = snapshot.hosts.values().find(|h| h.hostname == req.hostname) {
            return Err(ApiError::Conflict(format!(
                "hostname `{}` is already {}'s",
                req.hostname, taken.mac
            )));
        }
        if let Some(os) = &req.os
            && !snapshot.oses.contains_key(os)
        {
            return Err(ApiError::BadRequest(format!("OS `{os}` is not defined")));
        }
        if let Some(group) = &req.group
            && !parse::is_name(group)
        {
            return Err(ApiError::BadRequest(format!(
                "`{group}` is not a group name"
            )));
        }
        let found = self.store.discovered().into_iter().find(|d| d.mac == mac);
        let path = adopted_path(self.config(), mac);
        let text = adopted_profile(mac, &req, found.as_ref().map(|d| &d.facts));
        let written = path.clone();
        tokio::task::spawn_blocking(move || write_new(&written, &text))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => ApiError::Conflict(format!(
                    "{} exists already; edit or remove it",
                    path.display()
                )),
                _ => ApiError::Internal(format!("writing {}: {e}", path.display())),
            })?;
        info!(%mac, hostname = req.hostname, file = %path.display(), "adopted a discovered machine");
        let _ = self.store.forget_discovered(mac).value();
        Ok(
            json!({"mac": mac.to_string(), "hostname": req.hostname, "file": path.display().to_string()}),
        )
    }
}

fn log_phase(mac: Mac, transition: &str, outcome: Outcome) {
    if let Outcome::Changed { from, to } = outcome {
        info!(%mac, %from, %to, transition, "host phase");
    }
}

/// What a LAN host reports (a failure's reason) made safe to store and
/// show: control characters but newline and tab become `\u{…}` escapes,
/// so no byte from the installer can end a log line, colour a terminal or
/// fail a database write.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `profiles/adopted/52-54-00-…yaml`, beside the operator's files.
fn adopted_path(config: &std::path::Path, mac: Mac) -> PathBuf {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    dir.join("adopted")
        .join(format!("{}.yaml", mac.to_string().replace(':', "-")))
}

fn write_new(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written aside and linked in place: the watcher never sees half a file,
    // and an existing file is never replaced.
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".adopt").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn adopted_profile(mac: Mac, req: &AdoptRequest, facts: Option<&Facts>) -> String {
    let mut text = format!(
        "# Adopted with `kickstand adopt` at {}.\n",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    if let Some(f) = facts {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "# Reported: {} {}, serial {}, UUID {}, {} MiB.\n",
            show(&f.manufacturer),
            show(&f.product),
            show(&f.serial),
            show(&f.uuid),
            show(&f.memsize)
        ));
    }
    text.push_str("# Kickstand never rewrites this file: edit it as any other profile.\n");
    text.push_str(&format!(
        "hosts:\n  \"{mac}\":\n    hostname: {}\n",
        yaml_string(&req.hostname)
    ));
    if let Some(group) = &req.group {
        text.push_str(&format!("    groups: [{}]\n", yaml_string(group)));
    }
    if let Some(os) = &req.os {
        text.push_str(&format!("    os: {}\n", yaml_string(os)));
    }
    text
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

fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdoptRequest {
    pub(crate) hostname: String,
    pub(crate) group: Option<String>,
    pub(crate) os: Option<String>,
}

/// One host in `GET /api/hosts`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HostRow {
    pub(crate) mac: String,
    pub(crate) hostname: String,
    pub(crate) os: String,
    pub(crate) groups: Vec<String>,
    pub(crate) phase: Phase,
    pub(crate) since: Option<String>,
    pub(crate) in_phase_secs: Option<u64>,
    pub(crate) next_boot: &'static str,
    pub(crate) last_ip: Option<String>,
    pub(crate) last_event: Option<EventRow>,
    pub(crate) last_error: Option<String>,
    pub(crate) pulled_bytes: u64,
    pub(crate) pulled_files: u64,
    /// What the last completed install of its OS pulled; `None` before one.
    pub(crate) expected_bytes: Option<u64>,
}

/// One event of a timeline.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EventRow {
    pub(crate) time: String,
    pub(crate) kind: String,
    pub(crate) appliance: String,
    pub(crate) detail: serde_json::Value,
}

impl From<&kickstand_state::Event> for EventRow {
    fn from(e: &kickstand_state::Event) -> EventRow {
        EventRow {
            time: stamp(e.time),
            kind: e.kind.to_string(),
            appliance: e.appliance.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// `GET /api/hosts/<mac>/timeline`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TimelineView {
    pub(crate) mac: String,
    pub(crate) hostname: Option<String>,
    pub(crate) events: Vec<EventRow>,
    /// Where the journey stopped, in one sentence.
    pub(crate) diagnosis: String,
}

/// One machine in `GET /api/discovered`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DiscoveredRow {
    pub(crate) mac: String,
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    pub(crate) ip: Option<String>,
    pub(crate) facts: Facts,
    /// The command that makes it a host.
    pub(crate) adopt: String,
}

/// How long ago, for tables: `3m 12s`.
pub(crate) fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
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
