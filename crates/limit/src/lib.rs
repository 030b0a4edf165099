//! Rate limits on what the LAN can make Kickstand do: answers to machines
//! without a profile, events about strangers, reads of the heavy views
//! from one address. Each is a GCRA (the generic cell rate algorithm, a
//! token bucket kept as one time stamp): `rate` a second on average, up to
//! `burst` at once.
//!
//! [`Flow`] is one limit; [`Keyed`] is one limit per key in a table of
//! bounded size, least recently used keys forgotten first — the keys are
//! what strangers send (addresses), so the table must not grow with them.
//!
//! Time is passed in, as a [`Duration`] since any fixed origin the caller
//! keeps (an `Instant` at start, or the Unix epoch): the state store
//! decides with the times of the events it is given, which its tests set.
//!
//! Why by hand: `governor` is the well-kept crate for GCRA, but its keyed
//! limiters keep every key until swept (no bound on a table a stranger
//! fills) and read time from its own clocks. What is needed here is forty
//! lines of arithmetic and an LRU.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;

/// A rate: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval: Duration,
    burst: u32,
}

impl Rate {
    /// At least one a second and a burst of one.
    pub const fn per_second(per_second: u32, burst: u32) -> Rate {
        let per_second = if per_second == 0 { 1 } else { per_second };
        Rate {
            interval: Duration::from_nanos(1_000_000_000 / per_second as u64),
            burst: if burst == 0 { 1 } else { burst },
        }
    }

    /// How far ahead of `now` the flow may run: what `burst` buys.
    fn tolerance(&self) -> Duration {
        self.interval * (self.burst - 1)
    }
}

/// What a request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// After this wait (its place is kept).
    After(Duration),
    /// Not within the longest wait asked for.
    Refused,
}

/// One limited flow.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    rate: Rate,
    /// The theoretical arrival time of the next request: when the flow
    /// would be back to zero had every request come at the rate.
    tat: Duration,
}

impl Flow {
    pub fn new(rate: Rate) -> Flow {
        Flow {
            rate,
            tat: Duration::ZERO,
        }
    }

    /// Takes a place at `now` if one is free at once.
    pub fn take(&mut self, now: Duration) -> bool {
        self.reserve(now, Duration::ZERO) == Admit::Now
    }

    /// Takes a place at `now`, or the earliest one within `max_wait`.
    pub fn reserve(&mut self, now: Duration, max_wait: Duration) -> Admit {
        let tat = self.tat.max(now);
        let earliest = tat.saturating_sub(self.rate.tolerance());
        let wait = earliest.saturating_sub(now);
        if wait > max_wait {
            return Admit::Refused;
        }
        self.tat = tat + self.rate.interval;
        if wait.is_zero() {
            Admit::Now
        } else {
            Admit::After(wait)
        }
    }
}

/// One flow per key, in a table of at most `capacity` keys.
#[derive(Debug)]
pub struct Keyed<K: Hash + Eq> {
    rate: Rate,
    flows: LruCache<K, Flow>,
}

impl<K: Hash + Eq> Keyed<K> {
    pub fn new(rate: Rate, capacity: usize) -> Keyed<K> {
        Keyed {
            rate,
            flows: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// [`Flow::reserve`] for `key`'s flow. A key pushed out of the table
    /// starts afresh when it comes back: a table full of strangers costs a
    /// returning key at most one burst more.
    pub fn reserve(&mut self, key: K, now: Duration, max_wait: Duration) -> Admit {
        let rate = self.rate;
        self.flows
            .get_or_insert_mut(key, || Flow::new(rate))
            .reserve(now, max_wait)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut f = Flow::new(Rate::per_second(10, 5));
        let now = ms(1000);
        assert_eq!((0..8).filter(|_| f.take(now)).count(), 5);
        assert!(!f.take(now + ms(50)));
        assert!(f.take(now + ms(100)), "one place every 100 ms");
        assert!(!f.take(now + ms(150)));
        assert_eq!(
            (0..20).filter(|_| f.take(now + ms(10_000))).count(),
            5,
            "a quiet while refills the burst, no more"
        );
    }

    #[test]
    fn a_reservation_waits_its_turn_or_is_refused() {
        let mut f = Flow::new(Rate::per_second(10, 1));
        let now = ms(1000);
        assert_eq!(f.reserve(now, ms(250)), Admit::Now);
        assert_eq!(f.reserve(now, ms(250)), Admit::After(ms(100)));
        assert_eq!(f.reserve(now, ms(250)), Admit::After(ms(200)));
        assert_eq!(
            f.reserve(now, ms(250)),
            Admit::Refused,
            "past the longest wait"
        );
        assert_eq!(
            f.reserve(now + ms(300), ms(0)),
            Admit::Now,
            "a refusal kept no place"
        );
    }

    #[test]
    fn keys_are_limited_apart_and_the_table_is_bounded() {
        let mut k = Keyed::new(Rate::per_second(1, 1), 2);
        let now = ms(5000);
        assert_eq!(k.reserve("a", now, ms(0)), Admit::Now);
        assert_eq!(k.reserve("a", now, ms(0)), Admit::Refused);
        assert_eq!(k.reserve("b", now, ms(0)), Admit::Now, "b has its own flow");
        assert_eq!(k.reserve("c", now, ms(0)), Admit::Now);
        assert_eq!(k.len(), 2, "the least recently used key went");
        assert_eq!(
            k.reserve("a", now, ms(0)),
            Admit::Now,
            "forgotten, so afresh"
        );
    }
}
