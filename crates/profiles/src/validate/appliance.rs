//! `kickstand.yaml`: addresses, DHCP, the office proxy, mirrors, cache and
//! paths.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Location;

use super::Cx;
use crate::model::*;
use crate::netif::Interfaces;
use crate::parse::{self, NAME_RULE, ServerAddress};
use crate::wire::{self, S};

/// Where the appliance keeps its boot loaders when the config does not say
/// (`image/install-bootloaders.sh` fills it from Debian's `ipxe` package).
pub const DEFAULT_TFTP_ROOT: &str = "/var/lib/kickstand/tftp";
const DEFAULT_HTTP_PORT: u16 = 80;
const DEFAULT_HTTPS_PORT: u16 = 8443;
const DEFAULT_TFTP_PORT: u16 = 69;
const DEFAULT_SYSLOG_PORT: u16 = 514;
const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// The status page's power column: every BMC asked once a minute.
const DEFAULT_POWER_POLL: Duration = Duration::from_secs(60);
const MIN_POWER_POLL: Duration = Duration::from_secs(5);
const DEFAULT_CACHE_BYTES: u64 = 20 << 30;
const DEFAULT_LEASE_SECS: u32 = 3600;
/// What the full-mode lease table accepts (`kickstand_dhcp::full::Pool`).
const MIN_LEASE_SECS: u32 = 60;
const MAX_POOL_ADDRESSES: u64 = 65_536;
const DEFAULT_REVALIDATE: Duration = Duration::from_secs(30);
/// Generous: an installer opens a handful of connections, iPXE one or two,
/// a NAT in front of a few machines some dozens.
const DEFAULT_CONNECTIONS_PER_CLIENT: u64 = 256;
/// More connections than this the daemon cannot hold open anyway (each
/// costs a descriptor and some memory); a larger value is a typo.
const MAX_CONNECTIONS: u64 = 1 << 20;
const DEFAULT_ROGUE_FORGET: Duration = Duration::from_secs(600);

/// The files the appliance config points at, resolved against its
/// directory: [`crate::load`] reads them, validation keeps them.
#[derive(Debug)]
pub(crate) struct Paths {
    /// The config's directory: relative paths are relative to it.
    pub(crate) base: PathBuf,
    pub(crate) templates_dir: PathBuf,
    pub(crate) mirror_ca_file: Option<PathBuf>,
    pub(crate) tftp_root: PathBuf,
    pub(crate) cache_dir: PathBuf,
    pub(crate) state_dir: PathBuf,
    /// The PostgreSQL CA bundle (`state.ca_file`, or the URL's
    /// `sslrootcert`), and the setting that names it.
    pub(crate) state_ca_file: Option<Named>,
    pub(crate) password_file: Option<Named>,
}

/// A file the config names: where it is, and where the config says so.
#[derive(Debug)]
pub(crate) struct Named {
    pub(crate) path: PathBuf,
    pub(crate) key: &'static str,
    pub(crate) at: Location,
}

pub(crate) fn paths(base: &Path, w: &wire::ApplianceFile) -> Paths {
    let rel = |p: &str| base.join(p);
    let named = |key, s: &S<String>| Named {
        path: rel(&s.value),
        key,
        at: s.referenced,
    };
    // Without a URL they are refused as settings, and not read.
    let state_ca_file = match (&w.state.ca_file, &w.state.url) {
        (_, None) => None,
        (Some(f), Some(_)) => Some(named("state.ca_file", f)),
        (None, Some(u)) => u
            .value
            .parse::<Postgres>()
            .ok()
            .and_then(|p| p.ca_file)
            .map(|f| Named {
                path: base.join(f),
                key: "state.url sslrootcert",
                at: u.referenced,
            }),
    };
    Paths {
        state_ca_file,
        password_file: w
            .state
            .password_file
            .as_ref()
            .filter(|_| w.state.url.is_some())
            .map(|f| named("state.password_file", f)),
        base: base.to_path_buf(),
        templates_dir: rel(w.paths.templates.as_deref().unwrap_or("../templates")),
        mirror_ca_file: w.mirror_ca_file.as_deref().map(rel),
        tftp_root: w
            .tftp
            .root
            .as_deref()
            .map_or_else(|| PathBuf::from(DEFAULT_TFTP_ROOT), rel),
        cache_dir: rel(w.cache.dir.as_deref().unwrap_or("/var/cache/kickstand")),
        state_dir: rel(w.paths.state.as_deref().unwrap_or("/var/lib/kickstand")),
    }
}

