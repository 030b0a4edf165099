//! What the YAML files say, exactly as written. Nothing here is trusted:
//! `validate` turns these into the types of `model`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub(crate) type S<T> = Spanned<T>;

/// `kickstand.yaml`, the appliance configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplianceFile {
    pub server: Server,
    #[serde(default)]
    pub dhcp: Dhcp,
    #[serde(default)]
    pub tftp: Tftp,
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub mirrors: BTreeMap<String, S<Vec<S<String>>>>,
    /// PEM bundle of extra CAs trusted for https mirrors (a site's TLS
    /// inspection CA, or a test bed's CA).
    pub mirror_ca_file: Option<String>,
    #[serde(default)]
    pub cache: Cache,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub power: Power,
}

/// Power control through the hosts' BMCs (the BMCs themselves are in the
/// host profiles).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Power {
    /// How often the status page's power states are read from the BMCs;
    /// `off` reads them only when the operator asks.
    pub poll_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    /// One address, or one of each family: `10.0.0.5`, `fd00::5`,
    /// `[auto, fd00::5]`.
    pub address: S<OneOrMore>,
    pub bind: Option<S<String>>,
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// The install VLAN each of these interfaces is on (`boot_vlan`).
    #[serde(default)]
    pub interface_vlans: BTreeMap<String, S<String>>,
    pub http_port: Option<u16>,
    pub tftp_port: Option<u16>,
    /// UDP port of the installer-log receiver (`inst.syslog=`); 0 binds
    /// any free port.
    pub syslog_port: Option<u16>,
    /// Open HTTP connections, all clients together (default: what the
    /// file-descriptor limit allows, with room for everything else).
    pub max_connections: Option<S<u64>>,
    /// Open HTTP connections from one client address.
    pub max_connections_per_client: Option<S<u64>>,
    /// The HTTPS listener: the operator's channel (status page actions,
    /// operator API, CLI); installers stay on `http_port`.
    pub https_port: Option<S<u16>>,
    /// A PEM certificate (chain) for HTTPS instead of the self-signed one
    /// made at first start; needs `tls_key`.
    pub tls_cert: Option<S<String>>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<S<String>>,
    /// The rack segment this appliance serves with others that share its
    /// PostgreSQL: one of them answers, the others stand by.
    pub segment: Option<S<String>>,
}

