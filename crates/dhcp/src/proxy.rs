//! The ProxyDHCP decision: request bytes and one snapshot in, a reply or a
//! named reason out. No sockets, no clock, no tokio.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::{
    DhcpOption, Encodable, Encoder, Flags, HType, Message, MessageType, Opcode, OptionCode,
    UnknownOption,
};

use kickstand_profiles::model::{Appliance, Arch, BootLoader, DhcpMode, UefiLoader, UefiLocalBoot};
use kickstand_profiles::urls::UrlScheme;

use crate::wire::{Mac, Malformed, Request, msg, opt};

/// Some PXE ROMs drop BOOTP replies shorter than the RFC 951 minimum.
pub const MIN_REPLY_LEN: usize = 300;

/// What the appliance looks like to a client, taken from one config snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// Where machines reach the appliance: siaddr, option 54, URLs.
    pub address: Ipv4Addr,
    /// The boot script and loader URLs handed to iPXE and HTTP boot.
    pub urls: UrlScheme,
    /// Boot loader file names, relative to the TFTP root.
    pub loaders: Loaders,
    pub mode: Mode,
    /// `dhcp.uefi_local_boot`: how an installed UEFI host on iPXE reaches
    /// its disk.
    pub uefi_local_boot: UefiLocalBoot,
}

impl Context {
    pub fn new(address: Ipv4Addr, http_port: u16) -> Self {
        Context {
            address,
            urls: UrlScheme::new(address, http_port),
            loaders: Loaders::default(),
            mode: Mode::Proxy,
            uefi_local_boot: UefiLocalBoot::Ipxe,
        }
    }

    /// The context an appliance config gives: built once per generation.
    /// An IPv6-only appliance has no address to put in siaddr and option
    /// 54: it answers no DHCPv4 (mode off).
    pub fn from_appliance(appliance: &Appliance) -> Self {
        let Some(address) = appliance.server.address.v4() else {
            let mut context = Context::new(Ipv4Addr::UNSPECIFIED, appliance.server.http_port);
            context.mode = Mode::Off;
            return context;
        };
        let mut context = Context::new(address, appliance.server.http_port);
        context.loaders.uefi_x64 = appliance.dhcp.uefi_loader.as_str().to_owned();
        context.uefi_local_boot = appliance.dhcp.uefi_local_boot;
        context.mode = match appliance.dhcp.mode {
            DhcpMode::Off => Mode::Off,
            DhcpMode::Proxy => Mode::Proxy,
            DhcpMode::Full => Mode::Full,
        };
        context
    }
}

/// Boot loader file names, by firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaders {
    /// BIOS (option 93 = 0): `undionly.kpxe` keeps the ROM's own NIC driver.
    pub bios: String,
    /// UEFI x64 (7, 9, 16): `ipxe.efi` (own drivers) or `snponly.efi` (the
    /// firmware's), per `dhcp.uefi_loader`.
    pub uefi_x64: String,
    /// UEFI ARM64 (11, 19). Debian's ipxe package ships no ARM64 build, so
    /// the operator puts one in the TFTP root under this name.
    pub uefi_arm64: String,
}

impl Default for Loaders {
    fn default() -> Self {
        Loaders {
            bios: "undionly.kpxe".into(),
            uefi_x64: UefiLoader::IpxeEfi.as_str().into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
        }
    }
}

/// `dhcp.mode` in the appliance config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Answer nothing.
    Off,
    /// Boot information only, next to the office DHCP server.
    Proxy,
    /// Addresses too, from a pool: for an isolated rack (see [`crate::full`]).
    Full,
}

/// Whether a machine may netboot, as the daemon's profile snapshot says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostStatus {
    /// Answer it: it has a profile (or `unknown: local-boot` or `discover`
    /// gives it a script that never installs).
    Netboot(HostBoot),
    /// It is installed. BIOS firmware is not answered, so it moves on to
    /// its next boot option (its disk) at once. UEFI firmware gets the
    /// loader it installs with, whose script or config reaches the disk's
    /// own loader through the OS tree's GRUB: left unanswered, OVMF spends
    /// some 270 s on PXEv6 and HTTP boot before its disk, and iPXE's `exit`
    /// hangs there or opens the setup menu. iPXE (the default on x86_64)
    /// names Kickstand as GRUB's TFTP server itself, so this works with the
    /// office DHCP untouched; the shim's GRUB (`boot_loader: grub`, the
    /// one Secure Boot runs, or every host with `dhcp.uefi_local_boot:
    /// grub`) takes it from the DHCP exchange. iPXE, if that is what asks,
    /// gets its script.
    LocalDisk(HostBoot),
    /// Stay silent.
    Unknown,
}

