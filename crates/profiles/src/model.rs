//! The validated, immutable snapshot every module reads. Serialisable so the
//! templates see exactly these values.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::Serialize;

use crate::Mac;
use crate::parse::config_words;
use crate::urls::UrlScheme;

/// One consistent view of the whole profile set. A reload builds a new one;
/// nothing ever mutates a snapshot in place.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub appliance: Appliance,
    pub oses: BTreeMap<String, Os>,
    pub hosts: BTreeMap<Mac, Host>,
    /// Template name (path relative to the templates directory) → source.
    /// Read together with the profiles so a snapshot's templates and
    /// profiles always belong together.
    pub templates: BTreeMap<String, String>,
    /// Every file the snapshot was built from, for the status page.
    pub files: Vec<PathBuf>,
}

impl Snapshot {
    pub fn host(&self, mac: &Mac) -> Option<&Host> {
        self.hosts.get(mac)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    pub server: Server,
    pub dhcp: Dhcp,
    /// Directory of boot loaders served over TFTP.
    pub tftp_root: PathBuf,
    /// The office proxy; `None` means mirrors are reached directly.
    pub proxy: Option<Proxy>,
    /// Mirror name (the `<mirror>` of `/repo/<mirror>/<path>`) → base URLs,
    /// tried in order; later ones are the failover.
    pub mirrors: BTreeMap<String, Vec<MirrorUrl>>,
    /// Extra trust anchors for https mirrors (a site's TLS inspection CA,
    /// or a test bed's).
    pub mirror_ca: Option<CaBundle>,
    pub cache: Cache,
    pub templates_dir: PathBuf,
    pub state_dir: PathBuf,
    pub state: State,
    /// How often every host's BMC is asked its power state, for the status
    /// page; `None`: never by itself (`power.poll_interval: off`).
    pub power_poll: Option<std::time::Duration>,
}

/// Host state: its database, this appliance's name on it, and the install
/// time-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// A shared PostgreSQL database; `None` keeps state in an SQLite file
    /// in the state directory.
    pub postgres: Option<Postgres>,
    /// `None`: the machine's host name, found at start.
    pub appliance: Option<String>,
    /// No `installed` within this long of an install's start fails the host
    /// (and its build token expires).
    pub install_timeout: std::time::Duration,
    /// The operator token (mode 0600), created at first start if missing.
    pub operator_token_file: PathBuf,
}

/// A shared PostgreSQL database: where it is and who connects
/// (`state.url`), how the connection is secured (its `sslmode`, the CA
/// that vouches for the server) and where the password is kept.
///
/// Parsed from a `postgres://` URL or libpq `key=value` pairs
/// (`str::parse`), as libpq reads them; validation of the config then sets
/// the files relative to the config's directory.
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    /// libpq keywords and values, without `sslmode` and `sslrootcert`
    /// (the fields below). May hold a password: only
    /// [`Postgres::conninfo`] gives it out, for the driver; `Debug` and
    /// [`Postgres::redacted`] leave it out.
    params: Vec<(String, String)>,
    /// `None`: not said; the state store picks (TLS for a TCP host).
    pub sslmode: Option<SslMode>,
    /// The CA certificates (PEM) that vouch for the server: `state.ca_file`
    /// or the URL's `sslrootcert`. `None`: Mozilla's roots, when checking.
    pub ca_file: Option<PathBuf>,
    /// A file holding the password (only its owner may read it); used
    /// instead of a password in the URL, so the config file need not be
    /// secret.
    pub password_file: Option<PathBuf>,
}

