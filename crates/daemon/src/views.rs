//! What the host state looks like from outside: the host list, a host's
//! timeline and installer log, the discovered machines, the status page
//! (one document, built from memory once a second for every viewer) and
//! the metrics exposition. Read-only: nothing here changes a host.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kickstand_http::{ApiError, Reply};
use kickstand_profiles::Mac;
use kickstand_profiles::text::escaped;
use kickstand_repo::RepoProxy;
use kickstand_state::{Facts, Phase, StateStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::booting::Rogues;
use crate::generation::{BootDecision, Generation};
use crate::hosts::{ip_text, stamp, state_error};
use crate::hosts_page::{self, Listed, PageQuery};
use crate::live::{Live, ReloadStatus};
use crate::metrics::Metrics;
use crate::syslog::InstallerLogs;

/// How long one status document serves every viewer: a room of browsers
/// polling every two seconds costs one walk over the rack per second.
const STATUS_FRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Views {
    pub(crate) live: Arc<Live>,
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) logs: InstallerLogs,
    pub(crate) rogues: Arc<Rogues>,
    pub(crate) withholdings: Arc<crate::booting::Withholdings>,
    /// The hosts' power states as last polled from their BMCs.
    pub(crate) power: Arc<crate::power::Power>,
    /// Whether this appliance answers its segment, and who does.
    pub(crate) duty: Arc<crate::segment::Duty>,
    /// The HTTPS certificate's, shown beside the operator's URL so it can
    /// be compared with what a browser is shown.
    pub(crate) fingerprint: crate::tls::Fingerprint,
    /// The walk over the rack a status document is made from, shared by
    /// every viewer for a moment, whichever page each shows.
    pub(crate) rack: Shared<Arc<Rack>>,
    /// The last whole status document, shared likewise.
    pub(crate) status_doc: Shared,
    /// The last metrics exposition, shared by scrapes that overlap.
    pub(crate) metrics_doc: Shared,
}

/// A document built from memory and shared by every reader who asks
/// while it is fresh: readers that arrive while it is being rebuilt wait
/// for that one rebuild instead of each making their own.
#[derive(Debug)]
pub(crate) struct Shared<T = Bytes>(tokio::sync::Mutex<Option<(Instant, T)>>);

impl<T> Default for Shared<T> {
    fn default() -> Shared<T> {
        Shared(tokio::sync::Mutex::default())
    }
}

impl<T: Clone> Shared<T> {
    /// The document, rebuilt by `build` unless one built no more than
    /// `max_age` before this call is there (a zero age: one built after
    /// this call began, by a reader ahead of it).
    pub(crate) async fn get<E>(
        &self,
        max_age: Duration,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let asked = Instant::now();
        let mut doc = self.0.lock().await;
        if let Some((built, bytes)) = doc.as_ref()
            && *built + max_age >= asked
        {
            return Ok(bytes.clone());
        }
        let bytes = build()?;
        *doc = Some((Instant::now(), bytes.clone()));
        Ok(bytes)
    }
}

/// One walk over the rack for the status document: every host with
/// where its journey stands, and the rest of the document.
#[derive(Debug)]
pub(crate) struct Rack {
    /// The document but its hosts.
    doc: serde_json::Value,
    listed: Vec<Listed>,
}

