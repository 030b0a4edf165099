//! The generation: everything built from one accepted profile set, once —
//! the validated snapshot with its compiled templates, the ProxyDHCP
//! context, the repo proxy's upstream (mirror table, office proxy, TLS
//! roots), the URL scheme and the boot decision for any MAC. `serve` swaps
//! a whole new generation in on every accepted reload; `check` builds the
//! very same one and throws it away, so the two cannot disagree.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use kickstand_profiles::model::{Appliance, Postgres, UnknownPolicy};
use kickstand_profiles::urls::UrlScheme;
use kickstand_profiles::{Diagnostic, Draft, LoadError, Mac, Snapshot};
use kickstand_render::Site;
use kickstand_repo::{RepoConfig, Upstream};
use kickstand_state::Phase;

/// A database URL as a restart message may show it: whether it is set and
/// changed, never its text (it may carry a password, and a change of the
/// password alone must show as a change too).
fn redacted(pg: Option<&Postgres>) -> String {
    match pg {
        None => "SQLite".into(),
        Some(pg) => {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (pg.conninfo(), pg.sslmode).hash(&mut h);
            format!("PostgreSQL #{:04x}", h.finish() & 0xffff)
        }
    }
}

/// What a machine's next network boot does: the one place the rules for
/// known, installed and unknown machines are written. ProxyDHCP, TFTP and
/// HTTP all ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BootDecision {
    /// A host in build mode: the installer, with its kickstart.
    Install,
    /// A host that reported `installed`, or failed and is held until an
    /// operator re-arms it: its own disk (boot once, no install loop).
    LocalDisk,
    /// No profile, and `dhcp.unknown: local-boot`: told to boot its disk.
    UnknownLocalBoot,
    /// No profile, and `dhcp.unknown: discover`: asked what it is, then
    /// told to boot its disk.
    Discover,
    /// No profile, and `dhcp.unknown: ignore`: not answered at all.
    Ignore,
}

#[derive(Debug)]
pub(crate) struct Generation {
    /// Counts accepted reloads, for the log and the status page.
    pub(crate) id: u64,
    pub(crate) loaded_at: SystemTime,
    pub(crate) site: Site,
    pub(crate) dhcp: Arc<kickstand_dhcp::Context>,
    pub(crate) repo: RepoConfig,
    pub(crate) upstream: Arc<Upstream>,
    /// The ports as the file says: the snapshot carries the bound ports
    /// instead when the daemon bound port 0.
    configured: Ports,
}

/// Ports that URLs and kernel arguments name: `None` is the configured one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ports {
    pub(crate) http: Option<u16>,
    pub(crate) https: Option<u16>,
    pub(crate) syslog: Option<u16>,
}

impl Generation {
    /// Loads the profile set at `config` and builds its generation.
    /// `http_port` replaces the configured port when the daemon bound port
    /// 0, so every URL handed out names the port actually in use.
    pub(crate) fn load(config: &Path, ports: Ports, id: u64) -> Result<Generation, LoadError> {
        Generation::load_with(config, None, ports, id)
    }

    /// [`Generation::load`] with a profile file not yet written among
    /// the set: what the daemon would serve once it is.
    pub(crate) fn load_with(
        config: &Path,
        draft: Option<Draft<'_>>,
        ports: Ports,
        id: u64,
    ) -> Result<Generation, LoadError> {
        let generation = Generation::build(kickstand_profiles::load_with(config, draft)?, id)?;
        if ports == Ports::default() {
            return Ok(generation);
        }
        generation.with_ports(ports)
    }

    /// The same profile set with its URLs naming the ports the daemon
    /// bound (it was configured with port 0): rendered again, not read
    /// again.
    pub(crate) fn with_ports(self, ports: Ports) -> Result<Generation, LoadError> {
        let configured = self.configured;
        let mut snapshot = self.site.snapshot;
        let server = &mut snapshot.appliance.server;
        server.http_port = ports.http.unwrap_or(server.http_port);
        server.https_port = ports.https.unwrap_or(server.https_port);
        server.syslog_port = ports.syslog.unwrap_or(server.syslog_port);
        let mut generation = Generation::build(snapshot, self.id)?;
        generation.configured = configured;
        Ok(generation)
    }

