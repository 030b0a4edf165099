//! Reading the profile set and validating it into a [`Snapshot`].
//!
//! Validation collects every problem it can find before giving up, each
//! with its file, line and column, so one `kickstand check` shows a whole
//! broken edit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use crate::Mac;
use crate::diag::{Diagnostic, LoadError};
use crate::model::*;
use crate::wire::{self, S};

/// Where the appliance keeps its boot loaders when the config does not say
/// (`image/install-bootloaders.sh` fills it from Debian's `ipxe` package).
pub const DEFAULT_TFTP_ROOT: &str = "/var/lib/kickstand/tftp";
const DEFAULT_HTTP_PORT: u16 = 80;
const DEFAULT_TFTP_PORT: u16 = 69;
const DEFAULT_CACHE_BYTES: u64 = 20 << 30;
const DEFAULT_LEASE_SECS: u32 = 3600;
const DEFAULT_REVALIDATE: std::time::Duration = std::time::Duration::from_secs(30);

/// Loads the appliance config at `config` and every profile document in
/// its directory (recursively), and the templates the config points at.
pub fn load(config: &Path) -> Result<Snapshot, LoadError> {
    let mut cx = Cx { diags: Vec::new() };
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };

    let appliance_wire = cx.parse::<wire::ApplianceFile>(config);
    let appliance = appliance_wire.and_then(|w| cx.appliance(config, &base, w));

    let mut docs = Vec::new();
    let mut files = vec![config.to_path_buf()];
    for path in yaml_files(&base, config, &mut cx) {
        if let Some(doc) = cx.parse::<wire::ProfileFile>(&path) {
            docs.push((path.clone(), doc));
        }
        files.push(path);
    }

    let templates = match &appliance {
        Some(a) => read_templates(&a.templates_dir, &mut cx),
        None => BTreeMap::new(),
    };

    let Some(appliance) = appliance else {
        return Err(LoadError(cx.diags));
    };
    let set = cx.merge(&docs);
    let oses = cx.oses(&set, &appliance, &templates);
    let hosts = cx.hosts(&set, &oses);

    if cx.diags.is_empty() {
        Ok(Snapshot {
            appliance,
            oses,
            hosts,
            templates,
            files,
        })
    } else {
        Err(LoadError(cx.diags))
    }
}

/// Every regular file below `dir`, sorted so diagnostics come out in a
/// stable order. Hidden files and editor backups (`.x.swp`, `x~`) are
/// skipped: they are not part of what the operator meant.
fn files_below(dir: &Path, cx: &mut Cx) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                cx.diags.push(Diagnostic::whole_file(
                    &d,
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Every `*.yaml`/`*.yml` below `dir` except the appliance config itself.
fn yaml_files(dir: &Path, config: &Path, cx: &mut Cx) -> Vec<PathBuf> {
    let config_canon = config.canonicalize().ok();
    files_below(dir, cx)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.canonicalize().ok() != config_canon)
        .collect()
}

/// Templates by name: their path below `dir`, `/`-separated.
fn read_templates(dir: &Path, cx: &mut Cx) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in files_below(dir, cx) {
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        match std::fs::read_to_string(&path) {
            Ok(src) => {
                out.insert(name, src);
            }
            Err(e) => cx.diags.push(Diagnostic::whole_file(
                &path,
                format!("cannot read template: {e}"),
            )),
        }
    }
    out
}

/// The profile documents merged into one set, each entry remembering the
/// file it came from.
#[derive(Default)]
struct Merged<'a> {
    oses: BTreeMap<String, (&'a Path, &'a S<wire::Os>)>,
    defaults: Option<(&'a Path, &'a S<wire::HostFields>)>,
    groups: BTreeMap<String, (&'a Path, &'a S<wire::Group>)>,
    hosts: BTreeMap<Mac, (&'a Path, &'a S<wire::HostFields>)>,
}

struct Cx {
    diags: Vec<Diagnostic>,
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

impl Cx {
    fn err(&mut self, file: &Path, at: Location, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(file, at, msg));
    }

