//! Asking the segment, now and then, which other DHCPv6 servers hand out
//! boot files ([`v6::Probe`]), beside Kickstand's own DHCPv6 boot answers.
//! A server found goes to the table DHCPv4's watching fills
//! ([`crate::booting::Rogues`]): a warning in the log once, the status
//! page and `kickstand_rogue_dhcp_servers`, until it has been quiet for
//! `dhcp.rogue_forget_after`.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kickstand_dhcp::v6;
use kickstand_profiles::Mac;
use kickstand_profiles::model::Appliance;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::booting::Booting;
use crate::booting6;

/// Where DHCPv6 servers and relays listen (RFC 8415 7.2).
const SERVER_PORT: u16 = 547;
/// The longest time between two probes: a rogue server that starts is
/// found within a minute.
const AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// The shortest, whatever `dhcp.rogue_forget_after` says: a probe costs
/// each server on the segment an answer.
const AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// How long between two probes: a minute, or a third of
/// `dhcp.rogue_forget_after` when that is shorter, so that a server that
/// still answers is asked again, twice, before it would be forgotten.
fn interval(forget_after: Duration) -> Duration {
    (forget_after / 3).clamp(AT_LEAST_EVERY, AT_MOST_EVERY)
}

/// The probe's socket and the interfaces it is sent on.
#[derive(Debug)]
pub(crate) struct Prober {
    socket: UdpSocket,
    /// Name and index of each segment interface.
    interfaces: Vec<(String, u32)>,
    probe: v6::Probe,
}

/// The probe of the appliance whose DHCPv6 server identifier is the
/// DUID-LL of `server_mac`, sent on `server.interfaces`, or with none
/// named, on the interface that has the IPv6 `server.address`.
pub(crate) fn bind(appliance: &Appliance, server_mac: Mac) -> anyhow::Result<Prober> {
    let names = match appliance.server.interfaces.as_slice() {
        [] => vec![booting6::interface_of(appliance.server.address.v6())?],
        named => named.to_vec(),
    };
    let mut interfaces = Vec::with_capacity(names.len());
    for name in names {
        let index = v6::interface_index(&name)?;
        interfaces.push((name, index));
    }
    let socket = v6::bind_probe_socket().context("binding UDP 546 for the DHCPv6 probe")?;
    Ok(Prober {
        socket,
        interfaces,
        probe: v6::Probe::new(server_mac),
    })
}

impl Prober {
    /// Probes at start and every [`interval`] (read from the generation in
    /// force each time) until `shutdown`; every answer in between is
    /// judged against the last probe's transaction id.
    pub(crate) async fn run(
        self,
        booting: Arc<Booting>,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let names: Vec<&str> = self.interfaces.iter().map(|(n, _)| n.as_str()).collect();
        info!(interfaces = ?names, "probing for other DHCPv6 servers that offer boot files");
        let mut failing = vec![false; self.interfaces.len()];
        let mut id = 0;
        // One byte over the largest message read, as the DHCPv6 driver.
        let mut buf = vec![0u8; v6::MAX_MESSAGE_LEN + 1];
        loop {
            id = transaction_id(id);
            let [_, xid @ ..] = id.to_be_bytes();
            self.send(xid, &mut failing).await;
            let (next, address) = {
                let generation = booting.live.current();
                let appliance = generation.appliance();
                // The probe runs only where there is an IPv6 address: the
                // family is fixed at start, the address may change on reload.
                let address = appliance.server.address.v6();
                let every = interval(appliance.dhcp.rogue_forget_after);
                (
                    Instant::now() + every,
                    address.unwrap_or(Ipv6Addr::UNSPECIFIED),
                )
            };
            loop {
                let got = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep_until(next) => break,
                    got = self.socket.recv_from(&mut buf) => got,
                };
                match got {
                    Ok((len, SocketAddr::V6(from))) => {
                        match self.probe.judge(&buf[..len], *from.ip(), xid, address) {
                            Some(offer) => booting.rogue_seen(&offer),
                            None => debug!(%from, "dhcpv6 probe: no other server's boot offer"),
                        }
                    }
                    Ok(_) => {}
                    // ICMP errors from earlier sends surface here.
                    Err(e) => debug!(error = %e, "dhcpv6 probe: receive failed"),
                }
            }
        }
    }

    /// The probe to ff02::1:2 on each interface. A failure is said once
    /// when it starts (no link-local address yet, the link down), again
    /// only after a send there has worked.
    async fn send(&self, xid: [u8; 3], failing: &mut [bool]) {
        let message = self.probe.message(xid);
        for ((name, index), failing) in self.interfaces.iter().zip(failing) {
            let to = SocketAddrV6::new(v6::ALL_SERVERS, SERVER_PORT, 0, *index);
            match self.socket.send_to(&message, to).await {
                Ok(_) => *failing = false,
                Err(e) if !*failing => {
                    *failing = true;
                    warn!(interface = %name, error = %e, "dhcpv6 probe not sent: other DHCPv6 servers offering boot files go unnoticed there until it is");
                }
                Err(e) => debug!(interface = %name, error = %e, "dhcpv6 probe not sent"),
            }
        }
    }
}

/// A fresh transaction id: random (RFC 8415 16.1), so no other client's
/// answer is taken for the probe's. Should the kernel give no randomness,
/// the previous one plus one still tells this probe's answers from the
/// last one's.
fn transaction_id(previous: u32) -> u32 {
    getrandom::u32().unwrap_or(previous.wrapping_add(1)) & 0xff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_minute_apart_or_thrice_within_forget_after() {
        assert_eq!(interval(Duration::from_secs(600)), AT_MOST_EVERY);
        assert_eq!(interval(Duration::from_secs(6)), Duration::from_secs(2));
        assert_eq!(interval(Duration::from_millis(300)), AT_LEAST_EVERY);
    }
}
