//! The validated, immutable snapshot every module reads. Serialisable so the
//! templates see exactly these values.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::Serialize;

use crate::Mac;

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
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Extra trust anchors for https mirrors.
    pub mirror_ca_file: Option<PathBuf>,
    pub cache: Cache,
    pub templates_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Appliance {
    /// The URL machines use to reach the HTTP front, e.g. `http://10.0.0.1:8080`.
    pub fn base_url(&self) -> String {
        match self.server.http_port {
            80 => format!("http://{}", self.server.address),
            port => format!("http://{}:{port}", self.server.address),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// What machines are told: siaddr, DHCP option 54 and every URL.
    pub address: Ipv4Addr,
    pub bind: IpAddr,
    /// DHCP is answered only on these interfaces; empty means all. Keeps
    /// ProxyDHCP off the office side of a dual-homed appliance.
    pub interfaces: Vec<String>,
    pub http_port: u16,
    pub tftp_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    pub mode: DhcpMode,
    pub unknown: UnknownPolicy,
    pub uefi_loader: String,
    pub pool: Option<Pool>,
}

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

/// What happens to a PXE client with no host profile. Never an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownPolicy {
    /// Not answered at all: safest on a shared network.
    Ignore,
    /// Answered with a script that boots the local disk.
    LocalBoot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: u32,
    pub leases_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
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
    /// Relative to the tree.
    pub kernel: String,
    pub initrd: String,
    pub repos: Vec<Repo>,
    pub kickstart_template: String,
    pub ipxe_template: String,
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

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// A host after defaults and groups are merged in: everything a kickstart
/// needs, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub mac: Mac,
    pub hostname: String,
    pub os: String,
    pub arch: Arch,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskLayout {
    Lvm,
    Plain,
    Btrfs,
}

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// Extra kickstart lines, concatenated from defaults, groups and the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snippets {
    pub pre: Vec<String>,
    pub post: Vec<String>,
}
