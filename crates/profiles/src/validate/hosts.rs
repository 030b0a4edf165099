//! Host profiles: defaults, groups and hosts merged (defaults → groups →
//! host), each host checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use super::{Cx, place};
use crate::Mac;
use crate::model::*;
use crate::parse::{self, BmcTlsSetting};
use crate::wire::{self, S};

/// The profile documents merged into one set, each entry remembering the
/// file it came from.
#[derive(Default)]
pub(super) struct Merged<'a> {
    pub(super) oses: BTreeMap<String, (&'a Path, &'a S<wire::Os>)>,
    defaults: Option<(&'a Path, &'a S<wire::HostFields>)>,
    groups: BTreeMap<String, (&'a Path, &'a S<wire::Group>)>,
    hosts: BTreeMap<Mac, (&'a Path, &'a S<wire::HostFields>)>,
}

impl Cx {
    pub(super) fn merge<'a>(&mut self, docs: &'a [(PathBuf, wire::ProfileFile)]) -> Merged<'a> {
        let mut m = Merged::default();
        for (path, doc) in docs {
            let path = path.as_path();
            for (name, os) in &doc.os {
                if let Some((other, prev)) = m.oses.get(name) {
                    let msg = format!(
                        "OS `{name}` is already defined at {}",
                        place(other, prev.referenced)
                    );
                    self.err(path, os.referenced, msg);
                } else {
                    m.oses.insert(name.clone(), (path, os));
                }
            }
            if let Some(d) = &doc.defaults {
                if let Some((other, prev)) = m.defaults {
                    let msg = format!(
                        "`defaults` are already given at {}",
                        place(other, prev.referenced)
                    );
                    self.err(path, d.referenced, msg);
                } else {
                    m.defaults = Some((path, d));
                }
            }
            for (name, g) in &doc.groups {
                if let Some((other, prev)) = m.groups.get(name) {
                    let msg = format!(
                        "group `{name}` is already defined at {}",
                        place(other, prev.referenced)
                    );
                    self.err(path, g.referenced, msg);
                } else {
                    m.groups.insert(name.clone(), (path, g));
                }
            }
            for (key, h) in &doc.hosts {
                let mac = match key.parse::<Mac>() {
                    Ok(mac) => mac,
                    Err(e) => {
                        self.err(path, h.referenced, format!("host key: {e}"));
                        continue;
                    }
                };
                if let Some((other, prev)) = m.hosts.get(&mac) {
                    let msg = format!(
                        "MAC {mac} appears twice: already a host at {}",
                        place(other, prev.referenced)
                    );
                    self.err(path, h.referenced, msg);
                } else {
                    m.hosts.insert(mac, (path, h));
                }
            }
        }
        m
    }

    pub(super) fn hosts(
        &mut self,
        set: &Merged<'_>,
        oses: &BTreeMap<String, Os>,
    ) -> BTreeMap<Mac, Host> {
        // Selectors are compiled once; a bad pattern is reported once.
        let mut selectors = BTreeMap::new();
        for (name, (file, g)) in &set.groups {
            let sel = &g.value.selector;
            let globs = |pats: &[S<String>], cx: &mut Cx| -> Vec<glob::Pattern> {
                pats.iter()
                    .filter_map(
                        |p| match glob::Pattern::new(&p.value.to_ascii_lowercase()) {
                            Ok(g) => Some(g),
                            Err(e) => {
                                cx.err(
                                    file,
                                    p.referenced,
                                    format!("group `{name}`: bad pattern `{}`: {e}", p.value),
                                );
                                None
                            }
                        },
                    )
                    .collect()
            };
            let mac = globs(&sel.mac, self);
            let hostname = globs(&sel.hostname, self);
            let arch: Vec<Arch> = sel.arch.iter().filter_map(|a| self.arch(file, a)).collect();
            let empty = sel.mac.is_empty() && sel.hostname.is_empty() && sel.arch.is_empty();
            selectors.insert(name.as_str(), (mac, hostname, arch, empty));
        }

        let mut out = BTreeMap::new();
        let mut hostnames: BTreeMap<String, (Mac, &Path, Location)> = BTreeMap::new();
        for (mac, (file, h)) in &set.hosts {
            let own = &h.value;
            let arch = own
                .arch
                .as_ref()
                .and_then(|a| self.arch(file, a))
                .unwrap_or(Arch::X86_64);
            let hostname_for_match = own.hostname.as_ref().map(|n| n.value.to_ascii_lowercase());

            let mut member: BTreeSet<&str> = BTreeSet::new();
            for g in &own.groups {
                match set.groups.get_key_value(&g.value) {
                    Some((name, _)) => {
                        member.insert(name.as_str());
                    }
                    None => self.err(
                        file,
                        g.referenced,
                        format!("host {mac}: group `{}` is not defined", g.value),
                    ),
                }
            }
            for (name, (mac_pats, host_pats, arches, empty)) in &selectors {
                let mac_s = mac.to_string();
                let hit = !empty
                    && (mac_pats.is_empty() || mac_pats.iter().any(|p| p.matches(&mac_s)))
                    && (host_pats.is_empty()
                        || hostname_for_match
                            .as_deref()
                            .is_some_and(|n| host_pats.iter().any(|p| p.matches(n))))
                    && (arches.is_empty() || arches.contains(&arch));
                if hit {
                    member.insert(name);
                }
            }

            let mut layers: Vec<Layer<'_>> = Vec::new();
            if let Some((f, d)) = set.defaults {
                layers.push(Layer {
                    origin: Origin::Defaults,
                    file: f,
                    at: d.referenced,
                    fields: &d.value,
                });
            }
            for name in &member {
                let (f, g) = set.groups[*name];
                if let Some(p) = &g.value.profile {
                    layers.push(Layer {
                        origin: Origin::Group(name),
                        file: f,
                        at: p.referenced,
                        fields: &p.value,
                    });
                }
            }
            layers.push(Layer {
                origin: Origin::Host,
                file,
                at: h.referenced,
                fields: own,
            });

            if let Some(host) = self.resolve(
                *mac,
                arch,
                member.iter().map(|s| s.to_string()).collect(),
                &layers,
                oses,
            ) {
                if let Some((other_mac, other_file, other_at)) = hostnames.get(&host.hostname) {
                    let msg = format!(
                        "hostname `{}` of {mac} is already used by {other_mac} at {}",
                        host.hostname,
                        place(other_file, *other_at)
                    );
                    self.err(file, h.referenced, msg);
                } else {
                    hostnames.insert(host.hostname.clone(), (*mac, file, h.referenced));
                }
                out.insert(*mac, host);
            }
        }
        out
    }

    fn arch(&mut self, file: &Path, a: &S<String>) -> Option<Arch> {
        self.check(file, a.referenced, "arch", a.value.parse::<Arch>())
    }

    /// Merges the layers of one host: defaults, then its groups, then the
    /// host itself. A host overrides anything; two groups that disagree on a
    /// value are an error, because no order between them would be obvious
    /// to the operator reading the files.
    fn resolve(
        &mut self,
        mac: Mac,
        arch: Arch,
        groups: Vec<String>,
        layers: &[Layer<'_>],
        oses: &BTreeMap<String, Os>,
    ) -> Option<Host> {
        let before = self.diags.len();
        let host_layer = layers.last()?;

        let hostname = self.scalar(mac, layers, "hostname", |f| {
            f.hostname.as_ref().map(|s| (s.value.clone(), s.referenced))
        });
        let os = self.scalar(mac, layers, "os", |f| {
            f.os.as_ref().map(|s| (s.value.clone(), s.referenced))
        });
        let hash = self.scalar(mac, layers, "root_password_hash", |f| {
            f.root_password_hash
                .as_ref()
                .map(|s| (s.value.clone(), s.referenced))
        });
        let boot_loader = self.scalar(mac, layers, "boot_loader", |f| {
            f.boot_loader
                .as_ref()
                .map(|s| (s.value.clone(), s.referenced))
        });
        let boot_vlan = self.scalar(mac, layers, "boot_vlan", |f| {
            f.boot_vlan
                .as_ref()
                .map(|s| (s.value.clone(), s.referenced))
        });
        let timezone = self.scalar(mac, layers, "timezone", |f| {
            f.timezone.clone().map(|t| (t, Location::UNKNOWN))
        });
        let disk = self.scalar(mac, layers, "disk", |f| {
            f.disk.as_ref().map(|d| {
                (
                    (d.layout.value.clone(), d.device.clone()),
                    d.layout.referenced,
                )
            })
        });
        // A `network:` that only names the VLAN leaves the rest to the
        // other layers: the VLAN is merged on its own, below.
        let network = self.scalar(mac, layers, "network", |f| {
            f.network.as_ref().filter(|n| !only_vlan(n)).map(|n| {
                let key = (
                    n.device.clone(),
                    n.address.as_ref().map(|a| a.value.clone()),
                    n.gateway.as_ref().map(|g| g.value.clone()),
                    n.dns.iter().map(|d| d.value.clone()).collect::<Vec<_>>(),
                );
                (
                    key,
                    n.address
                        .as_ref()
                        .map_or(Location::UNKNOWN, |a| a.referenced),
                )
            })
        });
        let vlan = self.scalar(mac, layers, "network.vlan", |f| {
            let vlan = f.network.as_ref()?.vlan.as_ref()?;
            Some((vlan.value.clone(), vlan.referenced))
        });

        let Some((hostname, hostname_at, hostname_file)) = hostname else {
            self.err(
                host_layer.file,
                host_layer.at,
                format!("host {mac} has no hostname (set it on the host)"),
            );
            return None;
        };
        if !parse::valid_hostname(&hostname) {
            self.err(hostname_file, hostname_at, format!("host {mac}: `{hostname}` is not a valid hostname (letters, digits and `-` in dot-separated labels)"));
        }
        let os = match os {
            None => {
                self.err(
                    host_layer.file,
                    host_layer.at,
                    format!("host {mac} has no os (set it on the host, a group or defaults)"),
                );
                None
            }
            Some((name, at, file)) if !oses.contains_key(&name) => {
                let known: Vec<&str> = oses.keys().map(String::as_str).collect();
                self.err(
                    file,
                    at,
                    format!(
                        "host {mac}: OS `{name}` is not defined (known: {})",
                        known.join(", ")
                    ),
                );
                None
            }
            Some((name, at, file)) => {
                let os_arch = oses[&name].arch;
                if os_arch != arch {
                    self.err(file, at, format!("host {mac} is {} but OS `{name}` is for {}: give the host an OS for its architecture (or set `arch:` on the host)", arch.as_str(), os_arch.as_str()));
                }
                Some(name)
            }
        };
        let boot_loader = match boot_loader {
            None => Some(BootLoader::Auto),
            Some((value, at, file)) => self.check(
                file,
                at,
                &format!("host {mac}: boot_loader"),
                value.parse::<BootLoader>(),
            ),
        };
        let vlan = self.vlan(mac, "network.vlan", vlan);
        let boot_vlan = self.vlan(mac, "boot_vlan", boot_vlan);
        if let Some((h, at, file)) = &hash
            && !parse::looks_like_crypt(h)
        {
            self.err(file, *at, format!("host {mac}: root_password_hash must be a crypt(3) hash like `$6$…` (use `openssl passwd -6`), never a clear-text password"));
        }
        let disk = match disk {
            None => Some(Disk {
                layout: DiskLayout::Lvm,
                device: None,
            }),
            Some(((layout, device), at, file)) => {
                let layout = self.check(
                    file,
                    at,
                    &format!("host {mac}: disk layout"),
                    layout.parse::<DiskLayout>(),
                );
                if device.as_deref().is_some_and(|d| !parse::is_name(d)) {
                    self.err(file, at, format!("host {mac}: disk device `{}` must be a bare device name like sda or nvme0n1", device.as_deref().unwrap_or_default()));
                }
                layout.map(|layout| Disk { layout, device })
            }
        };
        let bmc = self.bmc(mac, layers);
        let network = match network {
            None => Some(Network {
                device: "link".into(),
                static_ip: None,
                vlan: None,
            }),
            Some(((device, address, gateway, dns), at, file)) => {
                self.network(mac, file, at, device, address, gateway, dns)
            }
        };

        let mut ssh_keys = Vec::new();
        let mut packages = Vec::new();
        let mut snippets = Snippets::default();
        for l in layers {
            extend_unique(&mut ssh_keys, &l.fields.ssh_keys);
            extend_unique(&mut packages, &l.fields.packages);
            if let Some(s) = &l.fields.kickstart {
                snippets.pre.extend(s.pre.clone());
                snippets.post.extend(s.post.clone());
            }
        }
        for p in &packages {
            if p.is_empty() || p.contains(char::is_whitespace) {
                self.err(
                    host_layer.file,
                    host_layer.at,
                    format!("host {mac}: package `{p}` must be one name without spaces"),
                );
            }
        }

        if self.diags.len() > before {
            return None;
        }
        Some(Host {
            mac,
            hostname,
            os: os?,
            arch,
            boot_loader: boot_loader?,
            boot_vlan: boot_vlan?,
            groups,
            disk: disk?,
            network: Network {
                vlan: vlan?,
                ..network?
            },
            root_password_hash: hash.map(|(h, ..)| h),
            ssh_keys,
            packages,
            timezone: timezone.map_or_else(|| "UTC".to_owned(), |(t, ..)| t),
            snippets,
            bmc: bmc?,
        })
    }

    /// A merged VLAN field (`field` names it); `Some(None)` when no layer
    /// gives it, `None` when it is wrong (reported).
    fn vlan(
        &mut self,
        mac: Mac,
        field: &str,
        merged: Option<(String, Location, &Path)>,
    ) -> Option<Option<VlanId>> {
        let Some((value, at, file)) = merged else {
            return Some(None);
        };
        self.check(
            file,
            at,
            &format!("host {mac}: {field}"),
            value.parse::<VlanId>(),
        )
        .map(Some)
    }

    /// `bmc:`, field by field across the layers; `Some(None)` for a host
    /// without one, `None` when it is wrong (reported).
    fn bmc(&mut self, mac: Mac, layers: &[Layer<'_>]) -> Option<Option<Bmc>> {
        let field = |cx: &mut Cx, name: &str, get: fn(&wire::Bmc) -> Option<&S<String>>| {
            cx.scalar(mac, layers, &format!("bmc.{name}"), |f| {
                f.bmc
                    .as_ref()
                    .and_then(get)
                    .map(|s| (s.value.clone(), s.referenced))
            })
        };
        let driver = field(self, "driver", |b| b.driver.as_ref());
        let address = field(self, "address", |b| b.address.as_ref());
        let system = field(self, "system", |b| b.system.as_ref());
        let username = field(self, "username", |b| b.username.as_ref());
        let password_file = field(self, "password_file", |b| b.password_file.as_ref());
        let tls = field(self, "tls", |b| b.tls.as_ref());
        let cipher_suite = self.scalar(mac, layers, "bmc.cipher_suite", |f| {
            let suite = f.bmc.as_ref()?.cipher_suite.as_ref()?;
            Some((suite.value, suite.referenced))
        });
        let given = [&driver, &address, &system, &username, &password_file, &tls];
        let first = given
            .into_iter()
            .flatten()
            .map(|(_, at, file)| (*at, *file));
        let Some((at, file)) = first
            .chain(cipher_suite.iter().map(|(_, at, file)| (*at, *file)))
            .next()
        else {
            return Some(None);
        };
        let before = self.diags.len();
        let mut missing = Vec::new();
        for (name, value) in [
            ("driver", &driver),
            ("address", &address),
            ("username", &username),
            ("password_file", &password_file),
        ] {
            if value.is_none() {
                missing.push(name);
            }
        }
        if !missing.is_empty() {
            let msg = format!(
                "host {mac}: bmc needs {} (on the host, a group or defaults)",
                missing.join(", ")
            );
            self.err(file, at, msg);
            return None;
        }
        let (driver, driver_at, driver_file) = driver?;
        let (address, address_at, address_file) = address?;
        let (username, ..) = username?;
        // Relative to the file that names it, as every path is.
        let (password, _, password_in) = password_file?;
        let password_file = password_in
            .parent()
            .unwrap_or(Path::new("."))
            .join(password);
        let not_for_ipmi = |cx: &mut Cx, name: &str, value: &Option<(String, Location, &Path)>| {
            if let Some((_, at, file)) = value {
                cx.err(
                    file,
                    *at,
                    format!("host {mac}: bmc.{name} is for Redfish, not IPMI"),
                );
            }
        };
        let driver = match driver.as_str() {
            "redfish" => {
                let base = self.check(
                    address_file,
                    address_at,
                    &format!("host {mac}: bmc.address"),
                    parse::redfish_base(&address),
                );
                let system = system.and_then(|(s, at, file)| {
                    if s.starts_with("/redfish/v1/Systems/") && !s.contains(['?', '#']) {
                        Some(s)
                    } else {
                        self.err(file, at, format!("host {mac}: bmc.system `{s}` must be a path like /redfish/v1/Systems/1"));
                        None
                    }
                });
                if let (Some(base), Some((_, at, file))) = (&base, &tls)
                    && base.starts_with("http://")
                {
                    self.err(
                        file,
                        *at,
                        format!(
                            "host {mac}: bmc.tls is for an https:// address; {base} is plain HTTP"
                        ),
                    );
                }
                if let Some((_, at, file)) = &cipher_suite {
                    self.err(
                        file,
                        *at,
                        format!("host {mac}: bmc.cipher_suite is for IPMI, not Redfish"),
                    );
                }
                let tls = match tls {
                    None => BmcTls::Verify,
                    Some((word, _, file)) => match parse::bmc_tls(&word) {
                        BmcTlsSetting::Verify => BmcTls::Verify,
                        BmcTlsSetting::Insecure => BmcTls::Insecure,
                        BmcTlsSetting::Fingerprint(fp) => BmcTls::Fingerprint(fp),
                        BmcTlsSetting::CaFile(ca) => {
                            BmcTls::CaFile(file.parent().unwrap_or(Path::new(".")).join(ca))
                        }
                    },
                };
                base.map(|base| BmcDriver::Redfish { base, system, tls })
            }
            "ipmi" => {
                not_for_ipmi(self, "system", &system);
                not_for_ipmi(self, "tls", &tls);
                let cipher_suite = match cipher_suite {
                    Some((0, at, file)) => {
                        self.err(file, at, format!("host {mac}: bmc.cipher_suite 0 sends commands without authentication; use 3 or 17 (or leave it out)"));
                        None
                    }
                    Some((suite, at, file)) if suite > 17 => {
                        self.err(file, at, format!("host {mac}: bmc.cipher_suite {suite} is not an IPMI 2.0 cipher suite (1 to 17)"));
                        None
                    }
                    other => other.map(|(suite, ..)| suite),
                };
                self.check(
                    address_file,
                    address_at,
                    &format!("host {mac}: bmc.address"),
                    parse::ipmi_address(&address),
                )
                .map(|(host, port)| BmcDriver::Ipmi {
                    host,
                    port,
                    cipher_suite,
                })
            }
            other => {
                self.err(
                    driver_file,
                    driver_at,
                    format!("host {mac}: bmc.driver `{other}` is not one of redfish, ipmi"),
                );
                None
            }
        };
        if self.diags.len() > before {
            return None;
        }
        Some(Some(Bmc {
            driver: driver?,
            username,
            password_file,
        }))
    }

    /// Picks one field from the layers (see [`Cx::resolve`]) and returns the
    /// value with where it was written.
    fn scalar<'a, T: PartialEq>(
        &mut self,
        mac: Mac,
        layers: &[Layer<'a>],
        field: &str,
        get: impl Fn(&'a wire::HostFields) -> Option<(T, Location)>,
    ) -> Option<(T, Location, &'a Path)> {
        let mut chosen: Option<(T, Location, &'a Path, Origin<'a>)> = None;
        if let Some(host) = layers.last().filter(|l| matches!(l.origin, Origin::Host))
            && let Some((value, at)) = get(host.fields)
        {
            let at = if at == Location::UNKNOWN { host.at } else { at };
            return Some((value, at, host.file));
        }
        for l in layers {
            let Some((value, at)) = get(l.fields) else {
                continue;
            };
            let at = if at == Location::UNKNOWN { l.at } else { at };
            if let (Some((prev, _, prev_file, Origin::Group(prev_group))), Origin::Group(group)) =
                (&chosen, l.origin)
                && *prev != value
            {
                let msg = format!(
                    "host {mac}: groups `{prev_group}` ({}) and `{group}` set different `{field}`; set it on the host or in one group",
                    prev_file.display()
                );
                self.err(l.file, at, msg);
            }
            chosen = Some((value, at, l.file, l.origin));
        }
        chosen.map(|(v, at, f, _)| (v, at, f))
    }

    #[allow(clippy::too_many_arguments)]
    fn network(
        &mut self,
        mac: Mac,
        file: &Path,
        at: Location,
        device: Option<String>,
        address: Option<String>,
        gateway: Option<String>,
        dns: Vec<String>,
    ) -> Option<Network> {
        let device = device.unwrap_or_else(|| "link".into());
        let Some(address) = address else {
            if gateway.is_some() || !dns.is_empty() {
                self.err(file, at, format!("host {mac}: network gateway/dns need a static `address` (without one the host uses DHCP)"));
                return None;
            }
            return Some(Network {
                device,
                static_ip: None,
                vlan: None,
            });
        };
        let Some((addr, prefix_len)) = static_address(&address) else {
            self.err(file, at, format!("host {mac}: network address `{address}` is not an address with prefix like 10.0.0.11/24 or fd00:10::11/64 (global or unique-local, not link-local or multicast)"));
            return None;
        };
        let gateway = match gateway {
            None => None,
            Some(g) => match g.parse::<IpAddr>() {
                Ok(g)
                    if g.is_ipv4() == addr.is_ipv4()
                        && !g.is_unspecified()
                        && !g.is_multicast() =>
                {
                    Some(g)
                }
                _ => {
                    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                    self.err(
                        file,
                        at,
                        format!("host {mac}: network gateway `{g}` is not an {family} address (the family of `{address}`)"),
                    );
                    return None;
                }
            },
        };
        let mut servers = Vec::new();
        for d in dns {
            match d.parse::<IpAddr>() {
                Ok(d) => servers.push(d),
                Err(_) => {
                    self.err(
                        file,
                        at,
                        format!("host {mac}: dns server `{d}` is not an IP address"),
                    );
                    return None;
                }
            }
        }
        Some(Network {
            device,
            static_ip: Some(StaticIp {
                address: addr,
                prefix_len,
                family: if addr.is_ipv4() { "ipv4" } else { "ipv6" },
                netmask: match addr {
                    IpAddr::V4(_) => Some(netmask(prefix_len)),
                    IpAddr::V6(_) => None,
                },
                gateway,
                dns: servers,
            }),
            vlan: None,
        })
    }
}

/// `10.0.0.11/24` or `fd00:10::11/64`: an address a host can be given,
/// with its prefix length.
fn static_address(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let most = if address.is_ipv4() { 32 } else { 128 };
    let prefix = Some(prefix)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| (1..=most).contains(p))?;
    let usable = match address {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => {
            !a.is_unspecified()
                && !a.is_multicast()
                && !a.is_loopback()
                && !a.is_unicast_link_local()
        }
    };
    usable.then_some((address, prefix))
}

#[derive(Clone, Copy)]
enum Origin<'a> {
    Defaults,
    Group(&'a str),
    Host,
}

struct Layer<'a> {
    origin: Origin<'a>,
    file: &'a Path,
    at: Location,
    fields: &'a wire::HostFields,
}

/// Whether a `network:` gives nothing but its VLAN.
fn only_vlan(n: &wire::Network) -> bool {
    n.vlan.is_some()
        && n.device.is_none()
        && n.address.is_none()
        && n.gateway.is_none()
        && n.dns.is_empty()
}

fn extend_unique(into: &mut Vec<String>, from: &[String]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}