impl Cx {
    pub(super) fn appliance(
        &mut self,
        file: &Path,
        base: &Path,
        w: &wire::ApplianceFile,
        ca_pem: Option<&[u8]>,
        state_ca_pem: Option<&[u8]>,
        interfaces: Option<&Interfaces>,
    ) -> Option<Appliance> {
        let before = self.diags.len();
        let paths = paths(base, w);

        let address = self.server_address(file, &w.server, interfaces);
        let interface_vlans = self.interface_vlans(file, &w.server);
        let bind = match &w.server.bind {
            // `::` takes IPv4 too (Linux's default IPV6_V6ONLY=0).
            None if address.is_some_and(|a| a.v6().is_some()) => {
                Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
            }
            None => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Some(b) => self
                .check(
                    file,
                    b.referenced,
                    "server.bind",
                    b.value
                        .parse::<IpAddr>()
                        .map_err(|_| format!("`{}` is not an IP address", b.value)),
                )
                .and_then(|bind| {
                    let reach = address.map_or(Ok(()), |a| reaches(bind, a));
                    self.check(file, b.referenced, "server.bind", reach.map(|()| bind))
                }),
        };
        let mode = self
            .word(file, "dhcp.mode", w.dhcp.mode.as_ref())
            .map(|m| m.unwrap_or(DhcpMode::Proxy));
        let unknown = self
            .word(file, "dhcp.unknown", w.dhcp.unknown.as_ref())
            .map(|u| u.unwrap_or(UnknownPolicy::Ignore));
        let uefi_loader = self
            .word(file, "dhcp.uefi_loader", w.dhcp.uefi_loader.as_ref())
            .map(|l| l.unwrap_or(UefiLoader::IpxeEfi));
        let uefi_local_boot = self
            .word(
                file,
                "dhcp.uefi_local_boot",
                w.dhcp.uefi_local_boot.as_ref(),
            )
            .map(|l| l.unwrap_or(UefiLocalBoot::Ipxe));
        let pool = w.dhcp.pool.as_ref().and_then(|p| self.pool(file, base, p));
        let rogue_forget_after = match &w.dhcp.rogue_forget_after {
            None => Some(DEFAULT_ROGUE_FORGET),
            Some(d) => self.check(
                file,
                d.referenced,
                "dhcp.rogue_forget_after",
                parse::duration(&d.value),
            ),
        };
        let answer_router_solicitations = self.answer_router_solicitations(file, w, mode);
        if mode == Some(DhcpMode::Full) && address.is_some_and(|a| a.v4().is_none()) {
            self.err(
                file,
                w.server.address.referenced,
                "dhcp.mode `full` hands out IPv4 addresses: server.address needs an IPv4 address",
            );
        }
        if mode == Some(DhcpMode::Full) && w.dhcp.pool.is_none() {
            let at = w
                .dhcp
                .mode
                .as_ref()
                .map_or(Location::UNKNOWN, |m| m.referenced);
            self.err(
                file,
                at,
                "dhcp.mode `full` needs a dhcp.pool to hand out addresses from",
            );
        }

        let proxy = w.proxy.as_ref().and_then(|p| {
            let parsed = parse::proxy(&p.url.value, p.username.as_deref(), p.password.as_deref());
            self.check(file, p.url.referenced, "proxy.url", parsed)
        });
        let mirrors = self.mirrors(file, &w.mirrors);
        let mirror_ca = match (&paths.mirror_ca_file, ca_pem) {
            (Some(path), Some(pem)) => self
                .check(
                    file,
                    Location::UNKNOWN,
                    &format!("mirror_ca_file {}", path.display()),
                    parse::pem_certificates(pem),
                )
                .map(|certs| CaBundle {
                    path: path.clone(),
                    certs,
                }),
            // Unreadable: already reported by the reader.
            _ => None,
        };

        let max_bytes = match &w.cache.max_size {
            None => Some(DEFAULT_CACHE_BYTES),
            Some(s) => self.check(file, s.referenced, "cache.max_size", parse::size(&s.value)),
        };
        let revalidate_after = match &w.cache.revalidate_after {
            None => Some(DEFAULT_REVALIDATE),
            Some(d) => self.check(
                file,
                d.referenced,
                "cache.revalidate_after",
                parse::duration(&d.value),
            ),
        };

        let mut connections = |key: &str, v: &Option<S<u64>>| -> Option<Option<usize>> {
            match v {
                None => Some(None),
                Some(n) if (1..=MAX_CONNECTIONS).contains(&n.value) => Some(Some(n.value as usize)),
                Some(n) => {
                    self.err(
                        file,
                        n.referenced,
                        format!("{key} {} must be between 1 and {MAX_CONNECTIONS}", n.value),
                    );
                    None
                }
            }
        };
        let max_connections = connections("server.max_connections", &w.server.max_connections);
        let per_client = connections(
            "server.max_connections_per_client",
            &w.server.max_connections_per_client,
        );

        let https_port = self.https_port(file, &w.server);
        let tls = self.tls_files(file, base, &w.server);
        let state = self.state(file, &paths, &w.state, state_ca_pem);
        let segment = self.segment(file, w);
        let power_poll = match &w.power.poll_interval {
            None => Some(Some(DEFAULT_POWER_POLL)),
            Some(p) if p.value == "off" => Some(None),
            Some(p) => self
                .check(
                    file,
                    p.referenced,
                    "power.poll_interval",
                    parse::duration(&p.value).and_then(|d| {
                        if d >= MIN_POWER_POLL {
                            Ok(d)
                        } else {
                            Err(format!("`{}` is under {}s: BMCs are slow, and some fall over when asked often (or say `off`)", p.value, MIN_POWER_POLL.as_secs()))
                        }
                    }),
                )
                .map(Some),
        };

        if self.diags.len() > before {
            return None;
        }
        Some(Appliance {
            server: Server {
                address: address?,
                bind: bind?,
                interfaces: w.server.interfaces.clone(),
                interface_vlans: interface_vlans?,
                http_port: w.server.http_port.unwrap_or(DEFAULT_HTTP_PORT),
                tftp_port: w.server.tftp_port.unwrap_or(DEFAULT_TFTP_PORT),
                syslog_port: w.server.syslog_port.unwrap_or(DEFAULT_SYSLOG_PORT),
                max_connections: max_connections?,
                max_connections_per_client: per_client?
                    .unwrap_or(DEFAULT_CONNECTIONS_PER_CLIENT as usize),
                https_port: https_port?,
                tls: tls?,
                segment: segment?,
            },
            dhcp: Dhcp {
                mode: mode?,
                unknown: unknown?,
                uefi_loader: uefi_loader?,
                uefi_local_boot: uefi_local_boot?,
                pool,
                rogue_forget_after: rogue_forget_after?,
                answer_router_solicitations,
            },
            tftp_root: paths.tftp_root,
            proxy,
            mirrors,
            mirror_ca,
            cache: Cache {
                dir: paths.cache_dir,
                max_bytes: max_bytes?,
                revalidate_after: revalidate_after?,
            },
            templates_dir: paths.templates_dir,
            state_dir: paths.state_dir,
            state: state?,
            power_poll: power_poll?,
        })
    }