/// How the daemon's profile says a host boots.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostBoot {
    pub loader: BootLoader,
    /// The architecture of its OS tree; `None` for a machine without a
    /// profile (which is never installed, so any firmware will do).
    pub arch: Option<Arch>,
    /// Its OS's shim as a TFTP name below the root (`os/<os>/EFI/BOOT/…`),
    /// for the GRUB chain; `None` leaves UEFI on iPXE.
    pub shim: Option<String>,
}

impl HostBoot {
    /// The iPXE chain with no profile behind it: a machine without one.
    pub fn ipxe() -> HostBoot {
        HostBoot {
            loader: BootLoader::Ipxe,
            arch: None,
            shim: None,
        }
    }

    /// A host with a profile: its OS's architecture and shim.
    pub fn profiled(loader: BootLoader, arch: Arch, shim: String) -> HostBoot {
        HostBoot {
            loader,
            arch: Some(arch),
            shim: Some(shim),
        }
    }
}

/// The daemon's view of the host profiles.
pub trait HostLookup: Send + Sync {
    fn lookup(&self, mac: Mac) -> HostStatus;
}

impl<F: Fn(Mac) -> HostStatus + Send + Sync> HostLookup for F {
    fn lookup(&self, mac: Mac) -> HostStatus {
        self(mac)
    }
}

/// Which socket a packet arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// UDP 67, mostly broadcasts.
    Dhcp,
    /// UDP 4011, the PXE boot server port clients send a REQUEST to.
    BootServer,
}

/// What to do with one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Respond(Reply),
    Ignore(Reason),
}

/// An encoded reply and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub dest: Destination,
    /// For the log line.
    pub mac: Mac,
    pub firmware: Option<Firmware>,
    /// The client architecture it reported (option 93, else its vendor
    /// class's `Arch:`), iPXE's too: whether the machine under iPXE is
    /// BIOS (0) or UEFI, for a one-time network boot set through its BMC.
    pub client_arch: Option<u16>,
    pub boot_file: Option<String>,
    /// The address this reply acknowledges as the client's lease (full
    /// mode's ACK of a REQUEST): where the machine is from now on.
    pub leased: Option<Ipv4Addr>,
}

/// Where a reply is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68: the client has no address to unicast to.
    Broadcast,
    /// A relay agent (`giaddr`), port 67.
    Relay(Ipv4Addr),
    /// A client that already has this address (`ciaddr`), port 68.
    Client(Ipv4Addr),
    /// Back to the packet's source address and port (port 4011 requests).
    Sender,
}

impl Destination {
    pub fn resolve(self, sender: SocketAddr) -> SocketAddr {
        let v4 = |ip, port| SocketAddr::V4(SocketAddrV4::new(ip, port));
        match self {
            Destination::Broadcast => v4(Ipv4Addr::BROADCAST, 68),
            Destination::Relay(ip) => v4(ip, 67),
            Destination::Client(ip) => v4(ip, 68),
            Destination::Sender => sender,
        }
    }
}

