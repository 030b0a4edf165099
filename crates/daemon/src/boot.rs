//! The daemon's side of ProxyDHCP and TFTP: the live site seen through the
//! small traits those crates ask for, and binding their sockets.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use kickstand_dhcp::{HostLookup, HostStatus, View};
use kickstand_http::App;
use kickstand_profiles::Mac;
use kickstand_profiles::model::{Appliance, DhcpMode, UnknownPolicy};
use kickstand_render::Site;
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// DHCP's view of one site: who may netboot.
#[derive(Debug)]
struct Hosts(Arc<Site>);

impl HostLookup for Hosts {
    fn lookup(&self, mac: Mac) -> HostStatus {
        let snapshot = &self.0.snapshot;
        if snapshot.host(&mac).is_some() {
            return HostStatus::Netboot;
        }
        match snapshot.appliance.dhcp.unknown {
            // Its boot script only exits to the local disk: never an install.
            UnknownPolicy::LocalBoot => HostStatus::Netboot,
            UnknownPolicy::Ignore => HostStatus::Unknown,
        }
    }
}

fn dhcp_context(appliance: &Appliance) -> kickstand_dhcp::Context {
    let mut context =
        kickstand_dhcp::Context::new(appliance.server.address, appliance.server.http_port);
    context.loaders.uefi_x64 = appliance.dhcp.uefi_loader.clone();
    context.mode = match appliance.dhcp.mode {
        DhcpMode::Off => kickstand_dhcp::Mode::Off,
        DhcpMode::Proxy => kickstand_dhcp::Mode::Proxy,
        DhcpMode::Full => kickstand_dhcp::Mode::Full,
    };
    context
}

/// Every packet takes the site in force when it arrives.
pub(crate) fn dhcp_view(app: Arc<App>) -> impl Fn() -> View + Send + Sync {
    move || {
        let site = app.site();
        View {
            context: Arc::new(dhcp_context(&site.snapshot.appliance)),
            hosts: Arc::new(Hosts(site)),
        }
    }
}

/// Binds UDP 67 and 4011 on the configured interface (or all). Always on
/// the wildcard address: on Linux a socket bound to a unicast address
/// never sees a broadcast DISCOVER; the interface is what restricts it.
pub(crate) fn bind_dhcp(appliance: &Appliance) -> anyhow::Result<kickstand_dhcp::Sockets> {
    let addr = Ipv4Addr::UNSPECIFIED;
    let interface = match appliance.server.interfaces.as_slice() {
        [] => None,
        [one] => Some(one.as_str()),
        more => anyhow::bail!(
            "ProxyDHCP serves one interface; server.interfaces names {}",
            more.len()
        ),
    };
    let dhcp =
        kickstand_dhcp::bind_dhcp_socket(addr, 67, interface).context("binding DHCP on UDP 67")?;
    let boot_server = kickstand_dhcp::bind_dhcp_socket(addr, 4011, interface)
        .context("binding the PXE boot server on UDP 4011")?;
    info!(interface = interface.unwrap_or("all"), mode = ?appliance.dhcp.mode, "dhcp listening on 67 and 4011");
    Ok(kickstand_dhcp::Sockets {
        dhcp,
        boot_server: Some(boot_server),
    })
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
    // prefix_len is validated to 8..=30, so the shift cannot overflow.
    let netmask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(p.prefix_len))
            .unwrap_or(0),
    );
    let pool = kickstand_dhcp::full::Pool::new(
        p.start,
        p.end,
        netmask,
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

/// TFTP serves the boot loaders under `tftp.root`, plus each host's iPXE
/// script as `boot/<mac>.ipxe` for iPXE builds without HTTP.
#[derive(Debug)]
pub(crate) struct TftpFiles {
    app: Arc<App>,
}

impl TftpFiles {
    pub(crate) fn new(app: Arc<App>) -> TftpFiles {
        TftpFiles { app }
    }
}

impl kickstand_tftp::Source for TftpFiles {
    /// Asked per request, so a reload that moves `tftp.root` takes effect
    /// for the next transfer.
    fn root(&self) -> std::path::PathBuf {
        self.app.site().snapshot.appliance.tftp_root.clone()
    }

    fn generated(&self, path: &str) -> Option<Bytes> {
        let mac: Mac = path
            .strip_prefix("boot/")?
            .strip_suffix(".ipxe")?
            .parse()
            .ok()?;
        let site = self.app.site();
        site.snapshot.host(&mac)?;
        site.ipxe(&mac, self.app.boot_action(&mac))
            .ok()
            .map(Bytes::from)
    }
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
