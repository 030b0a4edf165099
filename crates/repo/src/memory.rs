//! Copies in memory of small committed bodies, so a hit of a file served
//! before costs no `open`, `read` or `close` and one copy (into the socket)
//! instead of two. Bounded by a byte budget, least recently used out first.
//!
//! It owns the bound and the order, nothing else: which body may come in
//! and when a copy must go is the store's decision (`store`), made under
//! the index lock. Each copy carries the version of the index entry it was
//! read under — a new version is given at every commit, and a removed
//! entry is never given its version back — so a copy is served only for the
//! very object it was read from, never for a respin that replaced it, and
//! a copy read just before a commit and offered just after it is refused.

use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;

use crate::fetch::Head;
use crate::store::Meta;

/// Bodies up to this size are read whole, sent as one frame and kept in
/// memory. Most packages of an install and every repodata record but
/// primary are smaller; above it the body's copy and transfer dwarf the
/// `open`/`close` a memory copy would save, and one large body would push
/// out dozens of small ones.
pub(crate) const MAX_EACH: u64 = 256 * 1024;

/// The default budget: some 4,000 bodies of 16 KiB, more than the small
/// packages and repodata records a rack's installs share, in a few percent
/// of the RAM of the smallest appliance. What does not fit is still served
/// from the page cache, as before: the budget buys syscalls and a copy,
/// not the disk.
pub(crate) const DEFAULT_BUDGET: u64 = 64 * 1024 * 1024;

/// What a copy costs besides its bytes (its key, the map and list nodes,
/// the `Bytes` header): counted so the budget also bounds how many empty
/// or tiny bodies are kept.
const OVERHEAD: u64 = 256;

/// What [`Memory::put`] did with a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Kept,
    /// Larger than [`MAX_EACH`] or than the whole budget.
    TooLarge,
}

/// A committed body whole in memory, with the header read from the same
/// file: kept here, or read for one response. A clone is one count, taken
/// and dropped by every hit.
#[derive(Debug, Clone)]
pub(crate) struct InMemory(Arc<Parts>);

#[derive(Debug)]
struct Parts {
    meta: Arc<Meta>,
    body: Bytes,
    /// Its response headers, made once for every response from the copy.
    head: Head,
}

impl InMemory {
    pub(crate) fn new(meta: Arc<Meta>, body: Bytes) -> InMemory {
        let head = Head::new(&meta, Some(body.len() as u64));
        InMemory(Arc::new(Parts { meta, body, head }))
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.0.meta
    }

    pub(crate) fn body(&self) -> &Bytes {
        &self.0.body
    }

    pub(crate) fn head(&self) -> &Head {
        &self.0.head
    }
}

#[derive(Debug)]
struct Held {
    version: u64,
    copy: InMemory,
}

impl Held {
    fn cost(&self) -> u64 {
        self.copy.body().len() as u64 + OVERHEAD
    }
}

#[derive(Debug)]
pub(crate) struct Memory {
    /// By object hash, least recently used first.
    copies: LruCache<String, Held>,
    bytes: u64,
    budget: u64,
    /// Copies pushed out to stay within the budget.
    evicted: u64,
}

impl Memory {
    pub(crate) fn new(budget: u64) -> Memory {
        Memory {
            copies: LruCache::unbounded(),
            bytes: 0,
            budget,
            evicted: 0,
        }
    }

    /// The copy of `hash` read under `version`, made the most recently
    /// used. A copy of another version is dropped: it is of another object.
    pub(crate) fn get(&mut self, hash: &str, version: u64) -> Option<InMemory> {
        match self.copies.get(hash) {
            Some(c) if c.version == version => Some(c.copy.clone()),
            Some(_) => {
                self.remove(hash);
                None
            }
            None => None,
        }
    }

    /// Keeps `copy` as the copy of `hash` at `version`, pushing out the
    /// least recently used copies until it fits.
    pub(crate) fn put(&mut self, hash: &str, version: u64, copy: InMemory) -> Put {
        let held = Held { version, copy };
        if held.copy.body().len() as u64 > MAX_EACH || held.cost() > self.budget {
            return Put::TooLarge;
        }
        self.remove(hash);
        self.bytes += held.cost();
        self.copies.put(hash.to_string(), held);
        self.shrink();
        Put::Kept
    }

    /// Forgets the copy of `hash`, if any (its object was replaced,
    /// evicted from disk or found damaged).
    pub(crate) fn remove(&mut self, hash: &str) {
        if let Some(c) = self.copies.pop(hash) {
            self.bytes -= c.cost();
        }
    }