/// Why a packet got no answer. Logged at debug level by the driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("malformed: {0}")]
    Malformed(#[from] Malformed),
    #[error("not a BOOTREQUEST")]
    NotBootRequest,
    #[error("BOOTP without a DHCP message type")]
    NotDhcp,
    #[error("DHCP message type {0} is not handled here")]
    UnhandledMessageType(u8),
    #[error("not a PXE or HTTP boot client (vendor class {0:?})")]
    NotPxe(String),
    #[error("REQUEST addressed to server {0}")]
    ForOtherServer(Ipv4Addr),
    #[error("REQUEST without a server identifier is for the address server")]
    NoServerId,
    #[error("{0} has no profile")]
    UnknownHost(Mac),
    #[error("{0} is installed: its firmware is left to boot its disk")]
    Installed(Mac),
    #[error("client architecture {0} has no boot loader")]
    UnsupportedArch(u16),
    #[error("{mac}'s profile is for {profile}, its firmware is {firmware}")]
    WrongArch {
        mac: Mac,
        profile: &'static str,
        firmware: &'static str,
    },
    #[error("no client architecture in option 93 or the vendor class")]
    MissingArch,
    #[error("DHCP is off")]
    Disabled,
    #[error("no free address in the pool")]
    PoolExhausted,
    #[error("DECLINE of {0}: out of the pool for a while")]
    Declined(Ipv4Addr),
    #[error("DECLINE of {0} from a MAC it is not leased to: ignored")]
    DeclineNotHeld(Ipv4Addr),
    #[error("RELEASE of {0}")]
    Released(Ipv4Addr),
    #[error("reply could not be encoded: {0}")]
    Encode(String),
}

impl Reason {
    /// A short, stable name: a metric label and an event field.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Malformed(_) => "malformed",
            Reason::NotBootRequest => "not-boot-request",
            Reason::NotDhcp => "not-dhcp",
            Reason::UnhandledMessageType(_) => "unhandled-message-type",
            Reason::NotPxe(_) => "not-pxe",
            Reason::ForOtherServer(_) => "for-other-server",
            Reason::NoServerId => "no-server-id",
            Reason::UnknownHost(_) => "no-profile",
            Reason::Installed(_) => "installed",
            Reason::UnsupportedArch(_) => "unsupported-arch",
            Reason::WrongArch { .. } => "wrong-arch",
            Reason::MissingArch => "no-arch",
            Reason::Disabled => "disabled",
            Reason::PoolExhausted => "pool-exhausted",
            Reason::Declined(_) => "declined",
            Reason::DeclineNotHeld(_) => "decline-not-held",
            Reason::Released(_) => "released",
            Reason::Encode(_) => "encode-failed",
        }
    }
}

/// What the client is, as far as choosing a boot file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Firmware {
    /// Already running iPXE (user class `iPXE` or option 175).
    Ipxe,
    /// Option 93 = 0.
    Bios,
    /// 7 or 9 (EFI BC / x86-64): both are x64 UEFI in the field.
    UefiX64,
    /// 11.
    UefiArm64,
    /// 16, or x64 sending `HTTPClient`.
    UefiHttpX64,
    /// 19, or ARM64 sending `HTTPClient`.
    UefiHttpArm64,
}

impl Firmware {
    /// The architecture it runs; `None` for iPXE, which says nothing of it
    /// here.
    pub fn arch(self) -> Option<Arch> {
        match self {
            Firmware::Ipxe => None,
            Firmware::Bios | Firmware::UefiX64 | Firmware::UefiHttpX64 => Some(Arch::X86_64),
            Firmware::UefiArm64 | Firmware::UefiHttpArm64 => Some(Arch::Aarch64),
        }
    }

    fn is_uefi(self) -> bool {
        !matches!(self, Firmware::Ipxe | Firmware::Bios)
    }

    pub(crate) fn is_http(self) -> bool {
        matches!(self, Firmware::UefiHttpX64 | Firmware::UefiHttpArm64)
    }

    pub fn name(self) -> &'static str {
        match self {
            Firmware::Ipxe => "ipxe",
            Firmware::Bios => "bios",
            Firmware::UefiX64 => "uefi-x64",
            Firmware::UefiArm64 => "uefi-arm64",
            Firmware::UefiHttpX64 => "uefi-http-x64",
            Firmware::UefiHttpArm64 => "uefi-http-arm64",
        }
    }
}

/// The boot half of an answer, shared with full mode.
#[derive(Debug, Clone)]
pub(crate) struct BootPlan {
    pub(crate) firmware: Firmware,
    pub(crate) file: String,
}

/// Decide what ProxyDHCP does with one packet.
pub fn decide<H: HostLookup + ?Sized>(
    packet: &[u8],
    ctx: &Context,
    hosts: &H,
    arrived_on: Port,
) -> Action {
    match proxy(packet, ctx, hosts, arrived_on) {
        Ok(reply) => Action::Respond(reply),
        Err(reason) => Action::Ignore(reason),
    }
}

