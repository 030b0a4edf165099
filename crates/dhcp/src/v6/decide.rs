//! The DHCPv6 boot decision: datagram bytes, where they came from and one
//! snapshot in, a reply or a named reason out. No sockets, no clock.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::num::NonZeroUsize;

use lru::LruCache;

use kickstand_profiles::model::{Appliance, DhcpMode, UefiLocalBoot};
use kickstand_profiles::urls::UrlScheme;

use crate::proxy::{self, Asked, BootPlan, Files, Firmware, HostLookup, Loaders, Mode};
use crate::v6::wire::{self, Malformed, Received, Writer, msg, opt};
use crate::wire::Mac;

/// What the appliance looks like to a DHCPv6 client, from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// Where machines reach the appliance over IPv6: the host of every
    /// `tftp://[…]/` and `http://[…]/` URL answered.
    pub address: Ipv6Addr,
    /// The boot script and loader URLs, on [`Context::address`].
    pub urls: UrlScheme,
    pub loaders: Loaders,
    /// `dhcp.mode`. `full` leases IPv4 addresses only: over IPv6 it
    /// answers boot information as `proxy` does.
    pub mode: Mode,
    pub uefi_local_boot: UefiLocalBoot,
    /// Whether iPXE is sent its boot script over DHCPv6: not where the
    /// appliance has an IPv4 address too. iPXE asks both families and may
    /// take either script URL; its build token is bound to the address
    /// its DHCPv4 exchange was given, so a script fetched over IPv6 would
    /// be withheld. With DHCPv4 there, it gets its script there.
    pub scripts: bool,
    /// The Server Identifier option's DUID: a DUID-LL of the appliance's
    /// interface ([`Context::new`]). Firmware sends it back in the Request
    /// that asks for the boot file, which is how a Request for us is told
    /// from one for the office server.
    pub server_id: Vec<u8>,
}

impl Context {
    /// `mac` is the appliance's interface on the segment: its DUID-LL
    /// (RFC 8415 11.4) is the server identifier. DUID-LL rather than
    /// DUID-LLT because it needs no clock and no state to stay the same
    /// across restarts, which RFC 8415 asks of a server's DUID.
    pub fn new(address: Ipv6Addr, http_port: u16, mac: Mac) -> Self {
        Context {
            address,
            urls: UrlScheme::new(address, http_port),
            loaders: Loaders::default(),
            mode: Mode::Proxy,
            uefi_local_boot: UefiLocalBoot::Ipxe,
            scripts: true,
            server_id: wire::duid_ll(mac),
        }
    }

    /// The context of an appliance config, with its IPv6 address and the
    /// MAC of its interface on the segment.
    pub fn from_appliance(appliance: &Appliance, address: Ipv6Addr, mac: Mac) -> Self {
        let mut context = Context::new(address, appliance.server.http_port, mac);
        context.loaders.uefi_x64 = appliance.dhcp.uefi_loader.as_str().to_owned();
        context.uefi_local_boot = appliance.dhcp.uefi_local_boot;
        context.scripts = appliance.server.address.v4().is_none();
        context.mode = match appliance.dhcp.mode {
            DhcpMode::Off => Mode::Off,
            DhcpMode::Proxy => Mode::Proxy,
            DhcpMode::Full => Mode::Full,
        };
        context
    }

    fn files(&self) -> Files<'_> {
        Files {
            urls: &self.urls,
            loaders: &self.loaders,
            uefi_local_boot: self.uefi_local_boot,
            ipv6: true,
        }
    }
}

/// Which socket a datagram arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// UDP 547: clients' multicast to ff02::1:2, and relays.
    Server,
    /// UDP 4011: EDK2's PXE asks the server whose proxy Advertise it
    /// took for the boot file there, unicast, once the office server has
    /// given it an address (`PxeBcRequestBootService` in EDK2's
    /// `NetworkPkg/UefiPxeBcDxe/PxeBcDhcp6.c`).
    BootServer,
}

/// Where a datagram came from, as the socket saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub from: SocketAddrV6,
    pub port: Port,
}

/// What to do with one datagram.
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
    pub to: SocketAddr,
    pub mac: Mac,
    pub firmware: Firmware,
    pub boot_file_url: String,
    /// The client's DUID, for [`Clients::learn`].
    pub client_id: Option<Vec<u8>>,
}

/// The MACs of the clients answered lately, by DUID. EDK2 sends its
/// port-4011 Request from the global address the office server gave it,
/// which says nothing of its MAC; a DUID-UUID (what EDK2 sends whenever
/// the machine has a system UUID, as real servers and libvirt guests do)
/// does not either. The Solicit before it came from its EUI-64 link-local
/// address, so its answer teaches the DUID's MAC.
///
/// Bounded: the least recently answered DUID is forgotten first, so a
/// flood of Solicits with forged DUIDs costs a fixed amount of memory.
/// Forgetting a real client costs it its boot file on this try only.
#[derive(Debug)]
pub struct Clients(LruCache<Vec<u8>, Mac>);