impl Postgres {
    /// A keyword's value: `host`, `port`, `hostaddr`, `user`, `dbname`, …
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }

    /// Every keyword as `key=value` pairs, the password included: for the
    /// driver, never for a message.
    pub fn conninfo(&self) -> String {
        crate::conninfo::render(&self.params, false)
    }

    /// Every keyword but the password's value, for messages.
    pub fn redacted(&self) -> String {
        crate::conninfo::render(&self.params, true)
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("conninfo", &self.redacted())
            .field("sslmode", &self.sslmode)
            .field("ca_file", &self.ca_file)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Reading a connection string is validating it: the same rules as the
/// config's `state.url`, which must also be a URL with a host.
impl std::str::FromStr for Postgres {
    type Err = String;

    fn from_str(s: &str) -> Result<Postgres, String> {
        let mut params = crate::conninfo::parse(s)?;
        let mut take = |key: &str| {
            let at = params.iter().position(|(k, _)| k == key)?;
            Some(params.remove(at).1)
        };
        let sslmode = take("sslmode")
            .map(|m| m.parse::<SslMode>().map_err(|e| format!("sslmode {e}")))
            .transpose()?;
        let ca_file = take("sslrootcert").map(PathBuf::from);
        several_hosts(&params)?;
        Ok(Postgres {
            params,
            sslmode,
            ca_file,
            password_file: None,
        })
    }
}

/// What tokio-postgres would find wrong with several hosts only when it
/// connects, found when the config is read: the ports must be one for
/// all or one per host, as the `hostaddr`s must be; and the session must
/// be a writing one (the store writes; a standby refuses), which is what
/// the store asks for when `target_session_attrs` is not said.
fn several_hosts(params: &[(String, String)]) -> Result<(), String> {
    let count = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.split(',').count())
    };
    let hosts = count("host");
    if let (Some(hosts), Some(addrs)) = (hosts, count("hostaddr"))
        && hosts != addrs
    {
        return Err(format!(
            "names {hosts} host(s) but {addrs} hostaddr(s): give one hostaddr per host"
        ));
    }
    if let (Some(hosts), Some(ports)) = (hosts.or(count("hostaddr")), count("port"))
        && ports > 1
        && ports != hosts
    {
        return Err(format!(
            "names {hosts} host(s) but {ports} ports: give one port for them all, or one per host in the same order"
        ));
    }
    match params.iter().find(|(k, _)| k == "target_session_attrs") {
        Some((_, v)) if v != "read-write" => Err(
            "has a target_session_attrs other than read-write: Kickstand writes, so it always looks for the host that takes writes (the primary); leave it out or say read-write".to_owned(),
        ),
        _ => Ok(()),
    }
}

/// libpq's `sslmode`: whether the connection to PostgreSQL is encrypted,
/// and what is checked of the server that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it, else plain text; nothing checked.
    Prefer,
    /// TLS or no connection; the server is not checked (with a CA file,
    /// its chain is, as libpq does).
    Require,
    /// TLS; the server's certificate chain is checked against the CA file,
    /// not the name it is for.
    VerifyCa,
    /// TLS; the chain and the host name are checked.
    VerifyFull,
}

config_words!(SslMode {
    "disable" => SslMode::Disable,
    "prefer" => SslMode::Prefer,
    "require" => SslMode::Require,
    "verify-ca" => SslMode::VerifyCa,
    "verify-full" => SslMode::VerifyFull,
});

impl Appliance {
    /// How a machine at `client` reaches the HTTP front: every URL handed
    /// to it is built by this, in its own address family where the
    /// appliance has an address of that family.
    pub fn urls_for(&self, client: IpAddr) -> UrlScheme {
        UrlScheme::new(self.server.address.facing(client), self.server.http_port)
    }

    /// The URLs for no client in particular (`check`, the status page,
    /// logs): the IPv4 ones on an appliance that has IPv4.
    pub fn urls(&self) -> UrlScheme {
        UrlScheme::new(self.server.address.primary(), self.server.http_port)
    }
}

/// Where machines reach the appliance: one address per family, at least
/// one. An IPv6-only rack names only an IPv6 one; a dual-stack appliance
/// both, and each client is told the one of its own family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Both(Ipv4Addr, Ipv6Addr),
}

