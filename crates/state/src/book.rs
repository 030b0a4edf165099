//! The hosts in memory: every host record the store holds, indexed by
//! address and by token, with the newest events of each host's timeline.
//! Every reply path reads this; nothing here waits for a disk.
//!
//! Only MACs with a host record are kept (the daemon names only profiled
//! MACs to the store), so the book grows with the profiles, never with
//! what strangers send. A host's tail is bounded per class.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::SystemTime;

use kickstand_profiles::Mac;

use crate::claim::{Binding, Claimed, Claims, Network, Withheld};
use crate::event::{Class, Event, EventKind};
use crate::host::{Effects, Host, Outcome};
use crate::op::{self, HostOp};
use crate::phase::Phase;
use crate::store::InstallSize;

/// Events of a host kept in memory, life-cycle and activity together: what
/// the diagnosis reads (the latest journey is a dozen or two events).
pub(crate) const TAIL: usize = 48;
/// Noise events kept in memory per host: the diagnosis needs the newest
/// refusal, not a flood of them.
pub(crate) const NOISE_TAIL: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Book {
    entries: HashMap<Mac, Entry>,
    by_ip: HashMap<IpAddr, Mac>,
    by_token: HashMap<String, Mac>,
    /// The last completed install of each OS.
    pub(crate) installs: HashMap<String, InstallSize>,
    /// The addresses each host's DHCP exchanges gave it in the build under way.
    claims: Claims,
    /// Gives events made here an order until the database numbers them.
    next_id: i64,
}

/// One host: its record (`None` until something changed it), the newest
/// events, and, with a shared database, the ops applied here that the
/// writer has not committed yet (replayed over a row another appliance
/// changed, see [`Book::reload`]).
#[derive(Debug, Default)]
struct Entry {
    host: Option<Host>,
    tail: VecDeque<(u64, Event)>,
    noise: VecDeque<(u64, Event)>,
    pending: Vec<(u64, HostOp, SystemTime)>,
}

impl Entry {
    fn push(&mut self, seq: u64, event: Event) {
        let (tail, bound) = match event.kind.class() {
            Class::Noise => (&mut self.noise, NOISE_TAIL),
            _ => (&mut self.tail, TAIL),
        };
        if tail.len() >= bound {
            tail.pop_front();
        }
        tail.push_back((seq, event));
    }

    /// The tail in order, noise merged in.
    fn events(&self) -> Vec<Event> {
        let mut all: Vec<&Event> = self
            .tail
            .iter()
            .chain(self.noise.iter())
            .map(|(_, e)| e)
            .collect();
        all.sort_by_key(|e| (e.id, e.time));
        all.into_iter().cloned().collect()
    }
}

impl Book {
    pub(crate) fn with_first_id(next_id: i64) -> Book {
        Book {
            next_id,
            ..Book::default()
        }
    }

    pub(crate) fn host(&self, mac: Mac) -> Option<&Host> {
        self.entries.get(&mac)?.host.as_ref()
    }