    pub(crate) fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
        self.shrink();
    }

    fn shrink(&mut self) {
        while self.bytes > self.budget {
            let Some((_, c)) = self.copies.pop_lru() else {
                break;
            };
            self.bytes -= c.cost();
            self.evicted += 1;
        }
    }

    /// (copies, bytes counted against the budget, budget, copies evicted)
    pub(crate) fn usage(&self) -> (u64, u64, u64, u64) {
        (
            self.copies.len() as u64,
            self.bytes,
            self.budget,
            self.evicted,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> InMemory {
        InMemory::new(Arc::new(Meta::default()), Bytes::from(vec![7u8; n]))
    }

    /// Each row: operations on a memory of 4 copies' budget, and which
    /// hashes it holds afterwards, in no particular order.
    #[test]
    fn bounds_and_order() {
        const KIB: usize = 1024;
        let each = (16 * KIB) as u64 + OVERHEAD;
        enum Op {
            Add(&'static str, u64, usize, Put),
            Get(&'static str, u64, bool),
            Remove(&'static str),
            Budget(u64),
        }
        use Op::*;
        let table: Vec<(&str, Vec<Op>, Vec<&str>, u64)> = vec![
            (
                "fills up to the budget",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("b", 1, 16 * KIB, Put::Kept),
                    Add("c", 1, 16 * KIB, Put::Kept),
                    Add("d", 1, 16 * KIB, Put::Kept),
                ],
                vec!["a", "b", "c", "d"],
                0,
            ),
            (
                "the least recently used goes first",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("b", 1, 16 * KIB, Put::Kept),
                    Add("c", 1, 16 * KIB, Put::Kept),
                    Add("d", 1, 16 * KIB, Put::Kept),
                    Get("a", 1, true),
                    Add("e", 1, 16 * KIB, Put::Kept),
                ],
                vec!["a", "c", "d", "e"],
                1,
            ),
            (
                "one larger body pushes out as many as it needs",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("b", 1, 16 * KIB, Put::Kept),
                    Add("c", 1, 16 * KIB, Put::Kept),
                    Add("d", 1, 40 * KIB, Put::Kept),
                ],
                vec!["c", "d"],
                2,
            ),
            (
                "larger than the budget: not kept, nothing pushed out",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("b", 1, 65 * KIB, Put::TooLarge),
                ],
                vec!["a"],
                0,
            ),
            (
                "empty bodies count too",
                (0..5)
                    .map(|i| Add(["a", "b", "c", "d", "e"][i], 1, 0, Put::Kept))
                    .chain([Budget(2 * OVERHEAD)])
                    .collect(),
                vec!["d", "e"],
                3,
            ),
            (
                "another version is another object",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Get("a", 2, false),
                    Get("a", 1, false),
                ],
                vec![],
                0,
            ),
            (
                "a new version replaces the old copy",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("a", 2, 8 * KIB, Put::Kept),
                    Get("a", 1, false),
                ],
                vec![],
                0,
            ),
            (
                "removed",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("b", 1, 16 * KIB, Put::Kept),
                    Remove("a"),
                    Get("a", 1, false),
                ],
                vec!["b"],
                0,
            ),
            (
                "a smaller budget pushes out at once",
                vec![
                    Add("a", 1, 16 * KIB, Put::Kept),
                    Add("b", 1, 16 * KIB, Put::Kept),
                    Add("c", 1, 16 * KIB, Put::Kept),
                    Budget(each),
                ],
                vec!["c"],
                2,
            ),
            (
                "no budget, nothing kept",
                vec![Budget(0), Add("a", 1, 1, Put::TooLarge)],
                vec![],
                0,
            ),
        ];
        for (name, ops, want, evicted) in table {
            let mut m = Memory::new(4 * each);
            for op in ops {
                match op {
                    Add(h, v, n, want) => assert_eq!(m.put(h, v, body(n)), want, "{name}: put {h}"),
                    Get(h, v, want) => assert_eq!(m.get(h, v).is_some(), want, "{name}: get {h}"),
                    Remove(h) => m.remove(h),
                    Budget(b) => m.set_budget(b),
                }
            }
            let mut held: Vec<&str> = m.copies.iter().map(|(h, _)| h.as_str()).collect();
            held.sort_unstable();
            assert_eq!(held, want, "{name}");
            let bytes: u64 = m.copies.iter().map(|(_, c)| c.cost()).sum();
            let (files, counted, budget, out) = m.usage();
            assert_eq!(
                (files, counted, out),
                (want.len() as u64, bytes, evicted),
                "{name}"
            );
            assert!(counted <= budget, "{name}: over the budget");
        }
    }

    #[test]
    fn bodies_above_the_limit_stay_on_disk() {
        let mut m = Memory::new(u64::MAX);
        assert_eq!(m.put("a", 1, body(MAX_EACH as usize)), Put::Kept);
        assert_eq!(m.put("b", 1, body(MAX_EACH as usize + 1)), Put::TooLarge);
    }
}
