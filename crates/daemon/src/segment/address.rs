//! The segment's address on this appliance: added and removed with
//! iproute2's `ip`, announced to the segment with raw Ethernet frames, and
//! held by a process of its own ([`keep_address`]) so that it goes with
//! `serve` however `serve` goes (see the module above).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use tracing::warn;

/// The segment's address on its interface, held while active.
#[derive(Debug, Clone)]
pub(crate) struct SegmentAddress {
    pub(crate) interface: String,
    pub(crate) addresses: Vec<IpAddr>,
}

impl SegmentAddress {
    /// Adds the addresses (as host routes: the interface's own address
    /// already carries the subnet) and announces each.
    fn add(&self) {
        for address in &self.addresses {
            let cidr = host_route(*address);
            // nodad: the address is ours by the lease; duplicate address
            // detection would only delay it (and fail it while a frozen
            // former holder still has it).
            let mut args = vec!["address", "replace", &cidr, "dev", &self.interface];
            if address.is_ipv6() {
                args.push("nodad");
            }
            if let Err(e) = ip(&args) {
                warn!(%address, interface = %self.interface, error = %e, "cannot take the segment's address");
            }
            if let Err(e) = announce(&self.interface, *address) {
                warn!(%address, interface = %self.interface, error = %e, "cannot announce the segment's address: machines find it when their neighbour entries expire");
            }
        }
    }

    /// Removes the addresses; one that is not there is no error (a start
    /// after a crash, a second release).
    fn remove(&self) {
        for address in &self.addresses {
            let cidr = host_route(*address);
            match ip(&["address", "del", &cidr, "dev", &self.interface]) {
                Ok(()) => {}
                // iproute2's words for "not there", old and new.
                Err(e)
                    if e.contains("Address not found")
                        || e.contains("Cannot assign requested address") => {}
                Err(e) => {
                    warn!(%address, interface = %self.interface, error = %e, "cannot remove the segment's address");
                }
            }
        }
    }
}

/// `address` alone: `/32` or `/128`.
fn host_route(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Tells the segment `address` is at `interface`'s MAC now, three times
/// (a switch or a machine may miss one): a gratuitous ARP for IPv4, an
/// unsolicited neighbour advertisement with the override flag for IPv6.
/// Every neighbour that has the address in its cache moves it to this MAC.
fn announce(interface: &str, address: IpAddr) -> Result<(), String> {
    let nic = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .ok_or_else(|| format!("no interface {interface}"))?;
    let mac = nic.mac.ok_or_else(|| format!("{interface} has no MAC"))?;
    let (mut tx, _) = match pnet_datalink::channel(&nic, pnet_datalink::Config::default()) {
        Ok(pnet_datalink::Channel::Ethernet(tx, rx)) => (tx, rx),
        Ok(_) => return Err("not an Ethernet channel".into()),
        Err(e) => return Err(e.to_string()),
    };
    let frame = match address {
        IpAddr::V4(a) => gratuitous_arp(mac.octets(), a),
        IpAddr::V6(a) => unsolicited_advertisement(mac.octets(), a),
    };
    for _ in 0..3 {
        match tx.send_to(&frame, None) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the frame was not sent".into()),
        }
    }
    Ok(())
}

/// An unsolicited neighbour advertisement of `address` at `mac` to all
/// nodes (RFC 4861 7.2.6): override set, solicited not, with the target's
/// link-layer address.
fn unsolicited_advertisement(mac: [u8; 6], address: Ipv6Addr) -> Vec<u8> {
    const ICMPV6: u8 = 58;
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // advertisement, override
    icmp.extend_from_slice(&address.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(address, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]); // IPv6
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(icmp.len()).unwrap_or(0).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]); // hop limit 255, as RFC 4861 requires
    f.extend_from_slice(&address.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The Internet checksum of an ICMPv6 message with its pseudo-header.
fn icmpv6_checksum(from: Ipv6Addr, to: Ipv6Addr, message: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + message.len());
    pseudo.extend_from_slice(&from.octets());
    pseudo.extend_from_slice(&to.octets());
    pseudo.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(message);
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

/// An Ethernet broadcast ARP request whose sender and target are both
/// `address` (RFC 5227's announcement).
fn gratuitous_arp(mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&address.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&address.octets());
    f
}