    /// `server.address`: as written, or for `auto` the address of the
    /// interface it names, from `interfaces` (`None`: they could not be
    /// read, which is reported already).
    fn server_address(
        &mut self,
        file: &Path,
        server: &wire::Server,
        interfaces: Option<&Interfaces>,
    ) -> Option<Addresses> {
        let at = server.address.referenced;
        let said = self.check(
            file,
            at,
            "server.address",
            parse::server_address(&server.address.value.0),
        )?;
        let v4 = match said.v4 {
            None => None,
            Some(ServerAddress::Fixed(address)) => Some(address),
            Some(ServerAddress::Auto) => {
                let resolved = interfaces?.resolve(&server.interfaces);
                Some(self.check(file, at, "server.address", resolved)?)
            }
        };
        Addresses::new(v4, said.v6)
    }

    /// `dhcp.answer_router_solicitations`: only where ProxyDHCP answers,
    /// `server.segment`: a name, and what an election needs — the shared
    /// database it runs in, the interface the active appliance holds the
    /// segment's address on, and that address written out (`auto` is the
    /// machine's own address, which cannot move to another appliance).
    fn segment(&mut self, file: &Path, w: &wire::ApplianceFile) -> Option<Option<String>> {
        let Some(name) = &w.server.segment else {
            return Some(None);
        };
        let before = self.diags.len();
        let at = name.referenced;
        let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.value.is_empty() || name.value.len() > 63 || !name.value.chars().all(fine) {
            self.err(
                file,
                at,
                format!(
                    "server.segment `{}` must be 1 to 63 letters, digits, `-`, `_` or `.`",
                    name.value
                ),
            );
        }
        if w.state.url.is_none() {
            self.err(file, at, "server.segment: the appliances of a segment elect the active one through the PostgreSQL they share: set state.url");
        }
        if w.server.interfaces.is_empty() {
            self.err(file, at, "server.segment: name the rack's interface in server.interfaces: the active appliance holds server.address on the first one");
        }
        if w.dhcp.mode.as_ref().is_some_and(|m| m.value == "full") {
            self.err(file, at, "server.segment: dhcp.mode `full` keeps its leases in a file of this appliance, which a standby taking over would not know (it would lease an address twice): use `proxy` beside the office's DHCP server");
        }
        if w.server.address.value.0.iter().any(|a| a == "auto") {
            self.err(file, w.server.address.referenced, "server.address: with server.segment it is the segment's own address, which moves to whichever appliance is active: write it out (not `auto`, which is this machine's own address)");
        }
        (self.diags.len() == before).then(|| Some(name.value.clone()))
    }