impl Addresses {
    /// `None` when both are missing: an appliance nobody can reach.
    pub fn new(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Option<Addresses> {
        match (v4, v6) {
            (Some(v4), Some(v6)) => Some(Addresses::Both(v4, v6)),
            (Some(v4), None) => Some(Addresses::V4(v4)),
            (None, Some(v6)) => Some(Addresses::V6(v6)),
            (None, None) => None,
        }
    }

    /// Siaddr, option 54 and the URLs of ProxyDHCP (v4): `None` on an
    /// IPv6-only appliance, which then answers no DHCPv4.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        match *self {
            Addresses::V4(v4) | Addresses::Both(v4, _) => Some(v4),
            Addresses::V6(_) => None,
        }
    }

    /// The DHCPv6 boot answers' server and the URLs of IPv6 clients.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        match *self {
            Addresses::V6(v6) | Addresses::Both(_, v6) => Some(v6),
            Addresses::V4(_) => None,
        }
    }

    /// The one a client at `client` is told: of its family (an IPv4
    /// client on a dual-stack socket counts as IPv4), or the other one
    /// when the appliance has none of its family (a client that reached
    /// it anyway, through a router or NAT64).
    pub fn facing(&self, client: IpAddr) -> IpAddr {
        match (*self, client.to_canonical()) {
            (Addresses::V4(v4), _) | (Addresses::Both(v4, _), IpAddr::V4(_)) => IpAddr::V4(v4),
            (Addresses::V6(v6), _) | (Addresses::Both(_, v6), IpAddr::V6(_)) => IpAddr::V6(v6),
        }
    }

    /// The IPv4 address where there is one, else the IPv6 one.
    pub fn primary(&self) -> IpAddr {
        self.facing(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Each address, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> {
        let v4 = self.v4().map(IpAddr::V4);
        v4.into_iter().chain(self.v6().map(IpAddr::V6))
    }
}

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.iter().map(|a| a.to_string()).collect();
        f.write_str(&all.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// What machines are told: siaddr, DHCP option 54 and every URL.
    /// `auto` in the config is resolved when it is loaded (at start and at
    /// every reload): the first of `interfaces`' addresses, or with none
    /// named, the default route's interface's. An IPv6 address beside it
    /// (or alone, on an IPv6-only rack) is what IPv6 clients are told.
    pub address: Addresses,
    pub bind: IpAddr,
    /// DHCP is answered only on these interfaces; empty means all. Keeps
    /// ProxyDHCP off the office side of a dual-homed appliance.
    pub interfaces: Vec<String>,
    /// The VLAN each of these interfaces is on, of those that carry a
    /// host's `boot_vlan`: a DHCP exchange seen there is that host's
    /// installer taking its address on the VLAN, not a second machine
    /// claiming its MAC. Named, not read from the kernel: an interface
    /// that is a switch's access port or a hypervisor's port group carries
    /// no tag to read.
    pub interface_vlans: BTreeMap<String, VlanId>,
    pub http_port: u16,
    pub tftp_port: u16,
    /// The installer-log receiver; installers are told `inst.syslog=`.
    pub syslog_port: u16,
    /// Cap on open HTTP connections; `None`: as many as the daemon's
    /// file-descriptor limit allows with room for cache files, upstream,
    /// TFTP and DHCP sockets.
    pub max_connections: Option<usize>,
    /// Cap on open HTTP connections from one address, so one host cannot
    /// take every descriptor; a rack's installers open a handful each.
    pub max_connections_per_client: usize,
    /// The operator's channel: the same front over HTTPS, the only one
    /// that accepts the operator token.
    pub https_port: u16,
    /// A configured certificate and key; `None`: the self-signed pair the
    /// daemon makes in the state directory at first start.
    pub tls: Option<TlsFiles>,
    /// The rack segment, when several appliances serve it through one
    /// PostgreSQL: they elect one active appliance, which answers the
    /// segment and holds `address` on the first of `interfaces`; the
    /// others stand by. `None`: this appliance answers alone.
    pub segment: Option<String>,
}

/// PEM files for the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    pub mode: DhcpMode,
    pub unknown: UnknownPolicy,
    pub uefi_loader: UefiLoader,
    pub uefi_local_boot: UefiLocalBoot,
    pub pool: Option<Pool>,
    /// Another server seen offering boot information is warned about until
    /// it has been quiet this long.
    pub rogue_forget_after: std::time::Duration,
    /// Whether an iPXE just given boot information gets one router
    /// advertisement that configures nothing when it solicits one: it
    /// waits some 13 s for an IPv6 router before it asks for its script.
    /// Only with `server.interfaces` set, so none goes to the office side.
    pub answer_router_solicitations: bool,
}

