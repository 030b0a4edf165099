//! TFTP's metric families: every request's end, by outcome, and the bytes
//! sent. The daemon hands in its registry and reports each
//! [`TransferReport`]; this crate registers and owns the families.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::source::TransferReport;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ended {
    outcome: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    transfers: Family<Ended, Counter>,
    bytes: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        registry.register(
            "kickstand_tftp_transfers",
            "TFTP requests by how they ended",
            metrics.transfers.clone(),
        );
        registry.register(
            "kickstand_tftp_sent_bytes",
            "TFTP bytes sent and acknowledged",
            metrics.bytes.clone(),
        );
        metrics
    }

    pub fn observe(&self, report: &TransferReport) {
        self.transfers
            .get_or_create(&Ended {
                outcome: report.outcome.name(),
            })
            .inc();
        self.bytes.inc_by(report.bytes);
    }
}