    fn build(snapshot: Snapshot, id: u64) -> Result<Generation, LoadError> {
        let site = Site::new(snapshot)?;
        let appliance = &site.snapshot.appliance;
        let repo = RepoConfig::from_appliance(appliance);
        let upstream = Upstream::new(&repo).map_err(|e| {
            // Every other repo setting was validated with the profiles; what
            // is left is the CA bundle's certificates themselves.
            let file = appliance
                .mirror_ca
                .as_ref()
                .map_or_else(|| appliance.templates_dir.clone(), |ca| ca.path.clone());
            LoadError(vec![Diagnostic::whole_file(&file, e.to_string())])
        })?;
        // What opening the store would read (the CA's certificates, the
        // password file, values the driver parses), read here too so
        // `check` refuses what `serve` would.
        if let Some(pg) = &appliance.state.postgres {
            kickstand_state::check_postgres(pg).map_err(|e| {
                // The message names the file at fault; the config is where
                // it is set.
                let config = site.snapshot.files.first().cloned().unwrap_or_default();
                LoadError(vec![Diagnostic::whole_file(&config, e.to_string())])
            })?;
        }
        let dhcp = Arc::new(kickstand_dhcp::Context::from_appliance(appliance));
        Ok(Generation {
            configured: Ports {
                http: Some(appliance.server.http_port),
                https: Some(appliance.server.https_port),
                syslog: Some(appliance.server.syslog_port),
            },
            id,
            loaded_at: SystemTime::now(),
            dhcp,
            repo,
            upstream: Arc::new(upstream),
            site,
        })
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.site.snapshot
    }

    pub(crate) fn appliance(&self) -> &Appliance {
        &self.site.snapshot.appliance
    }

    pub(crate) fn urls(&self) -> UrlScheme {
        self.site.urls()
    }

    /// Where an operator reaches the status page with its actions, the
    /// operator API and the CLI's channel.
    pub(crate) fn https_url(&self) -> String {
        let server = &self.appliance().server;
        let address = server.address.primary();
        match server.https_port {
            443 if address.is_ipv6() => format!("https://[{address}]/"),
            443 => format!("https://{address}/"),
            port => format!("https://{}/", SocketAddr::new(address, port)),
        }
    }

    /// `os/<os>/<path>` read back: the mirror and repo path of one of the
    /// OS's boot files (shim, GRUB, kernel, initrd). Nothing else of a tree
    /// is served under that name: TFTP is not a second repo proxy.
    pub(crate) fn os_boot_file(&self, os: &str, path: &str) -> Option<(String, String)> {
        let os = self.snapshot().oses.get(os)?;
        // Empty segments name nothing (nginx merges slashes too): the shim,
        // HTTP-booted, asks for `EFI/BOOT//grubx64.efi`, its own directory
        // and a '/' of its own before GRUB's name.
        [&os.shim, &os.grub, &os.kernel, &os.initrd]
            .into_iter()
            .find(|file| segments(file.as_str()).eq(segments(path)))
            .map(|file| (os.mirror.clone(), format!("{}/{file}", os.tree)))
    }

    /// The boot decision for `mac`, whose install state is `phase`.
    pub(crate) fn boot_for(&self, mac: Mac, phase: Phase) -> BootDecision {
        if self.snapshot().host(&mac).is_some() {
            return if phase.is_build_mode() {
                BootDecision::Install
            } else {
                BootDecision::LocalDisk
            };
        }
        match self.appliance().dhcp.unknown {
            UnknownPolicy::LocalBoot => BootDecision::UnknownLocalBoot,
            UnknownPolicy::Discover => BootDecision::Discover,
            UnknownPolicy::Ignore => BootDecision::Ignore,
        }
    }