fn proxy<H: HostLookup + ?Sized>(
    packet: &[u8],
    ctx: &Context,
    hosts: &H,
    arrived_on: Port,
) -> Result<Reply, Reason> {
    if ctx.mode == Mode::Off {
        return Err(Reason::Disabled);
    }
    let req = Request::parse(packet)?;
    if !req.is_boot_request() {
        return Err(Reason::NotBootRequest);
    }
    let kind = match (req.message_type()?.ok_or(Reason::NotDhcp)?, arrived_on) {
        (msg::DISCOVER, Port::Dhcp) => MessageType::Offer,
        (msg::REQUEST | msg::INFORM, Port::BootServer) => MessageType::Ack,
        // On port 67 a REQUEST is the client taking an address offer; answer
        // only the rare client that picked our offer as its server.
        (msg::REQUEST, Port::Dhcp) => match req.address_option(opt::SERVER_ID)? {
            Some(id) if id == ctx.address => MessageType::Ack,
            Some(id) => return Err(Reason::ForOtherServer(id)),
            None => return Err(Reason::NoServerId),
        },
        (other, _) => return Err(Reason::UnhandledMessageType(other)),
    };
    let plan = boot_plan(&req, ctx, hosts)?;
    let dest = destination(&req, arrived_on);
    let bytes = encode(&req, ctx, kind, Some(&plan), None)?;
    Ok(Reply {
        bytes,
        dest,
        mac: req.mac,
        firmware: Some(plan.firmware),
        client_arch: reported_arch(&req),
        boot_file: Some(plan.file),
        leased: None,
    })
}

pub(crate) fn destination(req: &Request<'_>, arrived_on: Port) -> Destination {
    let (giaddr, ciaddr) = (req.header.giaddr(), req.header.ciaddr());
    if !giaddr.is_unspecified() {
        Destination::Relay(giaddr)
    } else if arrived_on == Port::BootServer {
        Destination::Sender
    } else if !ciaddr.is_unspecified() {
        Destination::Client(ciaddr)
    } else {
        // Unicast to a client without an address needs an ARP entry we would
        // have to forge; broadcast is always allowed (RFC 2131 4.1).
        Destination::Broadcast
    }
}

/// Vendor class prefixes, and the class echoed in the reply.
const PXE_CLIENT: &[u8] = b"PXEClient";
const HTTP_CLIENT: &[u8] = b"HTTPClient";

pub(crate) fn boot_plan<H: HostLookup + ?Sized>(
    req: &Request<'_>,
    ctx: &Context,
    hosts: &H,
) -> Result<BootPlan, Reason> {
    let class = req.option(opt::VENDOR_CLASS).unwrap_or_default();
    let http = if class.starts_with(PXE_CLIENT) {
        false
    } else if class.starts_with(HTTP_CLIENT) {
        true
    } else {
        return Err(Reason::NotPxe(String::from_utf8_lossy(class).into_owned()));
    };
    let asked = Asked {
        mac: req.mac,
        http,
        ipxe: is_ipxe(req),
        arch: client_arch(req, class),
    };
    choose(asked, &ctx.files(), hosts)
}

/// What a boot client says of itself, read from a DHCPv4 or a DHCPv6
/// request: the boot file is chosen from this alone, the same way for both.
#[derive(Debug, Clone)]
pub(crate) struct Asked {
    pub(crate) mac: Mac,
    /// Its vendor class starts with `HTTPClient` rather than `PXEClient`.
    pub(crate) http: bool,
    /// iPXE is asking: it gets its boot script whatever its firmware.
    pub(crate) ipxe: bool,
    /// The client architecture, or why it could not be read: an error only
    /// once the answer depends on it.
    pub(crate) arch: Result<u16, Reason>,
}

/// The settings a boot file is chosen by, from either family's context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Files<'a> {
    pub(crate) urls: &'a UrlScheme,
    pub(crate) loaders: &'a Loaders,
    pub(crate) uefi_local_boot: UefiLocalBoot,
    /// The client asked over DHCPv6.
    pub(crate) ipv6: bool,
}