impl Clients {
    /// DUIDs remembered: a rack many times over.
    pub const CAPACITY: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

    pub fn new() -> Self {
        Clients(LruCache::new(Self::CAPACITY))
    }

    /// Remember the MAC of the client a reply was for, unless its DUID is
    /// shared: iPXE sends a DUID-UUID of a zero UUID from every machine
    /// without a system UUID.
    pub fn learn(&mut self, reply: &Reply) {
        if let Some(duid) = &reply.client_id
            && !wire::is_zero_uuid(duid)
        {
            self.0.put(duid.clone(), reply.mac);
        }
    }

    fn mac(&self, duid: &[u8]) -> Option<Mac> {
        self.0.peek(duid).copied()
    }
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("malformed: {0}")]
    Malformed(#[from] Malformed),
    #[error("DHCPv6 message type {0} is not answered here")]
    UnhandledMessageType(u8),
    #[error("no Client Identifier")]
    NoClientId,
    #[error("not a PXE or HTTP boot client (vendor class {0:?})")]
    NotBootClient(String),
    #[error("Request for another server")]
    ForOtherServer,
    #[error("Request without a server identifier is for the address server")]
    NoServerId,
    /// A boot client whose MAC no source gives: its DUID is neither LL nor
    /// LLT of Ethernet, no relay sent its link-layer address, and its
    /// link-local address is not EUI-64. Host profiles are keyed by MAC,
    /// so it cannot be told from a stranger.
    #[error(
        "boot client's MAC is unknown: its DUID ({}) names none, no relay added its link-layer address (option 79) and its address is not EUI-64",
        duid_type.map_or("none".to_owned(), |t| format!("type {t}"))
    )]
    UnknownLinkLayer { duid_type: Option<u16> },
    /// The boot policy shared with DHCPv4 declined: no profile, installed,
    /// wrong or unknown architecture.
    #[error(transparent)]
    Policy(proxy::Reason),
    #[error("DHCPv6 is off")]
    Disabled,
    /// iPXE on a dual-stack appliance: see [`Context::scripts`].
    #[error("iPXE gets its boot script over DHCPv4, where its build token is bound")]
    ScriptOverIpv4,
}

impl Reason {
    /// A short, stable name: a metric label and an event field.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Malformed(_) => "malformed",
            Reason::UnhandledMessageType(_) => "unhandled-message-type",
            Reason::NoClientId => "no-client-id",
            Reason::NotBootClient(_) => "not-pxe",
            Reason::ForOtherServer => "for-other-server",
            Reason::NoServerId => "no-server-id",
            Reason::UnknownLinkLayer { .. } => "unknown-link-layer",
            Reason::Policy(reason) => reason.name(),
            Reason::Disabled => "disabled",
            Reason::ScriptOverIpv4 => "script-over-ipv4",
        }
    }
}

impl From<proxy::Reason> for Reason {
    fn from(reason: proxy::Reason) -> Self {
        Reason::Policy(reason)
    }
}

/// Vendor class data of a boot client and of our answer (RFC 5970 3.4).
const PXE_CLIENT: &[u8] = b"PXEClient";
const HTTP_CLIENT: &[u8] = b"HTTPClient";
/// The enterprise number EDK2 puts in its vendor class and looks for in an
/// offer's (`PXEBC_DHCP6_ENTERPRISE_NUM`, Intel's), with the class data at
/// byte 6: an answer with another number is not a PXE offer to it.
pub(crate) const PXE_ENTERPRISE: [u8; 4] = 343u32.to_be_bytes();

/// Decide what to do with one datagram. `clients` is read, not written:
/// the caller teaches it each reply ([`Clients::learn`]).
pub fn decide<H: HostLookup + ?Sized>(
    datagram: &[u8],
    source: Source,
    ctx: &Context,
    hosts: &H,
    clients: &Clients,
) -> Action {
    match answer(datagram, source, ctx, hosts, clients) {
        Ok(reply) => Action::Respond(reply),
        Err(reason) => Action::Ignore(reason),
    }
}

