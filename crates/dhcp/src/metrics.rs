//! ProxyDHCP's metric families: every decision, by outcome and named
//! reason, DHCPv6's apart, and every router solicitation the same way. The daemon hands in
//! its registry; this crate registers and owns the families.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::advertise;
use crate::proxy::Action;
use crate::v6;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    /// `reply` or `ignore`.
    outcome: &'static str,
    /// For an ignore, why ([`crate::Reason::name`]); for a reply, empty.
    reason: &'static str,
    /// For a reply, which firmware it went to.
    firmware: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Solicitation {
    /// `advertised` or `ignore`.
    outcome: &'static str,
    /// For an ignore, why ([`advertise::Ignored::name`]).
    reason: &'static str,
}

/// The families; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    decisions: Family<Decision, Counter>,
    decisions_v6: Family<Decision, Counter>,
    solicitations: Family<Solicitation, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        registry.register(
            "kickstand_dhcp_decisions",
            "ProxyDHCP decisions by outcome and named reason",
            metrics.decisions.clone(),
        );
        registry.register(
            "kickstand_dhcpv6_decisions",
            "DHCPv6 boot answer decisions by outcome and named reason",
            metrics.decisions_v6.clone(),
        );
        registry.register(
            "kickstand_router_solicitations",
            "IPv6 router solicitations by outcome: advertised (a machine ProxyDHCP just answered) or ignore, with why",
            metrics.solicitations.clone(),
        );
        metrics
    }

    pub fn observe_solicitation(&self, outcome: &advertise::Outcome) {
        let labels = match outcome {
            advertise::Outcome::Answer(_) => Solicitation {
                outcome: "advertised",
                reason: "",
            },
            advertise::Outcome::Ignore(why) => Solicitation {
                outcome: "ignore",
                reason: why.name(),
            },
        };
        self.solicitations.get_or_create(&labels).inc();
    }

    pub fn observe(&self, action: &Action) {
        let labels = match action {
            Action::Respond(reply) => Decision {
                outcome: "reply",
                reason: "",
                firmware: reply.firmware.map_or("", |f| f.name()),
            },
            Action::Ignore(reason) => Decision {
                outcome: "ignore",
                reason: reason.name(),
                firmware: "",
            },
        };
        self.decisions.get_or_create(&labels).inc();
    }

    pub fn observe_v6(&self, action: &v6::Action) {
        let labels = match action {
            v6::Action::Respond(reply) => Decision {
                outcome: "reply",
                reason: "",
                firmware: reply.firmware.name(),
            },
            v6::Action::Ignore(reason) => Decision {
                outcome: "ignore",
                reason: reason.name(),
                firmware: "",
            },
        };
        self.decisions_v6.get_or_create(&labels).inc();
    }
}