/// The status document from `rack`: every host, or the page `page` asks
/// for with where it stands (`hosts_page`).
fn status_document(rack: &Rack, page: Option<&PageQuery>) -> Result<Bytes, ApiError> {
    let (hosts, at) = match page {
        None => (rack.listed.iter().collect(), serde_json::Value::Null),
        Some(q) => {
            let p = hosts_page::page(&rack.listed, q);
            let at =
                json!({"total": p.total, "matching": p.matching, "page": p.page, "rows": p.rows});
            (p.hosts, at)
        }
    };
    let hosts = hosts
        .into_iter()
        .map(|Listed { row, diagnosis }| {
            let mut value =
                serde_json::to_value(row).map_err(|e| ApiError::Internal(e.to_string()))?;
            value["diagnosis"] = diagnosis.as_str().into();
            Ok(value)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut doc = rack.doc.clone();
    doc["hosts"] = hosts.into();
    doc["hosts_page"] = at;
    serde_json::to_vec_pretty(&doc)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

impl Views {
    pub(crate) fn host_rows(&self, generation: &Generation) -> Vec<HostRow> {
        let mut rows = host_rows(generation, &self.store);
        for row in &mut rows {
            row.power = row.mac.parse().ok().and_then(|mac| self.power.view(mac));
        }
        rows
    }

    /// `GET /api/hosts/<mac>/timeline`: the stored timeline, the diagnosis
    /// from memory.
    pub(crate) async fn timeline(
        &self,
        generation: &Generation,
        mac: Mac,
    ) -> Result<TimelineView, ApiError> {
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
            .map(DiscoveredRow::from)
            .collect()
    }

    pub(crate) async fn installer_log(&self, mac: Mac) -> Result<Reply, ApiError> {
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || logs.tail(mac, 256 * 1024))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map(Reply::Text)
            .map_err(|_| ApiError::NotFound(format!("no installer log for {mac} yet")))
    }

    /// `GET /api/status`: the rack walked once a second for every reader;
    /// the whole document encoded once for all who read it, or one page of
    /// it ([`PageQuery`]) cut for the reader who asks.
    pub(crate) async fn status_json(
        &self,
        generation: &Generation,
        page: Option<&PageQuery>,
    ) -> Result<Reply, ApiError> {
        let rack = self
            .rack
            .get(STATUS_FRESH, || self.walk(generation).map(Arc::new))
            .await?;
        let body = match page {
            None => {
                self.status_doc
                    .get(STATUS_FRESH, || status_document(&rack, None))
                    .await?
            }
            Some(q) => status_document(&rack, Some(q))?,
        };
        Ok(Reply::Encoded {
            body,
            content_type: "application/json",
        })
    }

    /// `GET /metrics`: scrapes that overlap share one encoding; each gets
    /// one made after it asked.
    pub(crate) async fn metrics(&self, generation: &Generation) -> Result<Reply, ApiError> {
        let text = self
            .metrics_doc
            .get(Duration::ZERO, || {
                Ok::<_, ApiError>(Bytes::from(self.metrics_text(generation)))
            })
            .await?;
        Ok(Reply::OpenMetrics(
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }

    /// Everything the status page shows: the hosts, each with where its
    /// journey stands, and the rest of the document beside them.
    fn walk(&self, generation: &Generation) -> Result<Rack, ApiError> {
        let snap = generation.snapshot();
        let appliance = snap.appliance.clone();
        let now = SystemTime::now();
        let listed: Vec<Listed> = self
            .host_rows(generation)
            .into_iter()
            .map(|row| {
                let diagnosis = match row.mac.parse::<Mac>() {
                    Ok(mac) => self.store.diagnose(mac, now).to_string(),
                    Err(_) => String::new(),
                };
                Listed { row, diagnosis }
            })
            .collect();
        let loaders: Vec<serde_json::Value> = [
            "undionly.kpxe",
            appliance.dhcp.uefi_loader.as_str(),
        ]
        .iter()
        .map(|file| json!({"file": file, "present": appliance.tftp_root.join(file).is_file()}))
        .collect();
        let errors = match self.live.reload_status() {
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
                "address": appliance.server.address.primary().to_string(),
                "addresses": appliance.server.address.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "base_url": generation.urls().base(),
                "https_url": generation.https_url(),
                "fingerprint": self.fingerprint.to_string(),
                "dhcp_mode": appliance.dhcp.mode.as_str(),
                "unknown": appliance.dhcp.unknown.as_str(),
                "interfaces": appliance.server.interfaces,
                "loaders": loaders,
                "proxy": appliance.proxy.as_ref().map(|p| p.url.clone()),
                "mirrors": appliance.mirrors.iter().map(|(name, urls)| json!({
                    "name": name,
                    "urls": urls.iter().map(|u| u.base()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "segment": self.duty.standing(),
                "rogue_dhcp": self.rogues.list(appliance.dhcp.rogue_forget_after, &self.metrics),
                "tokens_withheld": self.withholdings.list(),
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
            "database": self.database_json(),
            "discovered": self.discovered_rows(),
        });
        Ok(Rack { doc, listed })
    }

    /// The shared database's reach; `null` with SQLite.
    fn database_json(&self) -> serde_json::Value {
        let Some(db) = self.store.database() else {
            return serde_json::Value::Null;
        };
        json!({
            "up": db.up,
            "since": humantime::format_rfc3339_seconds(db.since).to_string(),
            "last_error": db.last_error,
            "primary": db.primary,
            "waiting_changes": waiting(&self.store.stats()),
        })
    }

    /// One line on the shared database, none with SQLite.
    fn database_text(&self, page: &mut String) {
        let Some(db) = self.store.database() else {
            return;
        };
        let since = humantime::format_rfc3339_seconds(db.since);
        let primary = db.primary.as_deref().unwrap_or("a Unix socket");
        if db.up {
            let _ = writeln!(
                page,
                "database     PostgreSQL primary at {primary}, up since {since}"
            );
        } else {
            let _ = writeln!(
                page,
                "database     UNREACHABLE since {since} (last primary {primary}): answering from memory, {} change(s) waiting; {}",
                waiting(&self.store.stats()),
                escaped(db.last_error.as_deref().unwrap_or(""))
            );
        }
    }

    pub(crate) fn status_page(&self, generation: &Generation) -> String {
        let snap = generation.snapshot();
        let mut page = String::from("Kickstand\n=========\n\n");
        let _ = writeln!(page, "serving at   {}", generation.urls().base());
        let _ = writeln!(
            page,
            "operator at  {} (certificate SHA-256 {})",
            generation.https_url(),
            self.fingerprint
        );
        let _ = writeln!(page, "dhcp mode    {}", snap.appliance.dhcp.mode.as_str());
        if let Some(s) = self.duty.standing() {
            let since = s.since.map_or("-".into(), |t| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
            });
            let who = match s.role {
                "active" => format!(
                    "ACTIVE: this appliance answers it (term {}, since {since})",
                    s.term
                ),
                "standby" => format!(
                    "standby: {} answers it (term {}, since {since})",
                    s.active.as_deref().unwrap_or("?"),
                    s.term
                ),
                _ => "not answering: the state database cannot be asked who does".to_owned(),
            };
            let _ = writeln!(page, "segment      {}: {who}", s.segment);
            if let Some(e) = &s.error {
                let _ = writeln!(page, "             last election round failed: {e}");
            }
        }
        let _ = writeln!(
            page,
            "profiles     {} file(s), {} OS, {} host(s); generation {} loaded {}",
            snap.files.len(),
            snap.oses.len(),
            snap.hosts.len(),
            generation.id,
            humantime::format_rfc3339_seconds(generation.loaded_at)
        );
        match self.live.reload_status() {
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
        self.warnings_text(generation, &mut page);
        self.database_text(&mut page);
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
        for row in self.host_rows(generation) {
            let _ = writeln!(
                page,
                "  {}  {:<16} {:<18} {:<10} {}",
                row.mac,
                row.hostname,
                row.os,
                row.phase.as_str(),
                escaped(row.last_error.as_deref().unwrap_or(""))
            );
        }
        let discovered = self.store.discovered();
        if !discovered.is_empty() {
            page.push_str("\ndiscovered (kickstand adopt <mac> --hostname <name>)\n");
        }
        for d in discovered {
            let f = &d.facts;
            let _ = writeln!(
                page,
                "  {}  {:<16} {:<30} serial {}",
                d.mac,
                d.ip.map_or("-".into(), ip_text),
                format!("{} {}", fact(&f.manufacturer), fact(&f.product)),
                fact(&f.serial),
            );
        }
        page
    }

    /// What the page's warnings say, as lines: other DHCP servers, boot
    /// scripts served without their token, spoofing alarms.
    fn warnings_text(&self, generation: &Generation, page: &mut String) {
        let forget_after = generation.appliance().dhcp.rogue_forget_after;
        for r in self.rogues.list(forget_after, &self.metrics) {
            let _ = writeln!(
                page,
                "WARNING      another server offers boot information: {} offered {}",
                r["server"].as_str().unwrap_or("?"),
                escaped(r["offered"].as_str().unwrap_or("?"))
            );
        }
        for w in self.withholdings.list() {
            let mac = w["mac"].as_str().unwrap_or("?");
            let line = match w["addresses"].as_array() {
                Some(both) => format!(
                    "two addresses claim {mac}: possible spoofing ({}); it is held until re-armed",
                    both.iter()
                        .filter_map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "the boot script of {mac} was asked from {} and served without its build token: {} ({}×)",
                    w["ip"].as_str().unwrap_or("?"),
                    w["message"].as_str().unwrap_or("?"),
                    w["times"]
                ),
            };
            let _ = writeln!(page, "WARNING      {line}");
        }
    }

    /// The registry, with the gauges that are read from the store set
    /// first.
    fn metrics_text(&self, generation: &Generation) -> String {
        let m = &self.metrics;
        m.profiles.set(generation.snapshot().hosts.len() as i64);
        if let Some(s) = self.duty.standing() {
            let label = crate::metrics::SegmentLabel { segment: s.segment };
            m.segment_active
                .get_or_create(&label)
                .set(i64::from(self.duty.answering()));
            m.segment_term
                .get_or_create(&label)
                .set(i64::try_from(s.term).unwrap_or(i64::MAX));
            m.segment_since
                .get_or_create(&label)
                .set(s.since.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)));
        }
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

/// A reported fact as a person reads it: escaped (a stranger wrote it),
/// `-` where iPXE did not know it.
pub(crate) fn fact(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or_else(|| "-".into(), |v| escaped(v).to_string())
}

/// Every profiled host as `GET /api/hosts` and `kickstand hosts` show it.
pub(crate) fn host_rows(generation: &Generation, store: &StateStore) -> Vec<HostRow> {
    let now = SystemTime::now();
    let states: BTreeMap<Mac, kickstand_state::Host> =
        store.hosts().into_iter().map(|h| (h.mac, h)).collect();
    let last: BTreeMap<Mac, kickstand_state::Event> = store
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
            expected.insert(host.os.clone(), store.expected_install(&host.os));
        }
        let next_boot = match generation.boot_for(*mac, phase) {
            BootDecision::Install => "install",
            _ => "local-disk",
        }
        .to_owned();
        rows.push(HostRow {
            mac: mac.to_string(),
            hostname: host.hostname.clone(),
            os: host.os.clone(),
            groups: host.groups.clone(),
            phase,
            since: state.map(|s| stamp(s.since)),
            in_phase_secs: state.map(|s| now.duration_since(s.since).unwrap_or_default().as_secs()),
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
            power: None,
        });
    }
    rows
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
    pub(crate) next_boot: String,
    pub(crate) last_ip: Option<String>,
    pub(crate) last_event: Option<EventRow>,
    pub(crate) last_error: Option<String>,
    pub(crate) pulled_bytes: u64,
    pub(crate) pulled_files: u64,
    /// What the last completed install of its OS pulled; `None` before one.
    pub(crate) expected_bytes: Option<u64>,
    /// Its power as last polled from its BMC; `None` without a BMC (or
    /// from the state database alone, with no daemon running).
    #[serde(default)]
    pub(crate) power: Option<crate::power::PowerView>,
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

impl From<kickstand_state::Discovered> for DiscoveredRow {
    fn from(d: kickstand_state::Discovered) -> DiscoveredRow {
        DiscoveredRow {
            adopt: format!("kickstand adopt {} --hostname <name>", d.mac),
            mac: d.mac.to_string(),
            first_seen: stamp(d.first_seen),
            last_seen: stamp(d.last_seen),
            ip: d.ip.map(ip_text),
            facts: d.facts,
        }
    }
}

/// Changes not on disk yet: queued, and held by the writer for its next
/// try.
fn waiting(s: &kickstand_state::StoreStats) -> u64 {
    s.queued + s.kept
}