fn answer<H: HostLookup + ?Sized>(
    datagram: &[u8],
    source: Source,
    ctx: &Context,
    hosts: &H,
    clients: &Clients,
) -> Result<Reply, Reason> {
    if ctx.mode == Mode::Off {
        return Err(Reason::Disabled);
    }
    let received = Received::parse(datagram)?;
    let message = &received.message;
    let kind = reply_kind(&received, source.port, ctx)?;
    let client_id = message.options.get(opt::CLIENT_ID);
    if client_id.is_none() && message.kind != msg::INFORMATION_REQUEST {
        return Err(Reason::NoClientId);
    }
    let http = boot_class(message.options.get(opt::VENDOR_CLASS))?;
    let mac = client_mac(&received, source.from, clients).ok_or(Reason::UnknownLinkLayer {
        duid_type: client_id.and_then(wire::duid_type),
    })?;
    let asked = Asked {
        mac,
        http,
        ipxe: is_ipxe(message.options.get(opt::USER_CLASS)),
        arch: client_arch(&received),
    };
    let plan = proxy::choose(asked, &ctx.files(), hosts)?;
    if plan.firmware == Firmware::Ipxe && !ctx.scripts {
        return Err(Reason::ScriptOverIpv4);
    }
    let url = boot_file_url(&plan, ctx);
    let bytes = encode(&received, kind, client_id, &plan, &url, ctx);
    Ok(Reply {
        bytes,
        to: destination(&received, source),
        mac,
        firmware: plan.firmware,
        boot_file_url: url,
        client_id: client_id.map(<[u8]>::to_vec),
    })
}

/// The reply a message gets, if any: an Advertise for a Solicit, a Reply
/// for an Information-request and for a Request meant for us.
fn reply_kind(received: &Received<'_>, port: Port, ctx: &Context) -> Result<u8, Reason> {
    let message = &received.message;
    let ours = || match message.options.get(opt::SERVER_ID) {
        Some(id) if id == ctx.server_id => Ok(msg::REPLY),
        Some(_) => Err(Reason::ForOtherServer),
        None => Err(Reason::NoServerId),
    };
    match (message.kind, port) {
        (msg::SOLICIT, Port::Server) => Ok(msg::ADVERTISE),
        // A Request to 547 is a client taking an address: only one that
        // names us as its server is ours. EDK2's Request to 4011 names us
        // too; any other server's name there is a client confused.
        (msg::REQUEST, _) => ours(),
        // RFC 8415 18.2.6: an Information-request may name no server.
        (msg::INFORMATION_REQUEST, _) => match message.options.get(opt::SERVER_ID) {
            None => Ok(msg::REPLY),
            Some(_) => ours(),
        },
        (other, _) => Err(Reason::UnhandledMessageType(other)),
    }
}

/// Whether the vendor class (option 16: enterprise number, then
/// length-prefixed class data) is an HTTP boot client's; an error for a
/// client that is no boot client.
fn boot_class(option: Option<&[u8]>) -> Result<bool, Reason> {
    let classes = option.and_then(|o| o.get(4..)).unwrap_or_default();
    let mut rest = classes;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(class) = tail.get(..len) else { break };
        if class.starts_with(PXE_CLIENT) {
            return Ok(false);
        }
        if class.starts_with(HTTP_CLIENT) {
            return Ok(true);
        }
        rest = &tail[len..];
    }
    Err(Reason::NotBootClient(
        String::from_utf8_lossy(classes).into_owned(),
    ))
}

/// The machine's MAC, from the most trustworthy source there is: the
/// relay on its link saw its frames (RFC 6939); a DUID-LL/LLT names the
/// hardware; an answer to the same DUID was for it ([`Clients`]); an
/// EUI-64 link-local address was formed from it. `from` is where the
/// datagram came from, the client itself unless relayed.
pub(crate) fn client_mac(
    received: &Received<'_>,
    from: SocketAddrV6,
    clients: &Clients,
) -> Option<Mac> {
    let relay = received.first_relay();
    let client_id = received.message.options.get(opt::CLIENT_ID);
    relay
        .and_then(|r| r.options.get(opt::CLIENT_LINKLAYER_ADDR))
        .and_then(wire::link_layer_option)
        .or_else(|| client_id.and_then(wire::duid_mac))
        .or_else(|| client_id.and_then(|id| clients.mac(id)))
        .or_else(|| wire::eui64_mac(relay.map_or(*from.ip(), |r| r.peer)))
}

/// Addresses [`leased`] takes from one message: a client asks for one per
/// IA, and has one IA or two.
pub const MAX_LEASED: usize = 4;