/// The iPXE build UEFI x64 machines are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UefiLoader {
    /// iPXE with its own NIC drivers.
    IpxeEfi,
    /// iPXE on the firmware's SNP driver, for NICs iPXE has no driver for.
    SnponlyEfi,
}

config_words!(UefiLoader { "ipxe.efi" => UefiLoader::IpxeEfi, "snponly.efi" => UefiLoader::SnponlyEfi });

/// How an installed UEFI host whose loader is iPXE reaches its disk (a
/// `boot_loader: grub` host always takes the shim → GRUB chain). Either
/// way the OS tree's GRUB reads its config from the appliance and
/// chainloads the disk's own loader; what differs is how GRUB learns
/// where the appliance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UefiLocalBoot {
    /// The firmware gets iPXE, which names the appliance as GRUB's TFTP
    /// server itself: works behind any office DHCP server.
    Ipxe,
    /// The firmware gets the tree's shim → GRUB at once, one loader fewer;
    /// GRUB takes its server from the firmware's DHCP exchange, so the
    /// office DHCP must name the appliance as next server (or the OS's
    /// GRUB read the ProxyDHCP offer, as EL's does).
    Grub,
}

config_words!(UefiLocalBoot { "ipxe" => UefiLocalBoot::Ipxe, "grub" => UefiLocalBoot::Grub });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpMode {
    /// Boot information only, beside the office DHCP server.
    Proxy,
    /// No DHCP at all (another server hands out boot options).
    Off,
    /// Addresses too, for an isolated rack network.
    Full,
}

config_words!(DhcpMode { "proxy" => DhcpMode::Proxy, "off" => DhcpMode::Off, "full" => DhcpMode::Full });

/// What happens to a PXE client with no host profile. Never an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownPolicy {
    /// Not answered at all: safest on a shared network.
    Ignore,
    /// Answered with a script that boots the local disk.
    LocalBoot,
    /// Answered with a script that reports what the machine is (for
    /// `kickstand adopt`) and then boots its local disk.
    Discover,
}

config_words!(UnknownPolicy { "ignore" => UnknownPolicy::Ignore, "local-boot" => UnknownPolicy::LocalBoot, "discover" => UnknownPolicy::Discover });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub prefix_len: u8,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: u32,
    pub leases_file: PathBuf,
}

/// The office HTTP proxy, validated: where to connect and what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// As written, for messages.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub credentials: Option<ProxyCredentials>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log line.
        f.debug_struct("ProxyCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A mirror base URL, validated once here: http or https, a host, no
/// credentials, query or fragment; the host is lowercase, the port
/// explicit and the path ends with `/`. A parent appliance written
/// `kickstand://host[:port]/<mirror>` is stored as the URL of its repo
/// route, `http://host:port/repo/<mirror>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub kind: MirrorKind,
}

/// What answers at a mirror base URL, which decides the route to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorKind {
    /// A public or site mirror, reached through the office proxy when
    /// there is one.
    Mirror,
    /// Another Kickstand (a site cache): on the site's own network, so it
    /// is reached directly, never through the office proxy that exists to
    /// reach the internet.
    Appliance,
}