/// A YAML scalar or a list of scalars, read as a list. serde's untagged
/// enums buffer their input and so lose the line and column every
/// diagnostic needs; a visitor that takes either keeps them.
#[derive(Debug)]
pub(crate) struct OneOrMore(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMore;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address or a list of addresses")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMore, E> {
                Ok(OneOrMore(vec![v.to_owned()]))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMore, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMore(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Dhcp {
    pub mode: Option<S<String>>,
    pub unknown: Option<S<String>>,
    pub uefi_loader: Option<S<String>>,
    /// How an installed UEFI host on iPXE reaches its disk.
    pub uefi_local_boot: Option<S<String>>,
    pub pool: Option<S<Pool>>,
    /// How long another server's boot offer keeps its warning up.
    pub rogue_forget_after: Option<S<String>>,
    /// Answer the IPv6 router solicitation of an iPXE just answered, so
    /// it stops waiting for a router.
    pub answer_router_solicitations: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pool {
    pub start: S<String>,
    pub end: S<String>,
    pub prefix_len: S<u8>,
    pub router: Option<S<String>>,
    #[serde(default)]
    pub dns: Vec<S<String>>,
    pub lease_secs: Option<u32>,
    pub leases_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tftp {
    pub root: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Proxy {
    pub url: S<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cache {
    pub dir: Option<String>,
    pub max_size: Option<S<String>>,
    pub revalidate_after: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Paths {
    pub templates: Option<String>,
    pub state: Option<String>,
}

/// Where host state lives and how installs are watched.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    /// `postgres://…`: a database several appliances share. Absent: an
    /// SQLite file in `paths.state`.
    pub url: Option<S<String>>,
    /// PEM CA certificates that vouch for the PostgreSQL server (instead
    /// of the URL's `sslrootcert`).
    pub ca_file: Option<S<String>>,
    /// A file with the PostgreSQL password, so the config need not hold it.
    pub password_file: Option<S<String>>,
    /// This appliance's name on events (default: the machine's host name).
    pub appliance: Option<S<String>>,
    /// How long an install may take before the host is failed.
    pub install_timeout: Option<S<String>>,
    /// The operator token's file (default: `operator.token` in `paths.state`).
    pub operator_token_file: Option<String>,
}

/// Any other YAML file under the profile directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileFile {
    #[serde(default)]
    pub os: BTreeMap<String, S<Os>>,
    pub defaults: Option<S<HostFields>>,
    #[serde(default)]
    pub groups: BTreeMap<String, S<Group>>,
    #[serde(default)]
    pub hosts: BTreeMap<String, S<HostFields>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Os {
    /// Human name shown in tables and logs.
    pub title: Option<String>,
    pub mirror: S<String>,
    /// Path of the install tree under the mirror's base URL.
    pub tree: String,
    /// The tree's architecture (default x86_64).
    pub arch: Option<S<String>>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub shim: Option<String>,
    pub grub: Option<String>,
    #[serde(default)]
    pub repos: Vec<S<Repo>>,
    pub kickstart: S<String>,
    pub ipxe: Option<S<String>>,
    /// The GRUB config template.
    pub grub_cfg: Option<S<String>>,
    pub boot_args: Option<String>,
    /// GPG key file on the installed system, for the `.repo` files the
    /// kickstart writes; absent turns signature checks off.
    pub gpg_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Repo {
    pub name: String,
    pub mirror: Option<S<String>>,
    pub path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Group {
    #[serde(rename = "match", default)]
    pub selector: Selector,
    #[serde(default)]
    pub profile: Option<S<HostFields>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selector {
    #[serde(default)]
    pub mac: Vec<S<String>>,
    #[serde(default)]
    pub hostname: Vec<S<String>>,
    #[serde(default)]
    pub arch: Vec<S<String>>,
}

/// The fields a host, a group's profile and the defaults share. Every field
/// is optional here; the merged result must have the required ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostFields {
    pub hostname: Option<S<String>>,
    pub os: Option<S<String>>,
    #[serde(default)]
    pub groups: Vec<S<String>>,
    pub arch: Option<S<String>>,
    pub boot_loader: Option<S<String>>,
    /// The 802.1Q VLAN the installer moves to once its kernel runs (the
    /// firmware and iPXE stay untagged). A string, so any wrong value is
    /// reported as written.
    pub boot_vlan: Option<S<String>>,
    pub disk: Option<Disk>,
    pub network: Option<Network>,
    pub root_password_hash: Option<S<String>>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    pub timezone: Option<String>,
    pub kickstart: Option<Snippets>,
    pub bmc: Option<Bmc>,
}

/// `bmc:`, merged field by field like the host's other fields, so that a
/// group or `defaults` can give the driver and the credentials and each
/// host its own address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bmc {
    pub driver: Option<S<String>>,
    /// Redfish: `https://host[:port]`; IPMI: `host` or `host:port`.
    pub address: Option<S<String>>,
    /// Redfish: the computer system's path, where the BMC has several.
    pub system: Option<S<String>>,
    pub username: Option<S<String>>,
    /// Relative to the file that names it.
    pub password_file: Option<S<String>>,
    /// Redfish over HTTPS: `verify`, `insecure`, a CA file, or the
    /// certificate's SHA-256 fingerprint.
    pub tls: Option<S<String>>,
    /// IPMI: the RMCP+ cipher suite, for a BMC that does not say which it
    /// takes.
    pub cipher_suite: Option<S<u8>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Disk {
    pub layout: S<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    pub device: Option<String>,
    /// `address/prefix`; absent means DHCP.
    pub address: Option<S<String>>,
    pub gateway: Option<S<String>>,
    #[serde(default)]
    pub dns: Vec<S<String>>,
    /// The installed system's 802.1Q VLAN ID; merged on its own, not with
    /// the fields above (a rack's VLAN, each host's address). A string, so
    /// any wrong value is reported as written.
    pub vlan: Option<S<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Snippets {
    pub pre: Option<String>,
    pub post: Option<String>,
}
