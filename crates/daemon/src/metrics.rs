//! `/metrics`: one `prometheus-client` registry, built at start. ProxyDHCP,
//! TFTP, the HTTP front and the repo proxy register their own families in
//! it; the daemon adds what only it knows (hosts by phase, reloads,
//! installs, tokens, boot scripts, installer logs). Every fact is counted
//! once, here, and the status page reads the same counters.

use crate::wire_label::WireLabel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Named {
    pub(crate) name: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SegmentLabel {
    pub(crate) segment: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PhaseLabel {
    pub(crate) phase: &'static str,
}

/// What another server sent, so both are [`WireLabel`]s: escaped and
/// capped, whatever the packet held.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RogueLabels {
    server: WireLabel,
    offered: WireLabel,
}

impl RogueLabels {
    pub(crate) fn new(server: std::net::IpAddr, offered: WireLabel) -> RogueLabels {
        RogueLabels {
            server: WireLabel::new(&server.to_string()),
            offered,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) dhcp: kickstand_dhcp::Metrics,
    pub(crate) tftp: kickstand_tftp::Metrics,
    pub(crate) http: kickstand_http::Metrics,
    /// Host profiles in force.
    pub(crate) profiles: Gauge,
    /// Hosts by life-cycle phase (profiles without a record are `new`).
    pub(crate) hosts: Family<PhaseLabel, Gauge>,
    pub(crate) reloads: Family<Named, Counter>,
    /// Boot scripts served, by kind (install, local-boot, discover, …).
    pub(crate) boot_scripts: Family<Named, Counter>,
    pub(crate) kickstarts: Counter,
    /// Kickstart callbacks, by stage.
    pub(crate) callbacks: Family<Named, Counter>,
    pub(crate) token_rejections: Counter,
    /// Boot scripts served without the build token, by why (the address
    /// asking is not the one the host's DHCP exchange gave it, …).
    pub(crate) tokens_withheld: Family<Named, Counter>,
    /// Requests for MACs without a profile.
    pub(crate) unknown_hosts: Counter,
    /// From the kickstart's fetch to `%post`, in seconds.
    pub(crate) install_seconds: Histogram,
    pub(crate) installer_log_lines: Counter,
    pub(crate) installer_log_dropped: Counter,
    pub(crate) discovery_reports: Family<Named, Counter>,
    /// Other servers offering boot information on this segment.
    pub(crate) rogue_dhcp: Family<RogueLabels, Gauge>,
    /// Offers from servers past the listed ones (a flood of forged offers).
    pub(crate) rogue_unlisted: Counter,
    /// PXE clients without a profile not answered, over their shared rate.
    pub(crate) strangers_shed: Counter,
    /// 1 while this appliance answers its segment, 0 standing by.
    pub(crate) segment_active: Family<SegmentLabel, Gauge>,
    /// The segment's tenure (one more at every takeover).
    pub(crate) segment_term: Family<SegmentLabel, Gauge>,
    /// When the active appliance's tenure began, whichever that is.
    pub(crate) segment_since: Family<SegmentLabel, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let dhcp = kickstand_dhcp::Metrics::register(&mut registry);
        let tftp = kickstand_tftp::Metrics::register(&mut registry);
        let http = kickstand_http::Metrics::register(&mut registry);
        let m = Metrics {
            dhcp,
            tftp,
            http,
            profiles: Gauge::default(),
            hosts: Family::default(),
            reloads: Family::default(),
            boot_scripts: Family::default(),
            kickstarts: Counter::default(),
            callbacks: Family::default(),
            token_rejections: Counter::default(),
            tokens_withheld: Family::default(),
            unknown_hosts: Counter::default(),
            // 5 minutes to about 5 hours.
            install_seconds: Histogram::new([
                300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0, 18000.0,
            ]),
            installer_log_lines: Counter::default(),
            installer_log_dropped: Counter::default(),
            discovery_reports: Family::default(),
            rogue_dhcp: Family::default(),
            rogue_unlisted: Counter::default(),
            strangers_shed: Counter::default(),
            segment_active: Family::default(),
            segment_term: Family::default(),
            segment_since: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kickstand_profiles_hosts",
            "host profiles in force",
            m.profiles.clone(),
        );
        registry.register(
            "kickstand_segment_active",
            "1 while this appliance answers its segment, 0 while it stands by",
            m.segment_active.clone(),
        );
        registry.register(
            "kickstand_segment_term",
            "the segment's tenure: one more at every change of active appliance",
            m.segment_term.clone(),
        );
        registry.register(
            "kickstand_segment_active_since_seconds",
            "when the segment's active appliance took it, in seconds since the epoch",
            m.segment_since.clone(),
        );
        registry.register(
            "kickstand_hosts",
            "hosts by life-cycle phase",
            m.hosts.clone(),
        );
        registry.register(
            "kickstand_reloads",
            "profile reloads by result",
            m.reloads.clone(),
        );
        registry.register(
            "kickstand_boot_scripts",
            "iPXE boot scripts served, by kind",
            m.boot_scripts.clone(),
        );
        registry.register(
            "kickstand_kickstarts",
            "kickstarts served",
            m.kickstarts.clone(),
        );
        registry.register(
            "kickstand_callbacks",
            "kickstart callbacks by stage",
            m.callbacks.clone(),
        );
        registry.register(
            "kickstand_token_rejections",
            "kickstart and callback requests refused for their build token",
            m.token_rejections.clone(),
        );
        registry.register(
            "kickstand_build_tokens_withheld",
            "boot scripts served without the build token, by why: the address asking is not the one the host's DHCP exchange gave it (other-address), no exchange was seen (no-exchange), or two addresses claim the MAC (conflict)",
            m.tokens_withheld.clone(),
        );
        registry.register(
            "kickstand_unknown_host_requests",
            "requests for MACs without a profile",
            m.unknown_hosts.clone(),
        );
        registry.register(
            "kickstand_install_duration_seconds",
            "installs from kickstart fetch to %post",
            m.install_seconds.clone(),
        );
        registry.register(
            "kickstand_installer_log_lines",
            "installer log lines kept",
            m.installer_log_lines.clone(),
        );
        registry.register(
            "kickstand_installer_log_dropped",
            "syslog lines from addresses no host has",
            m.installer_log_dropped.clone(),
        );
        registry.register(
            "kickstand_discovery_reports",
            "discovery reports by outcome",
            m.discovery_reports.clone(),
        );
        registry.register(
            "kickstand_rogue_dhcp_servers",
            "other servers seen offering boot information on this segment",
            m.rogue_dhcp.clone(),
        );
        registry.register(
            "kickstand_rogue_dhcp_offers_unlisted",
            "offers from other servers past the ones listed (a flood of forged offers is counted here)",
            m.rogue_unlisted.clone(),
        );
        registry.register(
            "kickstand_dhcp_strangers_shed",
            "PXE clients without a profile not answered because strangers were over their shared rate",
            m.strangers_shed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The registry in OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        out
    }

    pub(crate) fn named(family: &Family<Named, Counter>, name: &'static str) {
        family.get_or_create(&Named { name }).inc();
    }
}

/// The state store's writer and bounds, read at each scrape.
#[derive(Debug)]
pub(crate) struct StoreCollector(pub(crate) kickstand_state::StateStore);

impl prometheus_client::collector::Collector for StoreCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let s = self.0.stats();
        for (name, help, n) in [
            (
                "kickstand_state_transactions",
                "transactions the state writer committed",
                s.transactions,
            ),
            (
                "kickstand_state_changes",
                "changes those transactions carried (many per transaction)",
                s.changes,
            ),
            (
                "kickstand_state_failed_commits",
                "commits that failed (kept and retried, or written host by host)",
                s.failed_commits,
            ),
            (
                "kickstand_state_dropped_changes",
                "changes the database refused, dropped (memory kept them)",
                s.dropped_changes,
            ),
            (
                "kickstand_state_shed_events",
                "activity and noise events shed because the write queue was full",
                s.shed_events,
            ),
            (
                "kickstand_state_folded_events",
                "repeated events folded into per-minute summaries",
                s.folded_events,
            ),
            (
                "kickstand_state_stranger_events_refused",
                "events about MACs without a profile not written, over their shared rate",
                s.stranger_events_refused,
            ),
        ] {
            ConstCounter::new(n).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        for (name, help, n) in [
            (
                "kickstand_state_queued",
                "changes waiting for the state writer",
                s.queued,
            ),
            (
                "kickstand_state_kept",
                "changes whose commit failed while the database was unreachable, held for the next try",
                s.kept,
            ),
            (
                "kickstand_state_discovered",
                "discovered machines held",
                s.discovered,
            ),
        ] {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        // A shared database only: SQLite is a file of the appliance's own.
        if let Some(db) = self.0.database() {
            let since = db
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            for (name, help, n) in [
                (
                    "kickstand_state_database_up",
                    "1 when the shared state database takes writes, 0 while it is unreachable (answers come from memory, changes wait)",
                    i64::from(db.up),
                ),
                (
                    "kickstand_state_database_since_seconds",
                    "when the shared state database last became reachable or unreachable, in seconds since the epoch",
                    i64::try_from(since).unwrap_or(i64::MAX),
                ),
            ] {
                ConstGauge::new(n).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

/// Log lines the logging thread dropped because it could not keep up.
#[derive(Debug)]
pub(crate) struct LogCollector;

impl prometheus_client::collector::Collector for LogCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let dropped = crate::LOG_DROPPED
            .get()
            .map_or(0, |c| c.dropped_lines() as u64);
        prometheus_client::metrics::counter::ConstCounter::new(dropped).encode(
            encoder.encode_descriptor(
                "kickstand_log_lines_dropped",
                "log lines dropped because the logging thread fell behind",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?,
        )
    }
}