    /// Settings this generation would change that a running daemon cannot
    /// apply: each an operator sentence ending in "restart to apply".
    pub(crate) fn restart_needed(&self, next: &Generation) -> Vec<String> {
        let (old, new) = (self.appliance(), next.appliance());
        let families = |a: &Appliance| {
            let address = a.server.address;
            match (address.v4(), address.v6()) {
                (Some(_), Some(_)) => "IPv4 and IPv6",
                (Some(_), None) => "IPv4",
                (None, _) => "IPv6",
            }
            .to_owned()
        };
        let pool = |a: &Appliance| match &a.dhcp.pool {
            None => "none".to_owned(),
            Some(p) => format!(
                "{}..{}/{} router {:?} dns {:?} lease {}s, {}",
                p.start,
                p.end,
                p.prefix_len,
                p.router,
                p.dns,
                p.lease_secs,
                p.leases_file.display()
            ),
        };
        let path = |p: &Path| p.display().to_string();
        let held = |a: &Appliance| match a.server.segment {
            Some(_) => a
                .server
                .address
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => String::new(),
        };
        let settings = [
            (
                "server.bind",
                old.server.bind.to_string(),
                new.server.bind.to_string(),
            ),
            (
                "server.interfaces",
                old.server.interfaces.join(","),
                new.server.interfaces.join(","),
            ),
            (
                "server.http_port",
                self.configured.http.unwrap_or_default().to_string(),
                next.configured.http.unwrap_or_default().to_string(),
            ),
            (
                "server.https_port",
                self.configured.https.unwrap_or_default().to_string(),
                next.configured.https.unwrap_or_default().to_string(),
            ),
            (
                "server.tls_cert",
                format!("{:?}", old.server.tls.as_ref().map(|t| &t.cert)),
                format!("{:?}", new.server.tls.as_ref().map(|t| &t.cert)),
            ),
            (
                "server.tls_key",
                format!("{:?}", old.server.tls.as_ref().map(|t| &t.key)),
                format!("{:?}", new.server.tls.as_ref().map(|t| &t.key)),
            ),
            (
                "server.syslog_port",
                self.configured.syslog.unwrap_or_default().to_string(),
                next.configured.syslog.unwrap_or_default().to_string(),
            ),
            (
                "server.tftp_port",
                old.server.tftp_port.to_string(),
                new.server.tftp_port.to_string(),
            ),
            (
                "server.max_connections",
                format!("{:?}", old.server.max_connections),
                format!("{:?}", new.server.max_connections),
            ),
            (
                "server.max_connections_per_client",
                old.server.max_connections_per_client.to_string(),
                new.server.max_connections_per_client.to_string(),
            ),
            (
                "server.segment",
                format!("{:?}", old.server.segment),
                format!("{:?}", new.server.segment),
            ),
            // The address a segment's active appliance holds is taken
            // and given up with the lease.
            (
                "server.address (a segment's, held by its active appliance)",
                held(old),
                held(new),
            ),
            // Which DHCP fronts are bound (DHCPv4 needs an IPv4 address)
            // is decided at start; the addresses themselves may change.
            ("server.address families", families(old), families(new)),
            (
                "dhcp.mode",
                old.dhcp.mode.as_str().to_owned(),
                new.dhcp.mode.as_str().to_owned(),
            ),
            ("dhcp.pool", pool(old), pool(new)),
            (
                "dhcp.answer_router_solicitations",
                old.dhcp.answer_router_solicitations.to_string(),
                new.dhcp.answer_router_solicitations.to_string(),
            ),
            ("cache.dir", path(&old.cache.dir), path(&new.cache.dir)),
            ("paths.state", path(&old.state_dir), path(&new.state_dir)),
            // The state store is opened once, with these: its database,
            // the name on every event, the install time-out it enforces.
            (
                "state.url",
                // Never the URL itself in a message: it may hold a password.
                redacted(old.state.postgres.as_ref()),
                redacted(new.state.postgres.as_ref()),
            ),
            (
                "state.ca_file",
                format!(
                    "{:?}",
                    old.state.postgres.as_ref().and_then(|p| p.ca_file.as_ref())
                ),
                format!(
                    "{:?}",
                    new.state.postgres.as_ref().and_then(|p| p.ca_file.as_ref())
                ),
            ),
            (
                "state.password_file",
                format!(
                    "{:?}",
                    old.state
                        .postgres
                        .as_ref()
                        .and_then(|p| p.password_file.as_ref())
                ),
                format!(
                    "{:?}",
                    new.state
                        .postgres
                        .as_ref()
                        .and_then(|p| p.password_file.as_ref())
                ),
            ),
            (
                "state.appliance",
                format!("{:?}", old.state.appliance),
                format!("{:?}", new.state.appliance),
            ),
            (
                "state.install_timeout",
                humantime::format_duration(old.state.install_timeout).to_string(),
                humantime::format_duration(new.state.install_timeout).to_string(),
            ),
            (
                "state.operator_token_file",
                path(&old.state.operator_token_file),
                path(&new.state.operator_token_file),
            ),
        ];
        settings
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(key, a, b)| {
                format!("{key} changed ({a} → {b}): it cannot change while Kickstand runs; restart to apply")
            })
            .collect()
    }
}