impl Context {
    fn files(&self) -> Files<'_> {
        Files {
            urls: &self.urls,
            loaders: &self.loaders,
            uefi_local_boot: self.uefi_local_boot,
            ipv6: false,
        }
    }
}

/// The boot file for a client that asked, by its profile and firmware: a
/// TFTP name below the root, or a URL for HTTP boot and iPXE.
pub(crate) fn choose<H: HostLookup + ?Sized>(
    asked: Asked,
    files: &Files<'_>,
    hosts: &H,
) -> Result<BootPlan, Reason> {
    let (boot, installed) = match hosts.lookup(asked.mac) {
        HostStatus::Netboot(boot) => (boot, false),
        HostStatus::LocalDisk(boot) => (boot, true),
        HostStatus::Unknown => return Err(Reason::UnknownHost(asked.mac)),
    };
    if asked.ipxe {
        let file = files.urls.boot_script(asked.mac);
        return Ok(BootPlan {
            firmware: Firmware::Ipxe,
            file,
        });
    }
    let firmware = match (asked.arch?, asked.http) {
        (0, false) => Firmware::Bios,
        (7 | 9, false) => Firmware::UefiX64,
        (11, false) => Firmware::UefiArm64,
        (16, _) | (7 | 9, true) => Firmware::UefiHttpX64,
        (19, _) | (11, true) => Firmware::UefiHttpArm64,
        (other, _) => return Err(Reason::UnsupportedArch(other)),
    };
    // An x86_64 installer on an ARM64 machine (or the reverse) cannot
    // boot; the profile is wrong, and the machine is left alone.
    if let (Some(profile), Some(found)) = (boot.arch, firmware.arch())
        && profile != found
    {
        return Err(Reason::WrongArch {
            mac: asked.mac,
            profile: profile.as_str(),
            firmware: found.as_str(),
        });
    }
    // Installed BIOS firmware moves on to its disk when left alone; so must
    // UEFI firmware with no OS tree behind it (no GRUB to reach the disk).
    if installed && (!firmware.is_uefi() || boot.shim.is_none()) {
        return Err(Reason::Installed(asked.mac));
    }
    let grub = firmware.is_uefi()
        && (installed && files.uefi_local_boot == UefiLocalBoot::Grub
            || match boot.loader {
                BootLoader::Grub => true,
                BootLoader::Ipxe => false,
                // No ARM64 iPXE ships. Over IPv6, iPXE runs DHCPv6 again and
                // takes its settings from the server that leases its address
                // (the office's, with no script), while GRUB reads the
                // firmware's exchange: UEFI PXE gets GRUB.
                BootLoader::Auto => {
                    firmware.arch() == Some(Arch::Aarch64) || files.ipv6 && !firmware.is_http()
                }
            });
    let shim = boot.shim.filter(|_| grub);
    let (urls, loaders) = (files.urls, files.loaders);
    let file = match (shim, firmware) {
        (Some(shim), f) if f.is_http() => format!("{}/{shim}", urls.base()),
        (Some(shim), _) => shim,
        (None, Firmware::Bios) => loaders.bios.clone(),
        (None, Firmware::UefiX64) => loaders.uefi_x64.clone(),
        (None, Firmware::UefiArm64) => loaders.uefi_arm64.clone(),
        (None, Firmware::UefiHttpX64) => urls.loader(&loaders.uefi_x64),
        (None, Firmware::UefiHttpArm64 | Firmware::Ipxe) => urls.loader(&loaders.uefi_arm64),
    };
    Ok(BootPlan { firmware, file })
}

fn is_ipxe(req: &Request<'_>) -> bool {
    // iPXE sends the bare string rather than RFC 3004 length-prefixed classes.
    let user_class = req.option(opt::USER_CLASS).unwrap_or_default();
    req.option(opt::IPXE_ENCAP).is_some() || user_class.windows(4).any(|w| w == b"iPXE")
}

/// The architecture the client reported, if it did, readably.
pub(crate) fn reported_arch(req: &Request<'_>) -> Option<u16> {
    client_arch(req, req.option(opt::VENDOR_CLASS).unwrap_or_default()).ok()
}