/// `kickstand keep-address`: holds `address` for the `serve` that
/// started it, which says on this process's standard input, one line at
/// a time, `hold <ms>` (take the address, or keep it, for that long) or
/// `release`. The address goes when a hold runs out, at `release`, and
/// when the input closes (`serve` stopped or died).
///
/// The deadline is taken when the line is read, a little after `serve`
/// wrote it: later than `serve`'s own by that delay, well inside
/// [`super::MARGIN`], so the address is gone before a standby can take the lease.
pub(crate) fn keep_address(address: &SegmentAddress) {
    use std::io::BufRead as _;
    use std::sync::mpsc::RecvTimeoutError;
    // Ctrl-C at a terminal reaches the whole process group: the keeper
    // outlives it, and lets go when `serve` has (its input closes).
    if let Err(e) = ctrlc::set_handler(|| {}) {
        warn!(error = %e, "the address keeper cannot ignore Ctrl-C");
    }
    // What a crash of an earlier `serve` may have left.
    address.remove();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() || tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut until: Option<Instant> = None;
    loop {
        let heard = match until {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match heard {
            Ok(line) => match line.split_once(' ') {
                Some(("hold", ms)) if ms.parse::<u64>().is_ok() => {
                    if until.is_none() {
                        address.add();
                    }
                    let held = Duration::from_millis(ms.parse().unwrap_or(0));
                    until = Some(Instant::now() + held);
                }
                _ if line == "release" && until.take().is_some() => address.remove(),
                _ => {}
            },
            Err(RecvTimeoutError::Timeout) => {
                until = None;
                address.remove();
                warn!("serve did not renew the segment's address in time: removed it");
            }
            Err(RecvTimeoutError::Disconnected) => {
                if until.is_some() {
                    address.remove();
                }
                return;
            }
        }
    }
}

/// `serve`'s end of the address keeper ([`keep_address`]).
#[derive(Debug)]
pub(super) struct Keeper {
    address: SegmentAddress,
    child: Option<(std::process::Child, std::process::ChildStdin)>,
}

impl Keeper {
    pub(super) fn new(address: SegmentAddress) -> Keeper {
        Keeper {
            address,
            child: None,
        }
    }

    /// Starts the keeper process (this binary, `keep-address`).
    fn spawn(
        address: &SegmentAddress,
    ) -> std::io::Result<(std::process::Child, std::process::ChildStdin)> {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args(["keep-address", "--interface", &address.interface]);
        for a in &address.addresses {
            command.arg("--address").arg(a.to_string());
        }
        let mut child = command.stdin(std::process::Stdio::piped()).spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the keeper's input"))?;
        Ok((child, stdin))
    }

    /// Says one line to the keeper, starting it (again) when it is not
    /// running; a keeper that cannot be told anything holds nothing.
    /// Says one line to the keeper, starting it when it is not running.
    /// A keeper found gone (killed) is replaced, and the line said to the
    /// new one, which first removes whatever the old one left.
    fn say(&mut self, line: &str) {
        for _ in 0..2 {
            if self.child.is_none() {
                match Keeper::spawn(&self.address) {
                    Ok(child) => self.child = Some(child),
                    Err(e) => {
                        warn!(error = %e, "cannot start the segment address keeper (kickstand keep-address)");
                        return;
                    }
                }
            }
            let Some((_, stdin)) = &mut self.child else {
                return;
            };
            match std::io::Write::write_all(stdin, format!("{line}\n").as_bytes()) {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, "the segment address keeper is gone: starting another");
                    self.stop();
                }
            }
        }
    }

    pub(super) fn hold(&mut self, left: Duration) {
        self.say(&format!("hold {}", left.as_millis()));
    }

    pub(super) fn release(&mut self) {
        self.say("release");
    }

    /// Closes the keeper's input (it lets go of anything it holds) and
    /// waits for it to exit.
    pub(super) fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// CAP_NET_ADMIN's bit in the capability sets of `/proc/self/status`.
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process may add and remove addresses (CAP_NET_ADMIN in
/// its effective set, which the keeper and its `ip` inherit as ambient
/// capabilities under systemd). Checked at start, so a segment that could
/// never move its address is refused with a reason, not found out at the
/// first takeover.
pub(crate) fn may_hold_addresses() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let mac = [0x52, 0x54, 0, 0, 0, 9];
        let f = gratuitous_arp(mac, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6], "broadcast");
        assert_eq!(&f[12..14], &[0x08, 0x06], "ARP");
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &[10, 0, 0, 5], "sender address");
        assert_eq!(&f[38..42], &[10, 0, 0, 5], "target address");
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_checks_out() {
        let mac = [0x52, 0x54, 0, 0, 0, 9];
        let address: Ipv6Addr = "fd00::5".parse().expect("address");
        let f = unsolicited_advertisement(mac, address);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1], "all nodes");
        assert_eq!(&f[20..22], &[58, 255], "ICMPv6, hop limit 255");
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136, "a neighbour advertisement");
        assert_eq!(icmp[4], 0x20, "override, not solicited");
        assert_eq!(&icmp[8..24], &address.octets(), "its target");
        assert_eq!(&icmp[26..32], &mac, "the target's link-layer address");
        // A message with its checksum in sums to zero (RFC 1071).
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(address, all_nodes, icmp), 0);
    }
}