/// The addresses another server leased the client, as its own message
/// names them: the IA Addresses inside the IA_NA and IA_TA options of a
/// Request, Renew, Rebind or Confirm that does not name this server
/// (Kickstand leases no IPv6 address), at most [`MAX_LEASED`]. The
/// counterpart of a DHCPv4 REQUEST's option 50, for the build token
/// (`kickstand_state::claim`). A Solicit's are wishes and a Release's or
/// Decline's are given back: none; nor is a link-local, multicast or
/// unspecified address anyone's lease. Read whatever the decision was:
/// these messages come from any client, a boot client or not.
pub fn leased(datagram: &[u8], ctx: &Context) -> Vec<Ipv6Addr> {
    let Ok(received) = Received::parse(datagram) else {
        return Vec::new();
    };
    let message = &received.message;
    let taking = matches!(
        message.kind,
        msg::REQUEST | msg::RENEW | msg::REBIND | msg::CONFIRM
    );
    let ours = message.options.get(opt::SERVER_ID) == Some(ctx.server_id.as_slice());
    if !taking || ours {
        return Vec::new();
    }
    let no_lease = |a: &Ipv6Addr| {
        a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_unicast_link_local()
    };
    let mut leased = Vec::new();
    for address in wire::ia_addresses(&message.options) {
        if leased.len() == MAX_LEASED {
            break;
        }
        if !no_lease(&address) && !leased.contains(&address) {
            leased.push(address);
        }
    }
    leased
}

/// iPXE sends user class `iPXE` (option 15).
fn is_ipxe(user_class: Option<&[u8]>) -> bool {
    user_class.is_some_and(|c| c.windows(4).any(|w| w == b"iPXE"))
}

/// Option 61's first architecture, else the `Arch:NNNNN` field of the
/// vendor class as in DHCPv4.
fn client_arch(received: &Received<'_>) -> Result<u16, proxy::Reason> {
    let options = &received.message.options;
    if let Some(data) = options.get(opt::CLIENT_ARCH_TYPE) {
        return match data {
            [hi, lo, ..] if data.len() % 2 == 0 => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(proxy::Reason::MissingArch),
        };
    }
    let class = options.get(opt::VENDOR_CLASS).unwrap_or_default();
    class
        .split(|&b| b == b':')
        .skip_while(|f| *f != b"Arch")
        .nth(1)
        .and_then(|f| std::str::from_utf8(f.get(..5)?).ok())
        .and_then(|f| f.parse().ok())
        .ok_or(proxy::Reason::MissingArch)
}

/// The boot file as RFC 5970's option 59 wants it: a URL. A TFTP name
/// (native PXE) becomes `tftp://[address]/name`, the form EDK2's
/// `PxeBcExtractBootFileUrl` parses; HTTP boot and iPXE already have one.
fn boot_file_url(plan: &BootPlan, ctx: &Context) -> String {
    match plan.firmware {
        Firmware::Ipxe | Firmware::UefiHttpX64 | Firmware::UefiHttpArm64 => plan.file.clone(),
        Firmware::Bios | Firmware::UefiX64 | Firmware::UefiArm64 => {
            format!("tftp://[{}]/{}", ctx.address, plan.file)
        }
    }
}

/// The answer: server and client identifiers, the vendor class EDK2 looks
/// for, the boot file URL, and no IA_NA, IA_TA or IA_PD. EDK2 takes an
/// Advertise without an address as a proxy offer and leaves the address
/// to the office server; other clients simply find no address in it.
/// Option 60 (boot file parameters) is not sent: no loader Kickstand hands
/// out reads parameters.
fn encode(
    received: &Received<'_>,
    kind: u8,
    client_id: Option<&[u8]>,
    plan: &BootPlan,
    url: &str,
    ctx: &Context,
) -> Vec<u8> {
    let mut w = Writer::message(kind, received.message.xid);
    w.option(opt::SERVER_ID, &[&ctx.server_id]);
    if let Some(id) = client_id {
        w.option(opt::CLIENT_ID, &[id]);
    }
    let class = if plan.firmware.is_http() {
        HTTP_CLIENT
    } else {
        PXE_CLIENT
    };
    let class_len = (class.len() as u16).to_be_bytes();
    w.option(opt::VENDOR_CLASS, &[&PXE_ENTERPRISE, &class_len, class]);
    w.option(opt::BOOTFILE_URL, &[url.as_bytes()]);
    // Each relay wraps what the one nearer the client sent on; the reply
    // goes back out through them in the opposite order.
    let mut bytes = w.into_bytes();
    for relay in received.relays.iter().rev() {
        bytes = Writer::relay_reply(relay, &bytes).into_bytes();
    }
    bytes
}

/// A client on the link gets its answer at its own address on the client
/// port (RFC 8415 18.3), with the scope of the interface it came in on; a
/// relay, and EDK2 asking on port 4011, at the address and port they sent
/// from.
fn destination(received: &Received<'_>, source: Source) -> SocketAddr {
    let mut to = source.from;
    if received.relays.is_empty() && source.port == Port::Server {
        to.set_port(CLIENT_PORT);
    }
    SocketAddr::V6(to)
}

/// UDP port DHCPv6 clients listen on.
pub const CLIENT_PORT: u16 = 546;