/// Option 93 (first entry), else the `Arch:NNNNN` field of a PXE vendor class.
fn client_arch(req: &Request<'_>, class: &[u8]) -> Result<u16, Reason> {
    if let Some(data) = req.option(opt::CLIENT_ARCH) {
        return match data {
            [hi, lo, ..] if data.len() % 2 == 0 => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(Malformed::BadOptionLength {
                code: opt::CLIENT_ARCH,
                len: data.len(),
            }
            .into()),
        };
    }
    let field = class
        .split(|&b| b == b':')
        .skip_while(|f| *f != b"Arch")
        .nth(1);
    field
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.parse().ok())
        .ok_or(Reason::MissingArch)
}

/// The address half of a full-mode answer.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) yiaddr: Ipv4Addr,
    pub(crate) options: Vec<DhcpOption>,
}

/// PXE vendor sub-option 6, PXE_DISCOVERY_CONTROL = 8: use the boot file in
/// this reply, no boot server discovery and no menu.
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

pub(crate) fn encode(
    req: &Request<'_>,
    ctx: &Context,
    kind: MessageType,
    plan: Option<&BootPlan>,
    grant: Option<&Grant>,
) -> Result<Vec<u8>, Reason> {
    let h = &req.header;
    let yiaddr = grant.map_or(Ipv4Addr::UNSPECIFIED, |g| g.yiaddr);
    let mut m = Message::new_with_id(
        h.xid(),
        h.ciaddr(),
        yiaddr,
        ctx.address,
        h.giaddr(),
        &req.mac.0,
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(Flags::new(u16::from(h.flags())));
    // Options are written in this order rather than through dhcproto's
    // code-sorted map: message type first, as ISC dhcpd and dnsmasq send it
    // and as picky PXE ROMs expect, and relay information last (RFC 3046).
    let mut opts = vec![
        DhcpOption::MessageType(kind),
        DhcpOption::ServerIdentifier(ctx.address),
    ];
    opts.extend(grant.iter().flat_map(|g| g.options.iter().cloned()));
    if let Some(plan) = plan {
        let http = plan.firmware.is_http();
        let class = if http { HTTP_CLIENT } else { PXE_CLIENT };
        opts.push(DhcpOption::ClassIdentifier(class.to_vec()));
        // UEFI PXE gets no option 43: some firmware (HP DL380 Gen9,
        // danderson/netboot#43) ignores a proxy offer that bypasses boot
        // server discovery, and every UEFI firmware handles its absence by
        // asking the boot server on port 4011, which answers the same file.
        // Pixiecore does the same (pixiecore/dhcp.go, offerDHCP).
        if matches!(plan.firmware, Firmware::Bios | Firmware::Ipxe) {
            opts.push(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
        }
        if !http {
            opts.push(DhcpOption::TFTPServerName(
                ctx.address.to_string().into_bytes(),
            ));
            m.set_sname_str(ctx.address.to_string());
        }
        opts.push(DhcpOption::BootfileName(plan.file.clone().into_bytes()));
        // The file field is 128 bytes with a NUL; a longer URL lives in 67 only.
        if plan.file.len() < 128 {
            m.set_fname_str(&plan.file);
        }
        // Echoed when well-formed (RFC 4578: type 0 and 16 bytes); a ROM
        // that sends none, or a broken one, is answered without it
        // (danderson/pixiecore#21: Intel ROMs omit it).
        if let Some(uuid @ [0, ..]) = req.option(opt::CLIENT_UUID)
            && uuid.len() == 17
        {
            opts.push(DhcpOption::ClientMachineIdentifier(uuid.to_vec()));
        }
    }
    // RFC 3046: a relay agent strips option 82 and wants it back.
    if let Some(info) = req.option(opt::RELAY_AGENT) {
        let info = UnknownOption::new(OptionCode::RelayAgentInformation, info.to_vec());
        opts.push(DhcpOption::Unknown(info));
    }
    opts.push(DhcpOption::End);
    let mut bytes = Vec::with_capacity(MIN_REPLY_LEN);
    let mut e = Encoder::new(&mut bytes);
    // `m` has no options, so this writes the header and the cookie only.
    let written = m
        .encode(&mut e)
        .and_then(|()| opts.iter().try_for_each(|o| o.encode(&mut e)));
    written.map_err(|e| Reason::Encode(e.to_string()))?;
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    Ok(bytes)
}