/// A path's non-empty segments.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_postgres(pg: Option<Postgres>) -> Generation {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/kickstand.yaml");
        let mut snapshot = kickstand_profiles::load(&config).unwrap_or_else(|e| panic!("{e}"));
        snapshot.appliance.state.postgres = pg;
        Generation::build(snapshot, 1).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Only the OS's boot files, by their names in the tree; a doubled
    /// slash (the HTTP-booted shim's) is the same name.
    #[test]
    fn an_os_boot_file_is_found_by_its_name_whatever_its_slashes() {
        let generation = with_postgres(None);
        let (os, file) = generation
            .snapshot()
            .oses
            .iter()
            .map(|(name, os)| (name.clone(), os.grub.clone()))
            .next()
            .expect("the shipped profiles have an OS");
        let want = generation.os_boot_file(&os, &file).expect("GRUB");
        let doubled = file.replacen('/', "//", 2);
        assert_ne!(doubled, file);
        assert_eq!(generation.os_boot_file(&os, &doubled), Some(want));
        for other in [
            "",
            "/",
            "EFI",
            "EFI/BOOT",
            "../../etc/passwd",
            "EFI/BOOT/x.efi",
        ] {
            assert_eq!(generation.os_boot_file(&os, other), None, "{other}");
        }
    }

    /// A new password alone is a change to restart for, and the message
    /// shows neither password; so is another password file.
    #[test]
    fn the_database_settings_need_a_restart_and_no_password_shows() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, "s3cret-in-a-file\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            path
        };
        let pg = |url: &str, password_file: Option<std::path::PathBuf>| {
            let mut pg: Postgres = url.parse().expect("a URL");
            pg.password_file = password_file;
            Some(pg)
        };
        let old = with_postgres(pg("postgres://kick:old-s3cret@db/state", None));
        let new = with_postgres(pg("postgres://kick:new-s3cret@db/state", None));
        let said = old.restart_needed(&new).join("\n");
        assert!(said.contains("state.url changed"), "{said}");
        assert!(!said.contains("s3cret"), "{said}");

        let old = with_postgres(pg("postgres://kick@db/state", Some(file("a"))));
        let new = with_postgres(pg("postgres://kick@db/state", Some(file("b"))));
        let said = old.restart_needed(&new).join("\n");
        assert!(said.contains("state.password_file changed"), "{said}");
        assert!(!said.contains("s3cret"), "{said}");
        assert!(old.restart_needed(&old).is_empty());
    }

    /// The advertisement socket is bound at start, like ProxyDHCP's.
    #[test]
    fn answering_router_solicitations_needs_a_restart() {
        let old = with_postgres(None);
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/kickstand.yaml");
        let mut snapshot = kickstand_profiles::load(&config).unwrap_or_else(|e| panic!("{e}"));
        snapshot.appliance.dhcp.answer_router_solicitations = true;
        let new = Generation::build(snapshot, 2).unwrap_or_else(|e| panic!("{e}"));
        let said = old.restart_needed(&new).join("\n");
        assert!(
            said.contains("dhcp.answer_router_solicitations changed (false → true)"),
            "{said}"
        );
    }

    /// Which DHCP fronts run (DHCPv4 needs an IPv4 address, DHCPv6 an IPv6
    /// one) is decided at start; another address of the same families is
    /// a change a reload applies.
    #[test]
    fn a_new_address_family_needs_a_restart_a_new_address_does_not() {
        use kickstand_profiles::model::Addresses;
        use std::net::{Ipv4Addr, Ipv6Addr};
        let old = with_postgres(None);
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/kickstand.yaml");
        let with = |address| {
            let mut snapshot = kickstand_profiles::load(&config).unwrap_or_else(|e| panic!("{e}"));
            snapshot.appliance.server.address = address;
            Generation::build(snapshot, 2).unwrap_or_else(|e| panic!("{e}"))
        };
        let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
        let dual = with(Addresses::Both(Ipv4Addr::LOCALHOST, v6));
        let said = old.restart_needed(&dual).join("\n");
        assert!(
            said.contains("server.address families changed (IPv4 → IPv4 and IPv6)"),
            "{said}"
        );
        let moved = with(Addresses::V4(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(old.restart_needed(&moved).is_empty());
    }
}
