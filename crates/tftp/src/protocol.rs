//! The sending side of a read transfer as a pure state machine: option
//! negotiation, windows (RFC 7440), duplicate and late ACKs, retransmission
//! on timeout and block-number rollover. No sockets, no clock: the driver
//! feeds [`Event`]s and carries out the returned [`Action`].

use std::time::Duration;

/// Server-side limits and defaults for negotiation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest block size granted; requests above it are lowered to it
    /// (RFC 2348 lets the server answer with a smaller value).
    pub max_blksize: u16,
    /// Largest window granted, in blocks.
    pub max_windowsize: u16,
    /// Largest window granted, in payload bytes. A window arrives as one
    /// burst, and a burst larger than the client's socket buffer (208 KiB
    /// by default on Linux, where an 8 KiB datagram takes 16 KiB of it) is
    /// partly dropped; clients such as atftp then wait for a timeout
    /// instead of acking the gap, so the transfer crawls.
    pub max_window_bytes: u32,
    /// Retransmission timeout when the client does not ask for one.
    pub default_timeout: Duration,
    /// Retransmissions of the same window before giving up.
    pub max_retries: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 64 * 1024,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// Smallest and largest block size of RFC 2348.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
const DEFAULT_BLKSIZE: u16 = 512;

/// The parameters a transfer runs with, and the OACK that announces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Options to acknowledge, in the order the client sent them. Empty
    /// means no OACK: the transfer starts with DATA 1 (RFC 1350).
    pub oack: Vec<(String, String)>,
}

/// Grants the options a client asked for, given the file's size. Unknown
/// options and values outside the RFC ranges are left out of the OACK,
/// which RFC 2347 defines as refusing them.
pub fn negotiate(options: &[(String, String)], size: u64, limits: &Limits) -> Negotiated {
    let mut out = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        oack: Vec::new(),
    };
    // Granted options, first occurrence only, in the client's order.
    let mut granted: Vec<(&str, u64)> = Vec::new();
    for (name, value) in options {
        if granted.iter().any(|(seen, _)| seen == name) {
            continue;
        }
        let Ok(n) = value.trim().parse::<u64>() else {
            continue;
        };
        let grant = match name.as_str() {
            "blksize" if n >= u64::from(MIN_BLKSIZE) => {
                out.blksize = clamp(n, limits.max_blksize.max(MIN_BLKSIZE));
                u64::from(out.blksize)
            }
            "windowsize" if n >= 1 => {
                out.windowsize = clamp(n, limits.max_windowsize.max(1));
                u64::from(out.windowsize)
            }
            "timeout" if (1..=255).contains(&n) => {
                out.timeout = Duration::from_secs(n);
                n
            }
            // A client sends tsize 0 on a read to learn the size.
            "tsize" => size,
            _ => continue,
        };
        granted.push((name, grant));
    }
    // The byte cap depends on blksize, which may come after windowsize.
    let by_bytes = (limits.max_window_bytes / u32::from(out.blksize)).max(1);
    out.windowsize = out
        .windowsize
        .min(u16::try_from(by_bytes).unwrap_or(u16::MAX));
    out.oack = granted
        .into_iter()
        .map(|(name, grant)| {
            let grant = if name == "windowsize" {
                u64::from(out.windowsize)
            } else {
                grant
            };
            (name.to_owned(), grant.to_string())
        })
        .collect();
    out
}

fn clamp(n: u64, max: u16) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX).min(max)
}

/// What happened, as seen by the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Ack(u16),
    /// The client sent an ERROR: it gives up (for example right after
    /// learning `tsize`), and the transfer ends without a reply.
    ClientError,
    /// The retransmission timer fired with no progress.
    Timeout,
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the OACK (again) and wait for ACK 0.
    SendOack,
    /// Send blocks `first..=last` (absolute numbers, see [`Transfer::block`])
    /// and restart the retransmission timer.
    SendBlocks { first: u64, last: u64 },
    /// Nothing to send and the timer keeps running: a duplicate or stale ACK.
    Ignore,
    /// The last block is acknowledged.
    Complete,
    /// The client sent an ERROR.
    Aborted,
    /// Retries exhausted.
    GaveUp,
}

/// Where block `n` sits in the file and how it is numbered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Block number on the wire; wraps from 65535 to 0, as tftp-hpa, atftp
    /// and curl expect.
    pub wire: u16,
    pub offset: u64,
    pub len: usize,
}