impl MirrorUrl {
    /// The URL of `wire_path` (relative, already percent-encoded) below this base.
    pub fn url_for(&self, wire_path: &str) -> String {
        format!("{}{wire_path}", self.base())
    }

    /// `scheme://host:port/path/`, the port always written.
    pub fn base(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.host,
            self.port,
            self.path
        )
    }
}

/// PEM certificates read from `mirror_ca_file`, in DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub dir: PathBuf,
    pub max_bytes: u64,
    /// How long a revalidated file (`repomd.xml`, `.treeinfo`, boot images)
    /// is served before the mirror is asked again: a rack booting at once
    /// sends one conditional request, not fifty.
    pub revalidate_after: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Os {
    pub name: String,
    pub title: String,
    pub mirror: String,
    /// Tree path under the mirror, without leading or trailing `/`.
    pub tree: String,
    /// The architecture of its tree: hosts of another one cannot use it.
    pub arch: Arch,
    /// Relative to the tree.
    pub kernel: String,
    pub initrd: String,
    /// The signed shim and the GRUB it loads, relative to the tree and in
    /// one directory: the shim loads GRUB from its own directory by a name
    /// built into it (`grubx64.efi`, `grubaa64.efi`).
    pub shim: String,
    pub grub: String,
    pub repos: Vec<Repo>,
    pub kickstart_template: String,
    pub ipxe_template: String,
    pub grub_template: String,
    pub boot_args: String,
    pub gpg_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repo {
    pub name: String,
    pub mirror: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

config_words!(Arch { "x86_64" => Arch::X86_64, "aarch64" => Arch::Aarch64, "arm64" => Arch::Aarch64 });

impl Arch {
    /// The EL tree's boot files for this architecture (`EFI/BOOT/…`): the
    /// shim under its removable-media name, and the GRUB the shim loads.
    pub fn default_shim_and_grub(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi"),
            Arch::Aarch64 => ("EFI/BOOT/BOOTAA64.EFI", "EFI/BOOT/grubaa64.efi"),
        }
    }
}

/// Which chain a host's UEFI firmware is started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootLoader {
    /// iPXE on BIOS and UEFI x64 (HTTP for the kernel and initrd, any
    /// office DHCP server); shim and GRUB on UEFI ARM64, where Debian
    /// ships no iPXE.
    Auto,
    /// iPXE (`undionly.kpxe`, `ipxe.efi` or `snponly.efi`).
    Ipxe,
    /// The OS tree's own signed shim and GRUB on UEFI: what Secure Boot
    /// needs. BIOS firmware stays on iPXE.
    Grub,
}

config_words!(BootLoader { "auto" => BootLoader::Auto, "ipxe" => BootLoader::Ipxe, "grub" => BootLoader::Grub });

/// A host after defaults and groups are merged in: everything a kickstart
/// needs, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub mac: Mac,
    pub hostname: String,
    pub os: String,
    pub arch: Arch,
    pub boot_loader: BootLoader,
    /// The installer's VLAN: the firmware and iPXE boot on the switch
    /// port's untagged network, where ProxyDHCP answers; the installer
    /// kernel tags its traffic (kickstart, packages, callbacks) with this
    /// ID. `None`: the install stays untagged.
    pub boot_vlan: Option<VlanId>,
    /// Groups this host belongs to, explicit or by selector, in the order
    /// they were applied.
    pub groups: Vec<String>,
    pub disk: Disk,
    pub network: Network,
    /// A crypt(3) hash; `None` locks the root account.
    pub root_password_hash: Option<String>,
    pub ssh_keys: Vec<String>,
    pub packages: Vec<String>,
    pub timezone: String,
    pub snippets: Snippets,
    /// Its BMC, for `kickstand power` and `rearm --reboot`.
    pub bmc: Option<Bmc>,
}