    /// `server.interface_vlans`: VLAN IDs, of interfaces ProxyDHCP listens
    /// on (elsewhere an installer's exchange would go unseen).
    fn interface_vlans(
        &mut self,
        file: &Path,
        server: &wire::Server,
    ) -> Option<BTreeMap<String, VlanId>> {
        let before = self.diags.len();
        let mut vlans = BTreeMap::new();
        for (name, id) in &server.interface_vlans {
            let key = format!("server.interface_vlans.{name}");
            if !server.interfaces.contains(name) {
                self.err(file, id.referenced, format!("{key}: `{name}` is not in server.interfaces: ProxyDHCP listens only on those, so the installers' DHCP on it would go unseen"));
            }
            if let Some(id) = self.check(file, id.referenced, &key, id.value.parse::<VlanId>()) {
                vlans.insert(name.clone(), id);
            }
        }
        (self.diags.len() == before).then_some(vlans)
    }

    /// and only on named interfaces, so no advertisement ever goes out on
    /// the office side of a dual-homed appliance.
    fn answer_router_solicitations(
        &mut self,
        file: &Path,
        w: &wire::ApplianceFile,
        mode: Option<DhcpMode>,
    ) -> bool {
        let Some(on) = w.dhcp.answer_router_solicitations.as_ref() else {
            return false;
        };
        if !on.value {
            return false;
        }
        if w.server.interfaces.is_empty() {
            self.err(
                file,
                on.referenced,
                "dhcp.answer_router_solicitations needs server.interfaces: name the rack's interface, so no router advertisement goes out on the office side",
            );
        }
        if mode == Some(DhcpMode::Off) {
            self.err(
                file,
                on.referenced,
                "dhcp.answer_router_solicitations needs dhcp.mode proxy or full: only a machine ProxyDHCP answered is sent one",
            );
        }
        true
    }

    /// `server.https_port`: another port than HTTP's (0 binds any free one).
    fn https_port(&mut self, file: &Path, w: &wire::Server) -> Option<u16> {
        let Some(port) = &w.https_port else {
            return Some(DEFAULT_HTTPS_PORT);
        };
        let http = w.http_port.unwrap_or(DEFAULT_HTTP_PORT);
        if port.value != 0 && port.value == http {
            self.err(
                file,
                port.referenced,
                format!(
                    "server.https_port {} is server.http_port too: HTTPS needs a port of its own",
                    port.value
                ),
            );
            return None;
        }
        Some(port.value)
    }

