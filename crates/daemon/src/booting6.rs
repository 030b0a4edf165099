//! DHCPv6 boot answers in `kickstand serve`: what the DHCPv6 driver
//! ([`kickstand_dhcp::v6`]) decides with — the generation in force, the
//! host states in memory, the same boot policy as ProxyDHCP's — and where
//! its decisions go: metrics, the log, the machines' timelines.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use kickstand_dhcp::v6;
use kickstand_dhcp::{Boot as _, HostLookup, HostStatus};
use kickstand_profiles::Mac;
use kickstand_profiles::model::Appliance;
use kickstand_state::{EventKind, Network, Transition};
use serde_json::json;
use tracing::info;

use crate::booting::{Booting, Logged, PacketView};
use crate::generation::Generation;
use crate::hosts;
use crate::live::lock;

/// The DHCPv6 side of [`Booting`].
pub(crate) struct Dhcp6 {
    booting: Arc<Booting>,
    /// The appliance's interface on the segment: its DUID-LL is the server
    /// identifier firmware sends back when it asks for its boot file.
    server_mac: Mac,
    /// The context of the generation last used, made again when a reload
    /// puts another in force.
    context: Mutex<Option<(u64, Arc<v6::Context>)>>,
}

impl Dhcp6 {
    pub(crate) fn new(booting: Arc<Booting>, server_mac: Mac) -> Dhcp6 {
        Dhcp6 {
            booting,
            server_mac,
            context: Mutex::new(None),
        }
    }

    fn context(&self, generation: &Generation) -> Arc<v6::Context> {
        let mut cached = lock(&self.context);
        if let Some((id, context)) = &*cached
            && *id == generation.id
        {
            return context.clone();
        }
        let appliance = generation.appliance();
        let context = Arc::new(match appliance.server.address.v6() {
            Some(address) => v6::Context::from_appliance(appliance, address, self.server_mac),
            // Whether there is an IPv6 address is fixed at start (a reload
            // that changes it is refused): nothing to answer with.
            None => {
                let mut off =
                    v6::Context::from_appliance(appliance, Ipv6Addr::UNSPECIFIED, self.server_mac);
                off.mode = kickstand_dhcp::Mode::Off;
                off
            }
        });
        *cached = Some((generation.id, context.clone()));
        context
    }
}

impl v6::Boot for Dhcp6 {
    type View<'a> = View6<'a>;

    fn view(&self) -> View6<'_> {
        let packets = self.booting.view();
        let context = self.context(packets.generation());
        View6 {
            booting: &self.booting,
            packets,
            context,
        }
    }

    fn answering(&self) -> bool {
        self.booting.duty.answering()
    }
}

/// One generation for the datagrams read together.
pub(crate) struct View6<'a> {
    booting: &'a Booting,
    /// ProxyDHCP's view of the same generation: one host lookup, one rate
    /// for answers to machines without a profile, whichever family asks.
    packets: PacketView<'a>,
    context: Arc<v6::Context>,
}

impl HostLookup for View6<'_> {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self.packets.lookup(mac)
    }
}

impl v6::BootView for View6<'_> {
    fn context(&self) -> &v6::Context {
        &self.context
    }

    fn profiled(&self, mac: Mac) -> bool {
        self.packets.generation().snapshot().host(&mac).is_some()
    }

    fn decided(&self, mac: Option<Mac>, seen: &v6::Seen<'_>, action: &v6::Action) {
        let booting = self.booting;
        booting.metrics.dhcp.observe_v6(action);
        let Some(mac) = mac else { return };
        let generation = self.packets.generation();
        if generation.snapshot().host(&mac).is_none() {
            return;
        }
        // Its firmware, loader or installer took the office server's
        // lease: an address its build token may go to. One socket hears
        // every interface, so which network is not known; none is needed,
        // as an IPv6 claim is a set that the install VLAN's address joins
        // like any other.
        for address in seen.leased {
            booting.claimed(mac, IpAddr::V6(*address), Network::Boot);
        }
        let (store, from) = (&booting.store, seen.from);
        match action {
            v6::Action::Respond(reply) => {
                hosts::transition(store, mac, Transition::SeenByDhcp, None);
                if booting.first_in_a_while(mac, Logged::AnsweredV6)
                    && let Some(unlogged) = booting.may_log()
                {
                    info!(%mac, %from, boot_file = %reply.boot_file_url, unlogged, "dhcpv6: answered");
                }
                let detail = json!({
                    "boot_file": reply.boot_file_url,
                    "arch": reply.firmware.name(),
                    "family": "ipv6",
                });
                hosts::record(store, generation, mac, EventKind::DhcpOffer, detail);
            }
            v6::Action::Ignore(v6::Reason::Policy(reason)) => {
                if !booting.first_in_a_while(mac, Logged::NotAnsweredV6) {
                    return;
                }
                if let Some(unlogged) = booting.may_log() {
                    info!(%mac, %from, %reason, unlogged, "dhcpv6: boot client not answered");
                }
                let detail = json!({
                    "reason": reason.name(),
                    "detail": reason.to_string(),
                    "family": "ipv6",
                });
                hosts::record(store, generation, mac, EventKind::DhcpIgnored, detail);
            }
            v6::Action::Ignore(_) => {}
        }
    }
}

/// UDP 547 (joined to ff02::1:2 on `server.interfaces`, or on every
/// interface) and 4011, and the MAC whose DUID-LL identifies this server:
/// the first named interface's, or with none named, that of the interface
/// that has the IPv6 address.
pub(crate) fn bind(appliance: &Appliance) -> anyhow::Result<(v6::Sockets, Mac)> {
    let names: Vec<&str> = appliance
        .server
        .interfaces
        .iter()
        .map(String::as_str)
        .collect();
    let join = if names.is_empty() {
        v6::Join::Everywhere
    } else {
        v6::Join::Interfaces(&names)
    };
    let server = v6::bind_dhcpv6_socket(547, join).context("binding DHCPv6 on UDP 547")?;
    let boot_server = v6::bind_dhcpv6_socket(4011, v6::Join::Nowhere)
        .context("binding the DHCPv6 boot server on UDP 4011")?;
    let interface = match names.first() {
        Some(name) => (*name).to_owned(),
        None => interface_of(appliance.server.address.v6())?,
    };
    let mac = interface_mac(&interface)?;
    info!(%interface, %mac, "dhcpv6 listening on 547 and 4011");
    Ok((
        v6::Sockets {
            server,
            boot_server: Some(boot_server),
        },
        mac,
    ))
}

/// The interface that has `address`.
pub(crate) fn interface_of(address: Option<Ipv6Addr>) -> anyhow::Result<String> {
    let address = address.context("DHCPv6 needs an IPv6 server.address")?;
    if_addrs::get_if_addrs()
        .context("listing the interfaces' addresses")?
        .into_iter()
        .find(|i| i.ip() == IpAddr::V6(address))
        .map(|i| i.name)
        .with_context(|| {
            format!(
                "no interface has {address}, the IPv6 server.address: name it in server.interfaces"
            )
        })
}

/// An interface's link-layer address, as the kernel shows it.
fn interface_mac(name: &str) -> anyhow::Result<Mac> {
    let path = format!("/sys/class/net/{name}/address");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {name}'s MAC ({path})"))?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{name}'s MAC {:?}: {e}", text.trim()))
}
