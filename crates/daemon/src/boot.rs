//! Binding the sockets of ProxyDHCP (and its router advertisements) and
//! TFTP, and checking at start that the boot loaders the DHCP offers name
//! are there.

use std::net::Ipv4Addr;

use anyhow::Context as _;
use kickstand_profiles::model::{Appliance, DhcpMode};
use tokio::net::UdpSocket;
use tracing::{error, info, warn};

/// Binds UDP 67 and 4011 on each configured interface (or all, unnamed).
/// Always on the wildcard address: on Linux a socket bound to a unicast
/// address never sees a broadcast DISCOVER; the interface is what
/// restricts it, and what tells a host's install VLAN from its boot
/// network (`server.interface_vlans`).
pub(crate) fn bind_dhcp(appliance: &Appliance) -> anyhow::Result<Vec<kickstand_dhcp::Sockets>> {
    let interfaces = &appliance.server.interfaces;
    if interfaces.is_empty() {
        return Ok(vec![bind_dhcp_on(appliance, None)?]);
    }
    // One pool is one subnet: leasing it on a second network would hand out
    // addresses that do not route there.
    if appliance.dhcp.mode == DhcpMode::Full && interfaces.len() > 1 {
        anyhow::bail!(
            "dhcp.mode full leases on one interface; server.interfaces names {}",
            interfaces.len()
        );
    }
    interfaces
        .iter()
        .map(|name| bind_dhcp_on(appliance, Some(name)))
        .collect()
}

fn bind_dhcp_on(
    appliance: &Appliance,
    interface: Option<&str>,
) -> anyhow::Result<kickstand_dhcp::Sockets> {
    let addr = Ipv4Addr::UNSPECIFIED;
    let on = interface.unwrap_or("all interfaces");
    let dhcp = kickstand_dhcp::bind_dhcp_socket(addr, 67, interface)
        .with_context(|| format!("binding DHCP on UDP 67 ({on})"))?;
    let boot_server = kickstand_dhcp::bind_dhcp_socket(addr, 4011, interface)
        .with_context(|| format!("binding the PXE boot server on UDP 4011 ({on})"))?;
    // Listened on only, to notice other servers' boot offers. Not fatal:
    // the appliance's own DHCP client may hold the port.
    let client_port = match kickstand_dhcp::bind_dhcp_socket(addr, 68, interface) {
        Ok(socket) => Some(socket),
        Err(e) => {
            warn!(interface = on, error = %e, "cannot listen on UDP 68: other DHCP servers offering boot files will go unnoticed");
            None
        }
    };
    info!(interface = on, mode = ?appliance.dhcp.mode, rogue_watch = client_port.is_some(), "dhcp listening on 67 and 4011");
    Ok(kickstand_dhcp::Sockets {
        interface: interface.map(str::to_owned),
        dhcp,
        boot_server: Some(boot_server),
        client_port,
    })
}

/// The socket router solicitations arrive on, with
/// `dhcp.answer_router_solicitations` (validation made sure
/// `server.interfaces` names where: never the office side). The answers
/// only make iPXE start sooner: a socket that cannot be opened (the
/// capability dropped from the unit, say by an upgrade that rewrote it) is
/// an error in the log, and everything else serves as before.
pub(crate) fn bind_solicitations(
    appliance: &Appliance,
) -> Option<kickstand_dhcp::advertise::Solicitations> {
    if !appliance.dhcp.answer_router_solicitations {
        return None;
    }
    // iPXE runs on the boot network: an install VLAN's interface sees
    // only installers.
    let server = &appliance.server;
    let boot_networks: Vec<&String> = server
        .interfaces
        .iter()
        .filter(|i| !server.interface_vlans.contains_key(*i))
        .collect();
    let [interface] = boot_networks.as_slice() else {
        error!(
            "dhcp.answer_router_solicitations needs server.interfaces to name one interface besides those in server.interface_vlans: not answering router solicitations"
        );
        return None;
    };
    match kickstand_dhcp::advertise::bind_solicitations(interface) {
        Ok(socket) => {
            info!(
                interface,
                "answering the router solicitations of the iPXE clients ProxyDHCP answers"
            );
            Some(socket)
        }
        // A unit without CAP_NET_RAW (the appliance's grants it).
        Err(e) => {
            error!(
                interface,
                error = %e,
                "not answering router solicitations (dhcp.answer_router_solicitations): its raw ICMPv6 socket needs CAP_NET_RAW (README.md, \"A faster iPXE start\"); iPXE waits for an IPv6 router as before"
            );
            None
        }
    }
}

/// The leases of `dhcp.mode: full`, or `None` in the other modes.
pub(crate) fn leases(
    appliance: &Appliance,
) -> anyhow::Result<Option<kickstand_dhcp::full::Leases>> {
    let Some(p) = appliance
        .dhcp
        .pool
        .as_ref()
        .filter(|_| appliance.dhcp.mode == DhcpMode::Full)
    else {
        return Ok(None);
    };
    let pool = kickstand_dhcp::full::Pool::new(
        p.start,
        p.end,
        p.netmask,
        p.router,
        p.dns.clone(),
        p.lease_secs,
    )?;
    if let Some(dir) = p.leases_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(Some(kickstand_dhcp::full::Leases::open(
        &p.leases_file,
        pool,
    )?))
}

/// Says so at start when a loader the DHCP offers name is missing, rather
/// than letting the first machine time out on it.
pub(crate) fn check_loaders(appliance: &Appliance) {
    for name in ["undionly.kpxe", appliance.dhcp.uefi_loader.as_str()] {
        let path = appliance.tftp_root.join(name);
        if !path.is_file() {
            warn!(
                loader = %path.display(),
                "boot loader missing: PXE clients will fail to load it; run image/install-bootloaders.sh {}",
                appliance.tftp_root.display()
            );
        }
    }
}

pub(crate) async fn bind_tftp(appliance: &Appliance) -> anyhow::Result<UdpSocket> {
    let addr = (appliance.server.bind, appliance.server.tftp_port);
    let socket = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding TFTP on UDP {}", appliance.server.tftp_port))?;
    info!(addr = %socket.local_addr()?, root = %appliance.tftp_root.display(), "tftp listening");
    Ok(socket)
}