/// How the daemon reaches a host's baseboard management controller. The
/// password stays in its file (checked when the profiles load, read again
/// at each use): a profile, an API answer or a log line never holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bmc {
    pub driver: BmcDriver,
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "driver")]
pub enum BmcDriver {
    Redfish {
        /// `scheme://host[:port]`, no path.
        base: String,
        /// `/redfish/v1/Systems/…`; `None`: the BMC's only system.
        system: Option<String>,
        tls: BmcTls,
    },
    Ipmi {
        host: String,
        port: u16,
        /// `None`: ipmitool asks the BMC which it takes.
        cipher_suite: Option<u8>,
    },
}

impl Bmc {
    /// Where it is, for messages and pages: a URL, or `host:port`.
    pub fn address(&self) -> String {
        match &self.driver {
            BmcDriver::Redfish { base, .. } => base.clone(),
            BmcDriver::Ipmi { host, port, .. } => format!("{host}:{port}"),
        }
    }
}

/// How a Redfish BMC's HTTPS certificate is checked. BMCs mostly present
/// a self-signed certificate: pinning its fingerprint is the way to trust
/// exactly that one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BmcTls {
    /// Against the public CAs.
    Verify,
    /// Not at all (the operator said `insecure`).
    Insecure,
    /// Against the CAs of a PEM file.
    CaFile(PathBuf),
    /// The certificate whose DER has this SHA-256, whatever its name or CA.
    Fingerprint([u8; 32]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskLayout {
    Lvm,
    Plain,
    Btrfs,
}

config_words!(DiskLayout { "lvm" => DiskLayout::Lvm, "plain" => DiskLayout::Plain, "btrfs" => DiskLayout::Btrfs });

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub layout: DiskLayout,
    /// The only disk the installer may touch; `None` lets Anaconda pick.
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Kickstart `--device`; `link` means the first interface with a link.
    pub device: String,
    pub static_ip: Option<StaticIp>,
    /// The installed system's interface is tagged with this VLAN (kickstart
    /// `--vlanid`); `None`: untagged.
    pub vlan: Option<VlanId>,
}

/// An 802.1Q VLAN ID: 1 to 4094 (0 and 4095 are reserved by the standard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VlanId(u16);

impl VlanId {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl std::str::FromStr for VlanId {
    type Err = String;

    fn from_str(s: &str) -> Result<VlanId, String> {
        // Digits only: `u16`'s parser would take a `+` sign.
        Some(s)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|id| (1..=4094).contains(id))
            .map(VlanId)
            .ok_or_else(|| format!("`{s}` is not a VLAN ID (1 to 4094)"))
    }
}

/// An installed system's fixed address, of either family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticIp {
    pub address: IpAddr,
    pub prefix_len: u8,
    /// `ipv4` or `ipv6`: which kickstart options carry it.
    pub family: &'static str,
    /// The netmask of `prefix_len` (IPv4 only), as `--netmask` takes it.
    pub netmask: Option<Ipv4Addr>,
    /// Of the address's family (an IPv6 one may be link-local, as routers'
    /// often are).
    pub gateway: Option<IpAddr>,
    /// Name servers of either family.
    pub dns: Vec<IpAddr>,
}

/// The netmask of a prefix length, for every place that needs one (static
/// addresses in kickstarts, the full-mode pool). `prefix_len` over 32 is
/// treated as 32.
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    ipnet::Ipv4Net::new(Ipv4Addr::UNSPECIFIED, prefix_len.min(32))
        .map_or(Ipv4Addr::BROADCAST, |n| n.netmask())
}

/// Extra kickstart lines, concatenated from defaults, groups and the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snippets {
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// Parsing a mirror URL is validating it: the same rules as the config's.
impl std::str::FromStr for MirrorUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<MirrorUrl, String> {
        crate::parse::mirror_url(s)
    }
}

impl Proxy {
    /// Validates an office proxy as the config's `proxy:` section would.
    pub fn parse(
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Proxy, String> {
        crate::parse::proxy(url, username, password)
    }
}
