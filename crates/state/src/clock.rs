//! Times as the database keeps them (milliseconds since the Unix epoch, a
//! `BIGINT` both backends store alike) and as operators read them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch; times before it come out negative rather
/// than failing, so a machine with a wrong clock still gets its events.
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How long from `earlier` to `later`, zero if the clock went backwards.
pub(crate) fn elapsed(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// A time as operators read it in a diagnosis: `2025-03-04 10:02:11 UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub SystemTime);

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = to_ms(self.0).div_euclid(1000);
        match time::OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => write!(
                f,
                "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            Err(_) => write!(f, "{secs} s after the epoch"),
        }
    }
}

/// A duration as operators read it: `45 s`, `10 min`, `2 h 5 min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match (secs / 3600, secs % 3600 / 60) {
            (0, 0) => write!(f, "{secs} s"),
            (0, m) => write!(f, "{m} min"),
            (h, 0) => write!(f, "{h} h"),
            (h, m) => write!(f, "{h} h {m} min"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 1_741_082_531_123, -5_000] {
            assert_eq!(to_ms(from_ms(ms)), ms);
        }
    }

    #[test]
    fn stamps_and_spans_read_as_an_operator_expects() {
        let t = from_ms(1_741_082_531_000);
        assert_eq!(Stamp(t).to_string(), "2025-03-04 10:02:11 UTC");
        assert_eq!(Span(Duration::from_secs(45)).to_string(), "45 s");
        assert_eq!(Span(Duration::from_secs(600)).to_string(), "10 min");
        assert_eq!(Span(Duration::from_secs(7200)).to_string(), "2 h");
        assert_eq!(Span(Duration::from_secs(7500)).to_string(), "2 h 5 min");
    }
}
