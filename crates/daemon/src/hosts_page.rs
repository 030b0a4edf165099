//! One page of the rack for the status page:
//! `/api/status?rows=100&page=2&sort=phase&dir=-1&filter=node0`. The rack is
//! filtered, sorted and cut here, so a poll at 5,000 hosts carries the 100
//! rows the page shows, not the whole rack (2.6 MB) for the browser to
//! fetch and parse every two seconds. Without `rows`, `/api/status` is the
//! whole rack, as it always was (scripts and `kickstand status` read it).

use std::cmp::Ordering;

use kickstand_http::ApiError;
use kickstand_state::Phase;

use crate::views::HostRow;

/// Rows one page may ask for at most.
const MAX_ROWS: usize = 500;

/// The status page's sortable columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Hostname,
    Mac,
    Os,
    Phase,
    Power,
    Progress,
    InPhase,
    LastEvent,
    /// "Where it is": the last error, else the diagnosis.
    Diagnosis,
}

impl Column {
    fn parse(name: &str) -> Option<Column> {
        Some(match name {
            "hostname" => Column::Hostname,
            "mac" => Column::Mac,
            "os" => Column::Os,
            "phase" => Column::Phase,
            "power" => Column::Power,
            "progress" => Column::Progress,
            "in_phase_secs" => Column::InPhase,
            "last_event" => Column::LastEvent,
            "diagnosis" => Column::Diagnosis,
            _ => return None,
        })
    }
}

/// Which page of the rack, in which order, of which hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageQuery {
    page: usize,
    rows: usize,
    column: Column,
    descending: bool,
    filter: String,
}

impl PageQuery {
    /// From `/api/status`'s query: `rows` (1 to 500), `page` (from 0; one
    /// past the last gives the last), `sort` (a column; `phase` unsaid),
    /// `dir` (`-1` for descending) and `filter` (text in the hostname, MAC
    /// or phase, any case). `None` without `rows`: the whole rack.
    pub(crate) fn parse(query: &str) -> Result<Option<PageQuery>, ApiError> {
        let mut q = PageQuery {
            page: 0,
            rows: 0,
            column: Column::Phase,
            descending: false,
            filter: String::new(),
        };
        let bad = |what: &str| ApiError::BadRequest(format!("/api/status: {what}"));
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "rows" => {
                    q.rows = value
                        .parse()
                        .ok()
                        .filter(|r| (1..=MAX_ROWS).contains(r))
                        .ok_or_else(|| bad(&format!("rows must be 1 to {MAX_ROWS}")))?;
                }
                "page" => q.page = value.parse().map_err(|_| bad("page must be a number"))?,
                "sort" => {
                    q.column =
                        Column::parse(&value).ok_or_else(|| bad("no such column to sort by"))?
                }
                "dir" => q.descending = value == "-1",
                "filter" => q.filter = value.trim().to_lowercase(),
                _ => {}
            }
        }
        Ok((q.rows > 0).then_some(q))
    }
}

/// A host as the page lists it: its row and where its journey stands.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) row: HostRow,
    pub(crate) diagnosis: String,
}

/// The page asked for, and where it stands in the rack.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    pub(crate) hosts: Vec<&'a Listed>,
    /// Hosts in the rack.
    pub(crate) total: usize,
    /// Hosts the filter keeps.
    pub(crate) matching: usize,
    /// The page given: the one asked, or the last one there is.
    pub(crate) page: usize,
    pub(crate) rows: usize,
}

/// Filters, sorts and cuts `all` as `q` says.
pub(crate) fn page<'a>(all: &'a [Listed], q: &PageQuery) -> Page<'a> {
    let total = all.len();
    let mut kept: Vec<&Listed> = all
        .iter()
        .filter(|l| {
            q.filter.is_empty()
                || [l.row.hostname.as_str(), &l.row.mac, l.row.phase.as_str()]
                    .iter()
                    .any(|v| v.to_lowercase().contains(&q.filter))
        })
        .collect();
    kept.sort_by(|a, b| {
        let order = compare(a, b, q.column);
        if q.descending { order.reverse() } else { order }
    });
    let matching = kept.len();
    let page = q.page.min(matching.div_ceil(q.rows).max(1) - 1);
    let hosts = kept.into_iter().skip(page * q.rows).take(q.rows).collect();
    Page {
        hosts,
        total,
        matching,
        page,
        rows: q.rows,
    }
}

/// By `column`, then by hostname and MAC, so every order is total and a
/// poll does not reshuffle equal rows. What a host lacks sorts first.
fn compare(a: &Listed, b: &Listed, column: Column) -> Ordering {
    let (x, y) = (&a.row, &b.row);
    let by = match column {
        Column::Hostname => Ordering::Equal,
        Column::Mac => x.mac.cmp(&y.mac),
        Column::Os => x.os.cmp(&y.os),
        Column::Phase => rank(x.phase).cmp(&rank(y.phase)),
        Column::Power => power(x).cmp(power(y)),
        Column::Progress => progress(x).total_cmp(&progress(y)),
        Column::InPhase => x.in_phase_secs.cmp(&y.in_phase_secs),
        Column::LastEvent => {
            let time = |r: &HostRow| r.last_event.as_ref().map(|e| e.time.clone());
            time(x).cmp(&time(y))
        }
        Column::Diagnosis => where_it_is(a).cmp(where_it_is(b)),
    };
    by.then_with(|| x.hostname.cmp(&y.hostname))
        .then_with(|| x.mac.cmp(&y.mac))
}

/// What needs a look first: failures, then what is under way, installed
/// last.
fn rank(phase: Phase) -> u8 {
    match phase {
        Phase::Failed => 0,
        Phase::Installing => 1,
        Phase::Booting => 2,
        Phase::Rearmed => 3,
        Phase::Discovered => 4,
        Phase::New => 5,
        Phase::Installed => 6,
    }
}

/// The power column: its state, `error` when the read failed, nothing
/// without a BMC.
fn power(row: &HostRow) -> &str {
    match &row.power {
        None => "",
        Some(p) => p.state.as_deref().unwrap_or("error"),
    }
}

/// How far its install is, as the progress column shows it.
fn progress(row: &HostRow) -> f64 {
    #[allow(clippy::cast_precision_loss)] // a ratio for ordering
    match row.expected_bytes {
        Some(expected) if expected > 0 => row.pulled_bytes as f64 / expected as f64,
        _ => row.pulled_bytes as f64,
    }
}

fn where_it_is(l: &Listed) -> &str {
    l.row.last_error.as_deref().unwrap_or(&l.diagnosis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_without_rows_is_the_whole_rack() {
        assert_eq!(PageQuery::parse("").ok(), Some(None));
        assert_eq!(PageQuery::parse("sort=mac").ok(), Some(None));
        let q = PageQuery::parse("rows=100&page=2&sort=in_phase_secs&dir=-1&filter=%20Node0%20")
            .ok()
            .flatten()
            .expect("a page");
        assert_eq!(
            q,
            PageQuery {
                page: 2,
                rows: 100,
                column: Column::InPhase,
                descending: true,
                filter: "node0".into(),
            }
        );
        for bad in [
            "rows=0",
            "rows=501",
            "rows=x",
            "rows=10&page=-1",
            "rows=10&sort=token",
        ] {
            assert!(PageQuery::parse(bad).is_err(), "{bad}");
        }
    }
}
