//! How long a segment goes unanswered when its active appliance dies or
//! loses the database: two `kickstand serve` (release build) on one
//! segment in network namespaces, one PostgreSQL; the active one is
//! SIGKILLed, or its link to the database cut, and a PXE client sends a
//! DISCOVER every 100 ms until the standby answers. Each case `RUNS` times
//! (default 5), each on a fresh segment; the median and the spread.
//!
//!     cargo bench -p kickstand --bench failover     # as root

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::rack::Rack;

/// How the active appliance goes.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Sigkill,
    DatabaseCut,
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for failure in [Failure::Sigkill, Failure::DatabaseCut] {
        let mut gaps: Vec<Duration> = (0..runs).map(|_| unanswered(failure)).collect();
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        println!(
            "{failure:?}: the segment unanswered for {:.2} s (median of {runs}; {:.2}–{:.2} s)",
            median.as_secs_f64(),
            gaps[0].as_secs_f64(),
            gaps[gaps.len() - 1].as_secs_f64()
        );
    }
}

/// From the failure to the standby's first answer to a PXE client.
fn unanswered(failure: Failure) -> Duration {
    let mut rack = Rack::up("fo", 2);
    rack.start_all();
    let active = rack.active();
    let standby = rack.appliances[1 - active].own.clone();
    let at = Instant::now();
    match failure {
        Failure::Sigkill => rack.appliances[active].signal("KILL"),
        Failure::DatabaseCut => rack.database_link(active, false),
    }
    loop {
        let answers = Rack::answers(rack.discover(Duration::from_millis(100)));
        if answers.iter().any(|(from, _)| *from == standby) {
            return at.elapsed();
        }
        assert!(
            at.elapsed() < Duration::from_secs(60),
            "no takeover:\n{}",
            rack.logs()
        );
    }
}
