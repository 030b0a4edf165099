//! Rate limits on what the LAN can make the store write.
//!
//! [`Limiter`]: repeats of one event kind for one MAC beyond a few a
//! minute are folded into one event at the end of the minute ("37 rejected
//! tokens in the last minute", `"repeated": 37`), so a request replayed ten
//! thousand times costs a handful of rows, and the timeline still says it
//! happened and how often. Its windows are an LRU of bounded size: a flood
//! of forged MACs pushes old windows out (writing what they had folded)
//! rather than growing it.
//!
//! Events about MACs that have no host record (machines without a
//! profile) also pass one shared rate (`kickstand_limit`): those MACs are
//! whatever a stranger chooses to send, so past it their events are
//! counted, not written.

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use kickstand_profiles::Mac;
use lru::LruCache;

use crate::clock;
use crate::event::EventKind;

/// The window repeats are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Events of one kind for one MAC written as they come, per window; a
/// real machine's boot never sends more (two DHCP exchanges, a few
/// transfers), a replayed request does.
pub(crate) const BURST: u32 = 6;
/// Windows remembered at once.
const WINDOWS: usize = 16 * 1024;

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Write,
    /// Counted into its window's summary instead.
    Fold,
}

/// A window's folded repeats, to be written as one event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Folded {
    pub(crate) mac: Mac,
    pub(crate) kind: EventKind,
    /// The last folded event's detail, with `repeated` and `window_s`.
    pub(crate) detail: serde_json::Value,
    pub(crate) time: SystemTime,
}

#[derive(Debug)]
struct Window {
    start: SystemTime,
    written: u32,
    folded: u32,
    last: serde_json::Value,
}

impl Window {
    fn ended(&self, now: SystemTime) -> bool {
        clock::elapsed(self.start, now) >= WINDOW
    }

    fn summary(self, mac: Mac, kind: EventKind, now: SystemTime) -> Option<Folded> {
        if self.folded == 0 {
            return None;
        }
        let mut detail = match self.last {
            serde_json::Value::Object(map) => serde_json::Value::Object(map),
            _ => serde_json::json!({}),
        };
        detail["repeated"] = self.folded.into();
        detail["window_s"] = WINDOW.as_secs().into();
        Some(Folded {
            mac,
            kind,
            detail,
            time: now.min(self.start + WINDOW),
        })
    }
}

/// What repeats are counted by: the MAC, the kind, and the one detail
/// field that makes two events of a kind different facts (a token refused
/// as `wrong` and one refused as `expired`), so folding one never hides
/// the other.
type Key = (Mac, EventKind, Option<String>);

fn facet(kind: &EventKind, detail: &serde_json::Value) -> Option<String> {
    let field = match kind {
        EventKind::TokenRejected | EventKind::DhcpIgnored => "reason",
        EventKind::TftpTransfer => "outcome",
        EventKind::BootScript => "script",
        EventKind::Callback => "stage",
        _ => return None,
    };
    // Values are the daemon's own names; bounded all the same.
    detail
        .get(field)
        .and_then(|v| v.as_str())
        .map(|v| v.chars().take(32).collect())
}

#[derive(Debug)]
pub(crate) struct Limiter {
    windows: LruCache<Key, Window>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter {
            windows: LruCache::new(NonZeroUsize::new(WINDOWS).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

impl Limiter {
    /// Decides for one event of `kind` about `mac`. Summaries that are due
    /// (this key's window ended, or a window pushed out of the LRU) are
    /// added to `due`, to be written before it.
    pub(crate) fn admit(
        &mut self,
        mac: Mac,
        kind: &EventKind,
        detail: &serde_json::Value,
        now: SystemTime,
        due: &mut Vec<Folded>,
    ) -> Verdict {
        let key = (mac, kind.clone(), facet(kind, detail));
        if let Some(w) = self.windows.get_mut(&key) {
            if !w.ended(now) {
                if w.written < BURST {
                    w.written += 1;
                    return Verdict::Write;
                }
                w.folded += 1;
                w.last = detail.clone();
                return Verdict::Fold;
            }
            if let Some(w) = self.windows.pop(&key) {
                due.extend(w.summary(mac, kind.clone(), now));
            }
        }
        let fresh = Window {
            start: now,
            written: 1,
            folded: 0,
            last: serde_json::Value::Null,
        };
        if let Some((old_key, old)) = self.windows.push(key.clone(), fresh)
            && old_key != key
        {
            due.extend(old.summary(old_key.0, old_key.1, now));
        }
        Verdict::Write
    }

    /// The summaries of every window that has ended by `now`.
    pub(crate) fn due(&mut self, now: SystemTime) -> Vec<Folded> {
        let ended: Vec<Key> = self
            .windows
            .iter()
            .filter(|(_, w)| w.ended(now))
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|key| {
                let w = self.windows.pop(&key)?;
                w.summary(key.0, key.1, now)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    fn mac(n: u8) -> Mac {
        format!("52:54:00:00:00:{n:02x}").parse().expect("mac")
    }

    #[test]
    fn repeats_past_the_burst_are_folded_into_one_summary() {
        let mut l = Limiter::default();
        let mut due = Vec::new();
        let kind = EventKind::TokenRejected;
        let verdicts: Vec<Verdict> = (0..40u64)
            .map(|i| l.admit(mac(1), &kind, &json!({"n": i}), at(i * 100), &mut due))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Write).count(), 6);
        assert!(due.is_empty());
        // another MAC has its own window
        assert_eq!(
            l.admit(mac(2), &kind, &json!({}), at(5000), &mut due),
            Verdict::Write
        );
        assert!(l.due(at(59_000)).is_empty(), "the minute is not over");
        let summaries = l.due(at(61_000));
        assert_eq!(summaries.len(), 1, "mac 2 folded nothing");
        let s = &summaries[0];
        assert_eq!((s.mac, &s.kind), (mac(1), &kind));
        assert_eq!(s.detail["repeated"], 34);
        assert_eq!(s.detail["n"], 39, "the last folded event's detail");
        assert_eq!(s.time, at(60_000), "dated at the window's end");
    }

    #[test]
    fn each_reason_is_counted_on_its_own() {
        let mut l = Limiter::default();
        let mut due = Vec::new();
        let kind = EventKind::TokenRejected;
        for i in 0..20 {
            l.admit(mac(1), &kind, &json!({"reason": "wrong"}), at(i), &mut due);
        }
        assert_eq!(
            l.admit(
                mac(1),
                &kind,
                &json!({"reason": "expired"}),
                at(30),
                &mut due
            ),
            Verdict::Write,
            "a flood of one reason does not hide another"
        );
    }

    #[test]
    fn a_new_window_writes_the_old_summary_first() {
        let mut l = Limiter::default();
        let mut due = Vec::new();
        let kind = EventKind::DhcpOffer;
        for i in 0..10 {
            l.admit(mac(1), &kind, &json!({}), at(i), &mut due);
        }
        assert_eq!(
            l.admit(mac(1), &kind, &json!({}), at(70_000), &mut due),
            Verdict::Write
        );
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].detail["repeated"], 4);
    }
}
