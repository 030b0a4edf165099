//! The HTTP front's metric family: requests by route and status. The
//! daemon hands in its registry; this crate registers and owns the family.

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::front::RouteKind;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    /// The route kind, never the path: label values stay few whatever a
    /// LAN host asks for.
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    requests: Family<Request, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        registry.register(
            "kickstand_http_requests",
            "HTTP requests by route and status",
            metrics.requests.clone(),
        );
        metrics
    }

    pub fn observe(&self, route: RouteKind, status: StatusCode) {
        self.requests
            .get_or_create(&Request {
                route: route.as_str(),
                status: status.as_u16(),
            })
            .inc();
    }
}

/// The OpenMetrics text `prometheus-client` writes, as the Prometheus text
/// format (0.0.4) that `promtool` and older scrapers read: a counter
/// family is named with its `_total` sample name there, and there is no
/// `# EOF`. Everything else (gauges, histograms, label syntax) is the same
/// in both. Written by hand because `prometheus-client` encodes only
/// OpenMetrics, and the difference is these two rules.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Held until the TYPE line says whether the name changes.
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_sample_name_and_eof_goes() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{route=\"x\"} 1\n\
                  # HELP b Things.\n# TYPE b gauge\nb 2\n\
                  # HELP c Durations.\n# TYPE c histogram\nc_sum 1.0\nc_count 1\nc_bucket{le=\"+Inf\"} 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{route=\"x\"} 1\n\
             # HELP b Things.\n# TYPE b gauge\nb 2\n\
             # HELP c Durations.\n# TYPE c histogram\nc_sum 1.0\nc_count 1\nc_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