    fn parse<T: serde::de::DeserializeOwned>(&mut self, path: &Path) -> Option<T> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.diags
                    .push(Diagnostic::whole_file(path, format!("cannot read: {e}")));
                return None;
            }
        };
        match serde_saphyr::from_str::<T>(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.diags.push(Diagnostic::from_yaml(path, &e));
                None
            }
        }
    }

    fn appliance(&mut self, file: &Path, base: &Path, w: wire::ApplianceFile) -> Option<Appliance> {
        let before = self.diags.len();
        let rel = |p: &str| base.join(p);

        let address = ipv4(&w.server.address.value);
        if address.is_none() {
            self.err(
                file,
                w.server.address.referenced,
                format!(
                    "server.address `{}` is not an IPv4 address",
                    w.server.address.value
                ),
            );
        }
        let bind = match &w.server.bind {
            None => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Some(b) => {
                let parsed = b.value.parse::<IpAddr>().ok();
                if parsed.is_none() {
                    self.err(
                        file,
                        b.referenced,
                        format!("server.bind `{}` is not an IP address", b.value),
                    );
                }
                parsed
            }
        };

        let mode = match w
            .dhcp
            .mode
            .as_ref()
            .map(|m| (m.value.as_str(), m.referenced))
        {
            None | Some(("proxy", _)) => Some(DhcpMode::Proxy),
            Some(("off", _)) => Some(DhcpMode::Off),
            Some(("full", _)) => Some(DhcpMode::Full),
            Some((other, at)) => {
                self.err(
                    file,
                    at,
                    format!("dhcp.mode `{other}` is not one of proxy, off, full"),
                );
                None
            }
        };
        let unknown = match w
            .dhcp
            .unknown
            .as_ref()
            .map(|m| (m.value.as_str(), m.referenced))
        {
            None | Some(("ignore", _)) => Some(UnknownPolicy::Ignore),
            Some(("local-boot", _)) => Some(UnknownPolicy::LocalBoot),
            Some((other, at)) => {
                self.err(file, at, format!("dhcp.unknown `{other}` is not one of ignore, local-boot (an unknown machine is never installed)"));
                None
            }
        };
        let uefi_loader = match &w.dhcp.uefi_loader {
            None => "ipxe.efi".to_owned(),
            Some(l) if l.value == "ipxe.efi" || l.value == "snponly.efi" => l.value.clone(),
            Some(l) => {
                self.err(
                    file,
                    l.referenced,
                    format!(
                        "dhcp.uefi_loader `{}` is not one of ipxe.efi, snponly.efi",
                        l.value
                    ),
                );
                String::new()
            }
        };
        let pool = w.dhcp.pool.as_ref().and_then(|p| self.pool(file, base, p));
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

        let proxy = w.proxy.as_ref().map(|p| {
            if let Err(msg) = check_url(&p.url.value, &["http"]) {
                self.err(file, p.url.referenced, format!("proxy.url: {msg}"));
            }
            Proxy {
                url: p.url.value.clone(),
                username: p.username.clone(),
                password: p.password.clone(),
            }
        });

        let mut mirrors = BTreeMap::new();
        for (name, urls) in &w.mirrors {
            if !is_name(name) {
                self.err(
                    file,
                    urls.referenced,
                    format!("mirror name `{name}` must be letters, digits, `-`, `_` or `.`"),
                );
            }
            if urls.value.is_empty() {
                self.err(
                    file,
                    urls.referenced,
                    format!("mirror `{name}` has no base URLs"),
                );
            }
            for url in &urls.value {
                if let Err(msg) = check_url(&url.value, &["http", "https"]) {
                    self.err(file, url.referenced, format!("mirror `{name}`: {msg}"));
                }
            }
            let with_slash = |u: &String| {
                if u.ends_with('/') {
                    u.clone()
                } else {
                    format!("{u}/")
                }
            };
            mirrors.insert(
                name.clone(),
                urls.value.iter().map(|u| with_slash(&u.value)).collect(),
            );
        }

        let max_bytes = match &w.cache.max_size {
            None => Some(DEFAULT_CACHE_BYTES),
            Some(s) => {
                let parsed = parse_size(&s.value);
                if parsed.is_none() {
                    self.err(
                        file,
                        s.referenced,
                        format!(
                            "cache.max_size `{}` is not a size like 500MiB or 20GiB",
                            s.value
                        ),
                    );
                }
                parsed
            }
        };

        let revalidate_after = match &w.cache.revalidate_after {
            None => Some(DEFAULT_REVALIDATE),
            Some(d) => {
                let parsed = parse_duration(&d.value);
                if parsed.is_none() {
                    self.err(
                        file,
                        d.referenced,
                        format!(
                            "cache.revalidate_after `{}` is not a duration like 30s, 5m or 1h",
                            d.value
                        ),
                    );
                }
                parsed
            }
        };

        if self.diags.len() > before {
            return None;
        }
        Some(Appliance {
            server: Server {
                address: address?,
                bind: bind?,
                interfaces: w.server.interfaces,
                http_port: w.server.http_port.unwrap_or(DEFAULT_HTTP_PORT),
                tftp_port: w.server.tftp_port.unwrap_or(DEFAULT_TFTP_PORT),
            },
            dhcp: Dhcp {
                mode: mode?,
                unknown: unknown?,
                uefi_loader,
                pool,
            },
            tftp_root: w
                .tftp
                .root
                .as_deref()
                .map_or_else(|| PathBuf::from(DEFAULT_TFTP_ROOT), rel),
            proxy,
            mirrors,
            mirror_ca_file: w.mirror_ca_file.as_deref().map(rel),
            cache: Cache {
                dir: rel(w.cache.dir.as_deref().unwrap_or("/var/cache/kickstand")),
                max_bytes: max_bytes?,
                revalidate_after: revalidate_after?,
            },
            templates_dir: rel(w.paths.templates.as_deref().unwrap_or("../templates")),
            state_dir: rel(w.paths.state.as_deref().unwrap_or("/var/lib/kickstand")),
        })
    }

    fn pool(&mut self, file: &Path, base: &Path, p: &S<wire::Pool>) -> Option<Pool> {
        let addr = |s: &S<String>, what: &str, cx: &mut Cx| {
            let a = ipv4(&s.value);
            if a.is_none() {
                cx.err(
                    file,
                    s.referenced,
                    format!("dhcp.pool.{what} `{}` is not an IPv4 address", s.value),
                );
            }
            a
        };
        let p_ = &p.value;
        let start = addr(&p_.start, "start", self);
        let end = addr(&p_.end, "end", self);
        let router = p_.router.as_ref().map(|r| addr(r, "router", self));
        let dns: Vec<_> = p_.dns.iter().map(|d| addr(d, "dns", self)).collect();
        let prefix_len = p_.prefix_len.value;
        if !(8..=30).contains(&prefix_len) {
            self.err(
                file,
                p_.prefix_len.referenced,
                format!("dhcp.pool.prefix_len {prefix_len} must be between 8 and 30"),
            );
            return None;
        }
        let (start, end) = (start?, end?);
        let mask = u32::MAX << (32 - prefix_len);
        if u32::from(start) > u32::from(end) || (u32::from(start) & mask) != (u32::from(end) & mask)
        {
            self.err(file, p.referenced, format!("dhcp.pool {start}..{end} must be ascending and inside one /{prefix_len} network"));
            return None;
        }
        Some(Pool {
            start,
            end,
            prefix_len,
            router: match router {
                Some(r) => Some(r?),
                None => None,
            },
            dns: dns.into_iter().collect::<Option<Vec<_>>>()?,
            lease_secs: p_.lease_secs.unwrap_or(DEFAULT_LEASE_SECS),
            leases_file: base.join(
                p_.leases_file
                    .as_deref()
                    .unwrap_or("../var/state/leases.json"),
            ),
        })
    }

    fn merge<'a>(&mut self, docs: &'a [(PathBuf, wire::ProfileFile)]) -> Merged<'a> {
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

    fn oses(
        &mut self,
        set: &Merged<'_>,
        appliance: &Appliance,
        templates: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Os> {
        let mut out = BTreeMap::new();
        for (name, (file, os)) in &set.oses {
            let w = &os.value;
            if !appliance.mirrors.contains_key(&w.mirror.value) {
                self.err(file, w.mirror.referenced, format!("OS `{name}` uses mirror `{}`, which is not in the appliance config's mirrors", w.mirror.value));
            }
            let mut repos = Vec::new();
            for r in &w.repos {
                let mirror = r.value.mirror.as_ref().map_or(&w.mirror, |m| m);
                if !appliance.mirrors.contains_key(&mirror.value) {
                    self.err(
                        file,
                        mirror.referenced,
                        format!(
                            "repo `{}` uses mirror `{}`, which is not configured",
                            r.value.name, mirror.value
                        ),
                    );
                }
                if !is_name(&r.value.name) {
                    self.err(
                        file,
                        r.referenced,
                        format!(
                            "repo name `{}` must be letters, digits, `-`, `_` or `.`",
                            r.value.name
                        ),
                    );
                }
                repos.push(Repo {
                    name: r.value.name.clone(),
                    mirror: mirror.value.clone(),
                    path: trim_slashes(&r.value.path),
                });
            }
            let ipxe = w.ipxe.as_ref().map_or("boot.ipxe.j2", |t| t.value.as_str());
            for (tpl, at) in [
                (w.kickstart.value.as_str(), w.kickstart.referenced),
                (
                    ipxe,
                    w.ipxe.as_ref().map_or(os.referenced, |t| t.referenced),
                ),
            ] {
                if !templates.contains_key(tpl) {
                    self.err(
                        file,
                        at,
                        format!(
                            "template `{tpl}` does not exist in {}",
                            appliance.templates_dir.display()
                        ),
                    );
                }
            }
            for (what, p) in [
                ("tree", &w.tree),
                ("kernel", w.kernel.as_ref().unwrap_or(&String::new())),
                ("initrd", w.initrd.as_ref().unwrap_or(&String::new())),
            ] {
                if p.split('/').any(|c| c == "..") {
                    self.err(
                        file,
                        os.referenced,
                        format!("OS `{name}`: {what} path `{p}` must not contain `..`"),
                    );
                }
            }
            out.insert(
                name.clone(),
                Os {
                    name: name.clone(),
                    title: w.title.clone().unwrap_or_else(|| name.clone()),
                    mirror: w.mirror.value.clone(),
                    tree: trim_slashes(&w.tree),
                    kernel: trim_slashes(w.kernel.as_deref().unwrap_or("images/pxeboot/vmlinuz")),
                    initrd: trim_slashes(
                        w.initrd.as_deref().unwrap_or("images/pxeboot/initrd.img"),
                    ),
                    repos,
                    kickstart_template: w.kickstart.value.clone(),
                    ipxe_template: ipxe.to_owned(),
                    boot_args: w.boot_args.clone().unwrap_or_default(),
                    gpg_key: w.gpg_key.clone(),
                },
            );
        }
        out
    }

    fn hosts(&mut self, set: &Merged<'_>, oses: &BTreeMap<String, Os>) -> BTreeMap<Mac, Host> {
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
        match a.value.as_str() {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            other => {
                self.err(
                    file,
                    a.referenced,
                    format!("arch `{other}` is not one of x86_64, aarch64"),
                );
                None
            }
        }
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
        let network = self.scalar(mac, layers, "network", |f| {
            f.network.as_ref().map(|n| {
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

        let Some((hostname, hostname_at, hostname_file)) = hostname else {
            self.err(
                host_layer.file,
                host_layer.at,
                format!("host {mac} has no hostname (set it on the host)"),
            );
            return None;
        };
        if !valid_hostname(&hostname) {
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
            Some((name, ..)) => Some(name),
        };
        if let Some((h, at, file)) = &hash
            && !looks_like_crypt(h)
        {
            self.err(file, *at, format!("host {mac}: root_password_hash must be a crypt(3) hash like `$6$…` (use `openssl passwd -6`), never a clear-text password"));
        }
        let disk = match disk {
            None => Some(Disk {
                layout: DiskLayout::Lvm,
                device: None,
            }),
            Some(((layout, device), at, file)) => {
                let layout = match layout.as_str() {
                    "lvm" => Some(DiskLayout::Lvm),
                    "plain" => Some(DiskLayout::Plain),
                    "btrfs" => Some(DiskLayout::Btrfs),
                    other => {
                        self.err(
                            file,
                            at,
                            format!(
                                "host {mac}: disk layout `{other}` is not one of lvm, plain, btrfs"
                            ),
                        );
                        None
                    }
                };
                if device.as_deref().is_some_and(|d| !is_name(d)) {
                    self.err(file, at, format!("host {mac}: disk device `{}` must be a bare device name like sda or nvme0n1", device.as_deref().unwrap_or_default()));
                }
                layout.map(|layout| Disk { layout, device })
            }
        };
        let network = match network {
            None => Some(Network {
                device: "link".into(),
                static_ip: None,
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
            groups,
            disk: disk?,
            network: network?,
            root_password_hash: hash.map(|(h, ..)| h),
            ssh_keys,
            packages,
            timezone: timezone.map_or_else(|| "UTC".to_owned(), |(t, ..)| t),
            snippets,
        })
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
            });
        };
        let parsed = address.split_once('/').and_then(|(a, p)| {
            Some((
                ipv4(a)?,
                p.parse::<u8>().ok().filter(|p| (1..=32).contains(p))?,
            ))
        });
        let Some((addr, prefix_len)) = parsed else {
            self.err(file, at, format!("host {mac}: network address `{address}` is not an IPv4 address with prefix like 10.0.0.11/24"));
            return None;
        };
        let gateway = match gateway {
            None => None,
            Some(g) => match ipv4(&g) {
                Some(g) => Some(g),
                None => {
                    self.err(
                        file,
                        at,
                        format!("host {mac}: network gateway `{g}` is not an IPv4 address"),
                    );
                    return None;
                }
            },
        };
        let mut servers = Vec::new();
        for d in dns {
            match ipv4(&d) {
                Some(d) => servers.push(d),
                None => {
                    self.err(
                        file,
                        at,
                        format!("host {mac}: dns server `{d}` is not an IPv4 address"),
                    );
                    return None;
                }
            }
        }
        let netmask = Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0),
        );
        Some(Network {
            device,
            static_ip: Some(StaticIp {
                address: addr,
                prefix_len,
                netmask,
                gateway,
                dns: servers,
            }),
        })
    }
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

fn place(file: &Path, at: Location) -> String {
    format!("{}:{}:{}", file.display(), at.line(), at.column())
}

fn extend_unique(into: &mut Vec<String>, from: &[String]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

fn trim_slashes(p: &str) -> String {
    p.trim_matches('/').to_owned()
}

/// Names that end up in URLs, file names and kickstart lines: keep them to
/// a safe alphabet so no quoting is ever needed.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn looks_like_crypt(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    parts.len() >= 4
        && parts[0].is_empty()
        && !parts[1].is_empty()
        && !h.contains(char::is_whitespace)
}

fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL"))?;
    if !schemes.contains(&scheme) {
        return Err(format!("`{url}`: scheme must be {}", schemes.join(" or ")));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) || url.contains(['?', '#']) {
        return Err(format!("`{url}` needs a host and no query or fragment"));
    }
    Ok(())
}

/// `500MiB`, `20GiB`, `20G`, `1T` or a byte count. Every unit is binary:
/// disk sizes for a cache need no decimal subtlety.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num.parse().ok()?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "T" | "TB" | "TiB" => 40,
        _ => return None,
    };
    num.checked_mul(1u64 << shift)
}

/// `30s`, `5m`, `1h` or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => num,
        "m" => num.checked_mul(60)?,
        "h" => num.checked_mul(3600)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5h"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn hostnames_and_hashes() {
        assert!(valid_hostname("node01.rack1.example"));
        assert!(!valid_hostname("node_01"));
        assert!(!valid_hostname("-node"));
        assert!(!valid_hostname("a..b"));
        assert!(looks_like_crypt("$6$salt$hash"));
        assert!(!looks_like_crypt("hunter2"));
    }
}