    /// `server.tls_cert` and `server.tls_key`: both or neither.
    fn tls_files(
        &mut self,
        file: &Path,
        base: &Path,
        w: &wire::Server,
    ) -> Option<Option<TlsFiles>> {
        match (&w.tls_cert, &w.tls_key) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => Some(Some(TlsFiles {
                cert: base.join(&cert.value),
                key: base.join(&key.value),
            })),
            (Some(given), None) | (None, Some(given)) => {
                let (set, missing) = if w.tls_cert.is_some() {
                    ("server.tls_cert", "server.tls_key")
                } else {
                    ("server.tls_key", "server.tls_cert")
                };
                self.err(
                    file,
                    given.referenced,
                    format!("{set} needs {missing} too: a certificate and its private key"),
                );
                None
            }
        }
    }

    fn state(
        &mut self,
        file: &Path,
        paths: &Paths,
        w: &wire::State,
        ca_pem: Option<&[u8]>,
    ) -> Option<State> {
        let before = self.diags.len();
        let postgres = w.url.as_ref().and_then(|u| {
            let parsed = u.value.parse::<Postgres>().and_then(|p| {
                if p.get("host").is_some() || p.get("hostaddr").is_some() {
                    Ok(p)
                } else {
                    Err(
                        "must name a host: postgresql://host/db (or ?host=/run/postgresql), or host=… key=value pairs"
                            .to_owned(),
                    )
                }
            });
            self.check(file, u.referenced, "state.url", parsed)
        });
        if w.url.is_none() {
            for (key, f) in [("ca_file", &w.ca_file), ("password_file", &w.password_file)] {
                if let Some(f) = f {
                    self.err(
                        file,
                        f.referenced,
                        format!("state.{key} is for PostgreSQL: it needs a state.url (SQLite uses no password or CA)"),
                    );
                }
            }
        }
        if let (Some(f), Some(p)) = (&w.ca_file, &postgres)
            && p.ca_file.is_some()
        {
            self.err(
                file,
                f.referenced,
                "state.ca_file and the URL's sslrootcert both name the CA: keep one",
            );
        }
        if let (Some(ca), Some(pem)) = (&paths.state_ca_file, ca_pem) {
            self.check(
                file,
                ca.at,
                &format!("{} {}", ca.key, ca.path.display()),
                parse::pem_certificates(pem),
            );
        }
        let postgres = postgres.map(|mut p| {
            p.ca_file = paths.state_ca_file.as_ref().map(|ca| ca.path.clone());
            p.password_file = paths.password_file.as_ref().map(|f| f.path.clone());
            p
        });
        let appliance = w.appliance.as_ref().map(|a| {
            if !parse::is_name(&a.value) {
                self.err(
                    file,
                    a.referenced,
                    format!("state.appliance `{}` {NAME_RULE}", a.value),
                );
            }
            a.value.clone()
        });
        let install_timeout = match &w.install_timeout {
            None => Some(DEFAULT_INSTALL_TIMEOUT),
            Some(t) => self.check(
                file,
                t.referenced,
                "state.install_timeout",
                parse::duration(&t.value),
            ),
        };
        if self.diags.len() > before {
            return None;
        }
        Some(State {
            postgres,
            appliance,
            install_timeout: install_timeout?,
            operator_token_file: w.operator_token_file.as_deref().map_or_else(
                || paths.state_dir.join("operator.token"),
                |f| paths.base.join(f),
            ),
        })
    }

    /// An optional config word; `Some(None)` when absent, `None` when wrong.
    fn word<T: std::str::FromStr<Err = parse::NotOneOf>>(
        &mut self,
        file: &Path,
        key: &str,
        value: Option<&S<String>>,
    ) -> Option<Option<T>> {
        match value {
            None => Some(None),
            Some(v) => self
                .check(file, v.referenced, key, v.value.parse::<T>())
                .map(Some),
        }
    }

    fn mirrors(
        &mut self,
        file: &Path,
        raw: &BTreeMap<String, S<Vec<S<String>>>>,
    ) -> BTreeMap<String, Vec<MirrorUrl>> {
        let mut mirrors = BTreeMap::new();
        for (name, urls) in raw {
            if !parse::is_name(name) {
                self.err(
                    file,
                    urls.referenced,
                    format!("mirror name `{name}` {NAME_RULE}"),
                );
            }
            if urls.value.is_empty() {
                self.err(
                    file,
                    urls.referenced,
                    format!("mirror `{name}` has no base URLs"),
                );
            }
            let bases: Vec<MirrorUrl> = urls
                .value
                .iter()
                .filter_map(|url| {
                    self.check(
                        file,
                        url.referenced,
                        &format!("mirror `{name}`:"),
                        parse::mirror_url(&url.value).and_then(|m| same_name_on_parent(name, m)),
                    )
                })
                .collect();
            mirrors.insert(name.clone(), bases);
        }
        mirrors
    }

    fn pool(&mut self, file: &Path, base: &Path, p: &S<wire::Pool>) -> Option<Pool> {
        let w = &p.value;
        let addr = |s: &S<String>, what: &str, cx: &mut Cx| {
            cx.check(
                file,
                s.referenced,
                &format!("dhcp.pool.{what}"),
                parse::ipv4(&s.value),
            )
        };
        let start = addr(&w.start, "start", self);
        let end = addr(&w.end, "end", self);
        let router = w.router.as_ref().map(|r| addr(r, "router", self));
        let dns: Vec<_> = w.dns.iter().map(|d| addr(d, "dns", self)).collect();
        let prefix_len = w.prefix_len.value;
        if !(8..=30).contains(&prefix_len) {
            self.err(
                file,
                w.prefix_len.referenced,
                format!("dhcp.pool.prefix_len {prefix_len} must be between 8 and 30"),
            );
            return None;
        }
        let (start, end) = (start?, end?);
        let netmask = netmask(prefix_len);
        let network = |a: Ipv4Addr| u32::from(a) & u32::from(netmask);
        if u32::from(start) > u32::from(end) || network(start) != network(end) {
            self.err(
                file,
                p.referenced,
                format!(
                    "dhcp.pool {start}..{end} must be ascending and inside one /{prefix_len} network"
                ),
            );
            return None;
        }
        // The lease server's own limits, checked here so `check` reports
        // them with the file and line.
        let size = u64::from(u32::from(end) - u32::from(start)) + 1;
        if size > MAX_POOL_ADDRESSES {
            self.err(
                file,
                p.referenced,
                format!(
                    "dhcp.pool {start}..{end} holds {size} addresses; at most {MAX_POOL_ADDRESSES}"
                ),
            );
            return None;
        }
        let lease_secs = w.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
        if lease_secs < MIN_LEASE_SECS {
            self.err(
                file,
                p.referenced,
                format!("dhcp.pool.lease_secs {lease_secs} must be at least {MIN_LEASE_SECS}"),
            );
            return None;
        }
        Some(Pool {
            start,
            end,
            prefix_len,
            netmask,
            router: match router {
                // A router that does not parse is already reported.
                Some(None) => return None,
                Some(Some(r)) => Some(r),
                None => None,
            },
            dns: dns.into_iter().collect::<Option<Vec<_>>>()?,
            lease_secs,
            leases_file: base.join(
                w.leases_file
                    .as_deref()
                    .unwrap_or("../var/state/leases.json"),
            ),
        })
    }
}