    pub(crate) fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.entries.values().filter_map(|e| e.host.as_ref())
    }

    pub(crate) fn known(&self, mac: Mac) -> bool {
        self.entries.contains_key(&mac)
    }

    /// Notes that `mac`'s DHCP exchange gave it `ip` ([`Claims::note`]).
    pub(crate) fn claim(
        &mut self,
        mac: Mac,
        ip: IpAddr,
        network: Network,
        binding: Binding,
        now: SystemTime,
    ) -> Claimed {
        let host = self.entries.get(&mac).and_then(|e| e.host.as_ref());
        self.claims.note(mac, host, ip, network, binding, now)
    }

    /// Whether `peer` may be handed `mac`'s token ([`Claims::admits`]),
    /// and whether it is in build mode (no record: new, so it is).
    pub(crate) fn admits(
        &self,
        mac: Mac,
        peer: IpAddr,
        now: SystemTime,
    ) -> (Result<(), Withheld>, bool) {
        let host = self.host(mac);
        (
            self.claims.admits(mac, host, peer, now),
            host.is_none_or(|h| h.phase.is_build_mode()),
        )
    }

    /// Drops `mac`'s claim that no token was handed out on.
    pub(crate) fn end_claim(&mut self, mac: Mac) {
        self.claims.end(mac);
    }

    pub(crate) fn by_ip(&self, ip: IpAddr) -> Option<Mac> {
        self.by_ip.get(&ip).copied()
    }

    pub(crate) fn by_token(&self, token: &str) -> Option<Mac> {
        self.by_token.get(token).copied()
    }

    pub(crate) fn events(&self, mac: Mac) -> Vec<Event> {
        self.entries
            .get(&mac)
            .map(Entry::events)
            .unwrap_or_default()
    }

    /// The newest event of every host.
    pub(crate) fn last_events(&self) -> Vec<Event> {
        self.entries
            .values()
            .filter_map(|e| {
                let a = e.tail.back().map(|(_, e)| e);
                let b = e.noise.back().map(|(_, e)| e);
                match (a, b) {
                    (Some(a), Some(b)) => Some(if (b.id, b.time) > (a.id, a.time) {
                        b
                    } else {
                        a
                    }),
                    (a, b) => a.or(b),
                }
            })
            .cloned()
            .collect()
    }

    /// Applies `op` to `mac`'s record (made if it has none) at `now`. With
    /// `keep` (a shared database), the op is kept until `seq` commits.
    pub(crate) fn apply(
        &mut self,
        mac: Mac,
        op: &HostOp,
        now: SystemTime,
        timeout: std::time::Duration,
        appliance: &str,
        keep: Option<u64>,
    ) -> op::Applied {
        let entry = self.entries.entry(mac).or_default();
        let mut host = entry
            .host
            .take()
            .unwrap_or_else(|| Host::new(mac, now, appliance));
        let before = (host.last_ip, host.token.clone());
        let applied = op::apply(&mut host, op, now, timeout);
        if applied.save {
            host.appliance = appliance.to_owned();
        }
        // A build that ends or starts over ends its claim: the next build's
        // exchange may give the machine another address.
        if let Outcome::Changed { to, .. } = applied.effects.outcome
            && (to == Phase::Rearmed || !to.is_build_mode())
        {
            self.claims.end(mac);
        }
        if let Some(seq) = keep {
            entry.pending.push((seq, op.clone(), now));
        }
        self.index(mac, before, &host);
        if let Some(e) = self.entries.get_mut(&mac) {
            e.host = Some(host);
        }
        applied
    }

    /// Keeps the address and token indexes in step with one host's change.
    fn index(
        &mut self,
        mac: Mac,
        (old_ip, old_token): (Option<IpAddr>, Option<crate::BuildToken>),
        host: &Host,
    ) {
        if old_ip != host.last_ip {
            if let Some(ip) = old_ip
                && self.by_ip.get(&ip) == Some(&mac)
            {
                self.by_ip.remove(&ip);
            }
            if let Some(ip) = host.last_ip {
                // The newest host at an address is the one requests from
                // there are put down to.
                self.by_ip.insert(ip, mac);
            }
        }
        if old_token != host.token {
            if let Some(t) = old_token {
                self.by_token.remove(t.as_str());
            }
            if let Some(t) = &host.token {
                self.by_token.insert(t.as_str().to_owned(), mac);
            }
        }
    }

    /// Adds an event to `mac`'s tail (the host must be known).
    pub(crate) fn push_event(
        &mut self,
        mac: Mac,
        seq: u64,
        kind: EventKind,
        detail: serde_json::Value,
        time: SystemTime,
        appliance: &str,
    ) {
        self.next_id += 1;
        let event = Event {
            id: self.next_id,
            time,
            mac,
            appliance: appliance.to_owned(),
            kind,
            detail,
        };
        self.entries.entry(mac).or_default().push(seq, event);
    }

    /// Loads a host as the database holds it (at open).
    pub(crate) fn load(&mut self, host: Option<Host>, mac: Mac, events: Vec<Event>) {
        let entry = self.entries.entry(mac).or_default();
        for e in events {
            self.next_id = self.next_id.max(e.id);
            entry.push(0, e);
        }
        let old = entry.host.take();
        let before = old
            .as_ref()
            .map_or((None, None), |h| (h.last_ip, h.token.clone()));
        if let Some(h) = &host {
            self.index(mac, before, h);
        }
        if let Some(e) = self.entries.get_mut(&mac) {
            e.host = host;
        }
    }

    /// Replaces `mac` with the database's copy (another appliance changed
    /// it), then replays what this appliance applied and has not committed
    /// through `committed`: both appliances' changes stand.
    pub(crate) fn reload(
        &mut self,
        mac: Mac,
        row: Option<Host>,
        events: Vec<Event>,
        committed: u64,
        timeout: std::time::Duration,
        appliance: &str,
    ) {
        let Some(entry) = self.entries.get_mut(&mac) else {
            self.load(row, mac, events);
            return;
        };
        entry.pending.retain(|(seq, _, _)| *seq > committed);
        let pending = std::mem::take(&mut entry.pending);
        let uncommitted: Vec<(u64, Event)> = entry
            .tail
            .drain(..)
            .chain(entry.noise.drain(..))
            .filter(|(seq, _)| *seq > committed)
            .collect();
        let old = entry.host.take();
        let before = old
            .as_ref()
            .map_or((None, None), |h| (h.last_ip, h.token.clone()));
        let mut host = row;
        for (_, op, now) in &pending {
            let h = host.get_or_insert_with(|| Host::new(mac, *now, appliance));
            let _ = op::apply(h, op, *now, timeout);
        }
        for e in events {
            entry.push(0, e);
        }
        for (seq, e) in uncommitted {
            entry.push(seq, e);
        }
        entry.pending = pending;
        match &host {
            Some(h) => self.index(mac, before, h),
            None => {
                if let (Some(ip), _) = before
                    && self.by_ip.get(&ip) == Some(&mac)
                {
                    self.by_ip.remove(&ip);
                }
            }
        }
        if let Some(e) = self.entries.get_mut(&mac) {
            e.host = host;
        }
    }

    /// Keeps `op` (queued as `seq`) until it commits: with a shared
    /// database, it is replayed over a row another appliance changed.
    pub(crate) fn keep(&mut self, mac: Mac, seq: u64, op: HostOp, now: SystemTime) {
        if let Some(e) = self.entries.get_mut(&mac) {
            e.pending.push((seq, op, now));
        }
    }

    /// Adds pulled counts still queued to a host read again.
    pub(crate) fn add_pulled(&mut self, mac: Mac, n: crate::host::Pulled) {
        if let Some(h) = self.entries.get_mut(&mac).and_then(|e| e.host.as_mut()) {
            h.pulled.add(n);
        }
    }

    /// Drops the kept ops of `macs` that committed with `through`.
    pub(crate) fn committed(&mut self, macs: impl IntoIterator<Item = Mac>, through: u64) {
        for mac in macs {
            if let Some(e) = self.entries.get_mut(&mac) {
                e.pending.retain(|(seq, _, _)| *seq > through);
            }
        }
    }

    /// What one transition's effects put on the tail.
    pub(crate) fn push_effects(
        &mut self,
        mac: Mac,
        seq: u64,
        effects: &Effects,
        now: SystemTime,
        appliance: &str,
    ) {
        for (kind, detail) in &effects.events {
            self.push_event(mac, seq, kind.clone(), detail.clone(), now, appliance);
        }
    }
}