/// One read transfer. Blocks are numbered from 1 as `u64`, so files larger
/// than 65535 blocks work; only the wire number wraps.
#[derive(Debug, Clone)]
pub struct Transfer {
    params: Negotiated,
    size: u64,
    /// The last block is the first one shorter than `blksize`, possibly empty.
    last_block: u64,
    /// Highest block the client acknowledged (0: none, or the OACK).
    acked: u64,
    /// Highest block sent so far.
    sent: u64,
    retries: u8,
    max_retries: u8,
    finished: bool,
}

impl Transfer {
    /// Starts a transfer of `size` bytes; returns the first action.
    pub fn start(params: Negotiated, size: u64, limits: &Limits) -> (Self, Action) {
        let last_block = size / u64::from(params.blksize) + 1;
        let oack = !params.oack.is_empty();
        let mut transfer = Self {
            params,
            size,
            last_block,
            acked: 0,
            sent: 0,
            retries: 0,
            max_retries: limits.max_retries,
            finished: false,
        };
        let action = if oack {
            Action::SendOack
        } else {
            transfer.next_window()
        };
        (transfer, action)
    }

    pub fn params(&self) -> &Negotiated {
        &self.params
    }

    /// Number of blocks in the transfer.
    pub fn last_block(&self) -> u64 {
        self.last_block
    }

    /// Bytes of the file the client has acknowledged so far.
    pub fn acked_bytes(&self) -> u64 {
        self.acked
            .saturating_mul(u64::from(self.params.blksize))
            .min(self.size)
    }

    pub fn block(&self, n: u64) -> BlockRef {
        let blksize = u64::from(self.params.blksize);
        let offset = (n - 1) * blksize;
        // `len` ≤ blksize ≤ u16::MAX, so the cast below cannot truncate.
        let len = self.size.saturating_sub(offset).min(blksize) as usize;
        BlockRef {
            wire: n as u16,
            offset,
            len,
        }
    }

    pub fn handle(&mut self, event: Event) -> Action {
        if self.finished {
            return Action::Ignore;
        }
        match event {
            Event::ClientError => {
                self.finished = true;
                Action::Aborted
            }
            Event::Timeout => self.on_timeout(),
            Event::Ack(wire) => self.on_ack(wire),
        }
    }

    fn on_ack(&mut self, wire: u16) -> Action {
        if self.sent == 0 {
            // Only the OACK is out; ACK 0 confirms it.
            self.retries = 0;
            return if wire == 0 {
                self.next_window()
            } else {
                Action::Ignore
            };
        }
        // Acks between `acked` and `sent` are new; the window never spans
        // more than 65535 blocks, so the wire number maps back unambiguously.
        let ahead = u64::from(wire.wrapping_sub(self.acked as u16));
        if ahead == 0 || self.acked + ahead > self.sent {
            // Duplicate or late ACK: answering it would start the
            // Sorcerer's Apprentice (RFC 1123 4.2.3.1); the timer decides.
            return Action::Ignore;
        }
        self.acked += ahead;
        self.retries = 0;
        if self.acked == self.last_block {
            self.finished = true;
            return Action::Complete;
        }
        // An ACK short of the window end means the client lost what came
        // after it (RFC 7440): resume from there.
        self.next_window()
    }

    fn on_timeout(&mut self) -> Action {
        if self.retries >= self.max_retries {
            self.finished = true;
            return Action::GaveUp;
        }
        self.retries += 1;
        if self.sent == 0 && !self.params.oack.is_empty() {
            return Action::SendOack;
        }
        self.next_window()
    }