/// Whether listening on `bind` reaches every address machines are told:
/// an IPv4 bind never hears IPv6 clients, and an IPv6 one other than `::`
/// never hears IPv4 ones.
fn reaches(bind: IpAddr, told: Addresses) -> Result<(), String> {
    let dual_stack = bind == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    match (bind, told.v4(), told.v6()) {
        (IpAddr::V4(_), _, Some(v6)) => Err(format!(
            "`{bind}` listens on IPv4 only, but IPv6 machines are told {v6}: bind `::`"
        )),
        (IpAddr::V6(_), Some(v4), _) if !dual_stack => Err(format!(
            "`{bind}` listens on IPv6 only, but IPv4 machines are told {v4}: bind `::`"
        )),
        _ => Ok(()),
    }
}

/// A parent appliance serves this mirror under the same name: OS
/// definitions, kickstart URLs and `cache warm` targets then mean the same
/// thing on every appliance of a chain, and one file of them can be copied
/// from the site cache to a rack unchanged.
fn same_name_on_parent(name: &str, url: MirrorUrl) -> Result<MirrorUrl, String> {
    let route = format!("/repo/{name}/");
    if url.kind == MirrorKind::Appliance && url.path != route {
        let theirs = url.path.trim_start_matches("/repo/").trim_end_matches('/');
        return Err(format!(
            "the parent appliance's mirror `{theirs}` is not `{name}`: a parent serves a mirror under the same name (write kickstand://{}:{}/{name})",
            url.host, url.port
        ));
    }
    Ok(url)
}