    fn next_window(&mut self) -> Action {
        let first = self.acked + 1;
        let last = (self.acked + u64::from(self.params.windowsize)).min(self.last_block);
        self.sent = last;
        Action::SendBlocks { first, last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn negotiation_table() {
        let limits = Limits {
            max_blksize: 8192,
            max_windowsize: 64,
            ..Limits::default()
        };
        let secs = Duration::from_secs;
        // (options, blksize, windowsize, timeout, oack)
        let cases: &[(Pairs, u16, u16, Duration, Pairs)] = &[
            (&[], 512, 1, secs(1), &[]),
            (&[("tsize", "0")], 512, 1, secs(1), &[("tsize", "1000")]),
            (
                &[("blksize", "1468")],
                1468,
                1,
                secs(1),
                &[("blksize", "1468")],
            ),
            (
                &[("blksize", "65464")],
                8192,
                1,
                secs(1),
                &[("blksize", "8192")],
            ),
            (&[("blksize", "99999999999999999999")], 512, 1, secs(1), &[]),
            (&[("blksize", "7")], 512, 1, secs(1), &[]),
            (&[("blksize", "8")], 8, 1, secs(1), &[("blksize", "8")]),
            (&[("blksize", "abc")], 512, 1, secs(1), &[]),
            (&[("blksize", "-1")], 512, 1, secs(1), &[]),
            (
                &[("windowsize", "16")],
                512,
                16,
                secs(1),
                &[("windowsize", "16")],
            ),
            (&[("windowsize", "0")], 512, 1, secs(1), &[]),
            (
                &[("windowsize", "65535")],
                512,
                64,
                secs(1),
                &[("windowsize", "64")],
            ),
            (&[("timeout", "3")], 512, 1, secs(3), &[("timeout", "3")]),
            // 64 KiB per window: 8 blocks of 8192, whatever the order.
            (
                &[("windowsize", "16"), ("blksize", "8192")],
                8192,
                8,
                secs(1),
                &[("windowsize", "8"), ("blksize", "8192")],
            ),
            (
                &[("blksize", "8192"), ("windowsize", "4")],
                8192,
                4,
                secs(1),
                &[("blksize", "8192"), ("windowsize", "4")],
            ),
            (
                &[("blksize", "1468"), ("windowsize", "64")],
                1468,
                44,
                secs(1),
                &[("blksize", "1468"), ("windowsize", "44")],
            ),
            (&[("timeout", "0")], 512, 1, secs(1), &[]),
            (&[("timeout", "256")], 512, 1, secs(1), &[]),
            (
                &[("multicast", ""), ("rollover", "0")],
                512,
                1,
                secs(1),
                &[],
            ),
            (
                &[("blksize", "1024"), ("blksize", "2048")],
                1024,
                1,
                secs(1),
                &[("blksize", "1024")],
            ),
            (
                &[
                    ("windowsize", "4"),
                    ("tsize", "0"),
                    ("blksize", "1468"),
                    ("timeout", "2"),
                ],
                1468,
                4,
                secs(2),
                &[
                    ("windowsize", "4"),
                    ("tsize", "1000"),
                    ("blksize", "1468"),
                    ("timeout", "2"),
                ],
            ),
        ];
        for (options, blksize, windowsize, timeout, oack) in cases {
            let got = negotiate(&opts(options), 1000, &limits);
            let want = Negotiated {
                blksize: *blksize,
                windowsize: *windowsize,
                timeout: *timeout,
                oack: opts(oack),
            };
            assert_eq!(got, want, "options {options:?}");
        }
    }

    /// Runs a table of events; each row is (event, expected action).
    fn run(
        size: u64,
        options: &[(&str, &str)],
        first: Action,
        steps: &[(Event, Action)],
    ) -> Transfer {
        let limits = Limits::default();
        let (mut t, action) =
            Transfer::start(negotiate(&opts(options), size, &limits), size, &limits);
        assert_eq!(action, first);
        for (i, (event, want)) in steps.iter().enumerate() {
            assert_eq!(t.handle(*event), *want, "step {i}: {event:?}");
        }
        t
    }

    use Action::*;
    use Event::*;

    const fn blocks(first: u64, last: u64) -> Action {
        SendBlocks { first, last }
    }

    #[test]
    fn lockstep_without_options() {
        run(
            1024,
            &[],
            blocks(1, 1),
            &[
                (Ack(1), blocks(2, 2)),
                (Ack(1), Ignore), // duplicate: no Sorcerer's Apprentice
                (Ack(0), Ignore), // late
                (Ack(9), Ignore), // ahead of what was sent
                // 1024 bytes at 512 end with an empty third block.
                (Ack(2), blocks(3, 3)),
                (Ack(3), Complete),
                (Ack(3), Ignore),
            ],
        );
    }

    #[test]
    fn oack_then_windows() {
        let t = run(
            10 * 512 + 1,
            &[("windowsize", "4"), ("tsize", "0")],
            SendOack,
            &[
                (Ack(1), Ignore), // nothing sent yet
                (Timeout, SendOack),
                (Ack(0), blocks(1, 4)),
                (Ack(0), Ignore),
                (Ack(4), blocks(5, 8)),
                // Client lost block 7: it acks 6, we resume at 7.
                (Ack(6), blocks(7, 10)),
                (Ack(5), Ignore), // late
                (Timeout, blocks(7, 10)),
                (Ack(10), blocks(11, 11)),
                (Ack(11), Complete),
            ],
        );
        assert_eq!(
            t.block(11),
            BlockRef {
                wire: 11,
                offset: 5120,
                len: 1
            }
        );
        assert_eq!(t.last_block(), 11);
    }

    #[test]
    fn client_error_after_oack_ends_the_transfer() {
        run(
            5000,
            &[("tsize", "0")],
            SendOack,
            &[(ClientError, Aborted), (Ack(0), Ignore), (Timeout, Ignore)],
        );
    }

    #[test]
    fn gives_up_after_max_retries() {
        let retry = blocks(1, 1);
        run(
            100,
            &[],
            blocks(1, 1),
            &[
                (Timeout, retry),
                (Timeout, retry),
                (Timeout, retry),
                (Timeout, retry),
                (Timeout, retry),
                (Timeout, GaveUp),
                (Ack(1), Ignore),
            ],
        );
        // Progress resets the retry count.
        run(
            600,
            &[],
            blocks(1, 1),
            &[
                (Timeout, retry),
                (Timeout, retry),
                (Timeout, retry),
                (Timeout, retry),
                (Ack(1), blocks(2, 2)),
                (Timeout, blocks(2, 2)),
                (Timeout, blocks(2, 2)),
                (Timeout, blocks(2, 2)),
                (Timeout, blocks(2, 2)),
                (Timeout, blocks(2, 2)),
                (Timeout, GaveUp),
            ],
        );
    }

    #[test]
    fn rolls_over_past_block_65535() {
        // 8-byte blocks, 70000 full blocks plus an empty last one.
        let size = 8 * 70_000;
        let limits = Limits::default();
        for window in [1u16, 7, 64] {
            let params = negotiate(
                &opts(&[("blksize", "8"), ("windowsize", &window.to_string())]),
                size,
                &limits,
            );
            let (mut t, mut action) = Transfer::start(params, size, &limits);
            assert_eq!(action, SendOack);
            let mut wire_seen = Vec::new();
            let mut ack = 0u16;
            loop {
                match t.handle(Ack(ack)) {
                    SendBlocks { first, last } => {
                        for n in first..=last {
                            wire_seen.push(t.block(n).wire);
                        }
                        ack = t.block(last).wire;
                        action = SendBlocks { first, last };
                    }
                    Complete => break,
                    other => panic!("unexpected {other:?} after {action:?}"),
                }
            }
            assert_eq!(wire_seen.len(), 70_001);
            assert_eq!(wire_seen[65_534], 65_535);
            assert_eq!(wire_seen[65_535], 0, "rollover goes to 0");
            assert_eq!(wire_seen[65_536], 1);
            assert_eq!(
                t.block(70_001),
                BlockRef {
                    wire: (70_001 % 65_536) as u16,
                    offset: 560_000,
                    len: 0
                }
            );
        }
    }

    #[test]
    fn stale_ack_across_rollover_is_ignored() {
        let size = 8 * 65_540;
        let limits = Limits::default();
        let params = negotiate(
            &opts(&[("blksize", "8"), ("windowsize", "4")]),
            size,
            &limits,
        );
        let (mut t, _) = Transfer::start(params, size, &limits);
        let mut ack = 0u16;
        while t.acked < 65_528 {
            let SendBlocks { last, .. } = t.handle(Ack(ack)) else {
                panic!("not sending")
            };
            ack = t.block(last).wire;
        }
        // Window 65533..=65536 is out; wire numbers 65533, 65534, 65535, 0.
        assert_eq!(t.handle(Ack(ack)), blocks(65_533, 65_536));
        assert_eq!(t.handle(Ack(ack)), Ignore, "duplicate");
        assert_eq!(t.handle(Ack(0)), blocks(65_537, 65_540));
        assert_eq!(
            t.handle(Ack(65_535)),
            Ignore,
            "ack from before the rollover"
        );
        assert_eq!(t.handle(Ack(2)), blocks(65_539, 65_541));
        assert_eq!(t.handle(Ack(5)), Complete);
    }
}
