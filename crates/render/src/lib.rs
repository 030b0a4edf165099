//! Rendering of kickstarts, iPXE scripts and GRUB configs with minijinja
//! over the templates of a profile [`Snapshot`].
//!
//! A [`Site`] pairs a snapshot with its compiled templates and is only built
//! when every host renders in every [`BootAction`]: a template that names a
//! missing value is an error at `kickstand check` (and at reload, which then
//! keeps the last good site), never an empty string at install time.
//! Undefined variables are strict and HTML auto-escaping is off: these are
//! shell and kickstart files, not web pages.
//!
//! This crate does no I/O and does not decide *which* action a host gets:
//! the daemon's generation does, from the host's profile and install state.
//! Every URL a template sees comes from the profile crate's
//! [`UrlScheme`], the same one ProxyDHCP and the HTTP router use.

use std::net::{IpAddr, SocketAddr};

use kickstand_profiles::model::{Arch, Host, Os};
use kickstand_profiles::urls::{self, UrlScheme};
use kickstand_profiles::{Diagnostic, GRUB_TEMPLATE, LoadError, Mac, Snapshot};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, context};
use serde::Serialize;

/// What the boot script should make the machine do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootAction {
    /// Boot the installer kernel with the host's kickstart.
    Install,
    /// The host is installed: leave iPXE and boot the local disk.
    LocalDisk,
}

impl BootAction {
    pub const ALL: [BootAction; 2] = [BootAction::Install, BootAction::LocalDisk];
}

/// The script a machine with no profile gets (when it gets one at all):
/// `templates/unknown.ipxe.j2`. Never an install.
pub const UNKNOWN_IPXE_TEMPLATE: &str = "unknown.ipxe.j2";

/// What a machine with no profile is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownAction {
    /// Boot its local disk (`dhcp.unknown: local-boot`).
    LocalDisk,
    /// Report what iPXE knows of it, then boot its local disk
    /// (`dhcp.unknown: discover`).
    Discover,
}

/// The token `check` renders with: rendering must not depend on its value.
const CHECK_TOKEN: &str = "check-token";

/// The config every GRUB reads first (`grub.cfg`): it chains to the
/// machine's own by MAC. `templates/grub-chain.cfg.j2`.
pub const GRUB_CHAIN_TEMPLATE: &str = "grub-chain.cfg.j2";

/// Templates every appliance needs whatever its OS definitions say. A
/// templates directory without one (an operator's own, from before the
/// template existed) gets the shipped one rather than a daemon that will
/// not start; a file of the same name in the directory wins.
const BUILT_IN: &[(&str, &str)] = &[
    (
        UNKNOWN_IPXE_TEMPLATE,
        include_str!("../../../templates/unknown.ipxe.j2"),
    ),
    (
        GRUB_TEMPLATE,
        include_str!("../../../templates/grub.cfg.j2"),
    ),
    (
        GRUB_CHAIN_TEMPLATE,
        include_str!("../../../templates/grub-chain.cfg.j2"),
    ),
    (
        "grub-local-disk.cfg.j2",
        include_str!("../../../templates/grub-local-disk.cfg.j2"),
    ),
];

/// Why a render failed. Carries the template's file and line when minijinja
/// knows them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("no host profile for {0}")]
    UnknownHost(Mac),
    #[error("{0}")]
    Template(Diagnostic),
}

/// A snapshot with its templates compiled and proven to render.
#[derive(Debug)]
pub struct Site {
    pub snapshot: Snapshot,
    env: Environment<'static>,
}

impl Site {
    /// Compiles every template and renders every host's kickstart and boot
    /// script in every action, and the unknown-machine script, for a client
    /// of each address family the appliance has; any failure rejects the
    /// whole snapshot.
    pub fn new(snapshot: Snapshot) -> Result<Site, LoadError> {
        let env = environment(&snapshot)?;
        let site = Site { snapshot, env };
        let mut diags = Vec::new();
        for address in site.snapshot.appliance.server.address.iter() {
            site.check(&site.to(address), &mut diags);
        }
        if diags.is_empty() {
            Ok(site)
        } else {
            Err(LoadError(diags))
        }
    }

    fn check(&self, rendering: &Rendering<'_>, diags: &mut Vec<Diagnostic>) {
        let mut report = |d: Diagnostic| {
            if !diags.contains(&d) {
                diags.push(d);
            }
        };
        for action in [UnknownAction::LocalDisk, UnknownAction::Discover] {
            if let Err(RenderError::Template(d)) =
                rendering.unknown_ipxe(&Mac([0x52, 0x54, 0, 0, 0, 0]), action)
            {
                report(d);
            }
        }
        if let Err(RenderError::Template(d)) = rendering.grub_chain() {
            report(d);
        }
        for host in self.snapshot.hosts.values() {
            let mac = &host.mac;
            let attempts = [rendering.kickstart(mac, CHECK_TOKEN).map(drop)]
                .into_iter()
                .chain(BootAction::ALL.map(|a| rendering.ipxe(mac, a, CHECK_TOKEN).map(drop)))
                .chain(BootAction::ALL.map(|a| rendering.grub(mac, a, CHECK_TOKEN).map(drop)));
            for result in attempts {
                if let Err(RenderError::Template(d)) = result {
                    let message = format!("host {} ({}): {}", host.mac, host.hostname, d.message);
                    report(Diagnostic { message, ..d });
                }
            }
        }
    }

    /// What a machine at `client` is sent: every address and URL in it is
    /// of the family it came in on (where the appliance has one).
    pub fn to(&self, client: IpAddr) -> Rendering<'_> {
        let appliance = &self.snapshot.appliance;
        Rendering {
            site: self,
            address: appliance.server.address.facing(client),
            urls: appliance.urls_for(client),
        }
    }

    /// The iPXE script for a host whose build token was withheld from the
    /// address that asked (`why` says which rule): its console says why,
    /// then the machine goes on to its next boot device. Kickstand's own
    /// text, not a template: it must not depend on a site's edits.
    pub fn withheld_ipxe(mac: &Mac, why: &str) -> String {
        format!(
            "#!ipxe\n\
             echo Kickstand: no install for {mac} from this address: {why}\n\
             echo Kickstand: the build token goes only to the address the DHCP exchange of this machine gave it; the operator sees this on the status page\n\
             sleep 30 ||\n\
             exit\n"
        )
    }

    /// The GRUB config for the same case as [`Site::withheld_ipxe`].
    pub fn withheld_grub(mac: &Mac, why: &str) -> String {
        format!(
            "echo \"Kickstand: no install for {mac} from this address: {why}\"\n\
             echo \"Kickstand: the build token goes only to the address this machine's own DHCP exchange was given\"\n\
             sleep 30\n\
             exit\n"
        )
    }

    /// The URLs for no client in particular (logs, the status page).
    pub fn urls(&self) -> UrlScheme {
        self.snapshot.appliance.urls()
    }

    fn host(&self, mac: &Mac) -> Result<(&Host, &Os), RenderError> {
        let host = self
            .snapshot
            .host(mac)
            .ok_or(RenderError::UnknownHost(*mac))?;
        // Validation guarantees the OS exists; a miss here would be a bug in
        // the profile crate, reported rather than panicking.
        let os = self
            .snapshot
            .oses
            .get(&host.os)
            .ok_or(RenderError::UnknownHost(*mac))?;
        Ok((host, os))
    }

    fn diagnostic(&self, e: &minijinja::Error) -> RenderError {
        RenderError::Template(template_diagnostic(&self.snapshot, e))
    }
}

/// The site as one client sees it: the appliance address and URLs of its
/// address family.
#[derive(Debug)]
pub struct Rendering<'a> {
    site: &'a Site,
    address: IpAddr,
    urls: UrlScheme,
}

impl Rendering<'_> {
    /// The host's kickstart; `token` is its build token, carried by every
    /// URL the kickstart hands out (callbacks).
    pub fn kickstart(&self, mac: &Mac, token: &str) -> Result<String, RenderError> {
        let (host, os) = self.site.host(mac)?;
        self.render(&os.kickstart_template, host, os, BootAction::Install, token)
    }

    /// The host's iPXE script. An install carries the build token in its
    /// `inst.ks=` URL; a local-disk script carries none.
    pub fn ipxe(&self, mac: &Mac, action: BootAction, token: &str) -> Result<String, RenderError> {
        let (host, os) = self.site.host(mac)?;
        let token = if action == BootAction::Install {
            token
        } else {
            ""
        };
        self.render(&os.ipxe_template, host, os, action, token)
    }

    /// The host's GRUB config, for the shim → GRUB chain: its install
    /// (kernel and initrd over TFTP, the build token in `inst.ks=`) or its
    /// local disk.
    pub fn grub(&self, mac: &Mac, action: BootAction, token: &str) -> Result<String, RenderError> {
        let (host, os) = self.site.host(mac)?;
        let token = if action == BootAction::Install {
            token
        } else {
            ""
        };
        self.render(&os.grub_template, host, os, action, token)
    }

    /// The `grub.cfg` every GRUB reads first: it chains to the machine's
    /// own config, or boots the local disk when there is none.
    pub fn grub_chain(&self) -> Result<String, RenderError> {
        let tmpl = self
            .site
            .env
            .get_template(GRUB_CHAIN_TEMPLATE)
            .map_err(|e| self.site.diagnostic(&e))?;
        tmpl.render(context! { appliance => self.appliance_context() })
            .map_err(|e| self.site.diagnostic(&e))
    }

    /// The script for a machine with no profile: its local disk, or a
    /// report of what it is first. Never an install.
    pub fn unknown_ipxe(&self, mac: &Mac, action: UnknownAction) -> Result<String, RenderError> {
        let tmpl = self
            .site
            .env
            .get_template(UNKNOWN_IPXE_TEMPLATE)
            .map_err(|e| self.site.diagnostic(&e))?;
        tmpl.render(context! {
            mac => mac.to_string(),
            action => Serde(action),
            report_url => self.urls.discovery_report(*mac),
            grubs => Serde(self.grub_per_arch()),
            appliance => self.appliance_context(),
        })
        .map_err(|e| self.site.diagnostic(&e))
    }

    /// For a machine with no OS of its own: one OS tree's GRUB over HTTP
    /// per architecture the profiles install (the first OS by name), for
    /// iPXE on UEFI to reach the disk through.
    fn grub_per_arch(&self) -> Vec<ArchGrub> {
        let mut grubs: Vec<ArchGrub> = Vec::new();
        for os in self.site.snapshot.oses.values() {
            // iPXE's `${buildarch}` names.
            let buildarch = match os.arch {
                Arch::X86_64 => "x86_64",
                Arch::Aarch64 => "arm64",
            };
            if !grubs.iter().any(|g| g.buildarch == buildarch) {
                grubs.push(ArchGrub {
                    buildarch,
                    url: self.urls.os_file(&os.name, &os.grub),
                });
            }
        }
        grubs
    }

    fn appliance_context(&self) -> minijinja::Value {
        let server = &self.site.snapshot.appliance.server;
        let syslog = SocketAddr::new(self.address, server.syslog_port);
        context! {
            address => self.address.to_string(),
            base_url => self.urls.base(),
            // `inst.syslog=`: where the installer sends its log.
            syslog => syslog.to_string(),
            // The family this client came in on: `ip=` for its installer.
            family => if self.address.is_ipv6() { "ipv6" } else { "ipv4" },
            // An appliance without IPv4 serves an IPv6-only rack: its
            // installed systems need no IPv4 either.
            ipv4 => server.address.v4().is_some(),
        }
    }

    fn render(
        &self,
        template: &str,
        host: &Host,
        os: &Os,
        action: BootAction,
        token: &str,
    ) -> Result<String, RenderError> {
        let urls = Urls::new(&self.urls, host, os, token);
        let tmpl = self
            .site
            .env
            .get_template(template)
            .map_err(|e| self.site.diagnostic(&e))?;
        tmpl.render(context! {
            host => Serde(host),
            os => Serde(os),
            urls => Serde(urls),
            files => Serde(BootFiles::new(os)),
            action => Serde(action),
            appliance => self.appliance_context(),
        })
        .map_err(|e| self.site.diagnostic(&e))
    }
}

/// Every URL a template needs, computed here so templates never assemble
/// paths themselves. The kickstart and callback URLs carry the build token.
#[derive(Debug, Serialize)]
struct Urls {
    tree: String,
    kernel: String,
    initrd: String,
    ks: String,
    ipxe: String,
    /// The OS tree's GRUB over HTTP, from the repo cache: what iPXE on UEFI
    /// chains to reach the disk (its `exit` would hang or open the
    /// firmware's setup menu).
    grub: String,
    installing: String,
    installed: String,
    failed: String,
    repos: Vec<RepoUrl>,
}

/// An OS tree's GRUB for the iPXE of one architecture.
#[derive(Debug, Serialize)]
struct ArchGrub {
    buildarch: &'static str,
    url: String,
}

/// The OS's boot files as GRUB reads them over TFTP: absolute paths on
/// its network root, served from the repo cache.
#[derive(Debug, Serialize)]
struct BootFiles {
    kernel: String,
    initrd: String,
}

impl BootFiles {
    fn new(os: &Os) -> BootFiles {
        BootFiles {
            kernel: format!("/{}", urls::os_file_name(&os.name, &os.kernel)),
            initrd: format!("/{}", urls::os_file_name(&os.name, &os.initrd)),
        }
    }
}

#[derive(Debug, Serialize)]
struct RepoUrl {
    name: String,
    url: String,
}

impl Urls {
    fn new(urls: &UrlScheme, host: &Host, os: &Os, token: &str) -> Urls {
        let tree = urls.repo(&os.mirror, &os.tree);
        Urls {
            kernel: format!("{tree}{}", os.kernel),
            initrd: format!("{tree}{}", os.initrd),
            ks: urls.kickstart(host.mac, token),
            ipxe: urls.boot_script(host.mac),
            grub: urls.os_file(&os.name, &os.grub),
            installing: urls.callback(host.mac, "installing", token),
            installed: urls.callback(host.mac, "installed", token),
            failed: urls.callback(host.mac, "failed", token),
            repos: os
                .repos
                .iter()
                .map(|r| RepoUrl {
                    name: r.name.clone(),
                    url: urls.repo(&r.mirror, &r.path),
                })
                .collect(),
            tree,
        }
    }
}

fn environment(snapshot: &Snapshot) -> Result<Environment<'static>, LoadError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build();
    // The default syntax always builds; fall back to it rather than panic.
    env.set_syntax(syntax.unwrap_or_default());
    let mut diags = Vec::new();
    for (name, source) in &snapshot.templates {
        if let Err(e) = env.add_template_owned(name.clone(), source.clone()) {
            diags.push(template_diagnostic(snapshot, &e));
        }
    }
    for (name, source) in BUILT_IN {
        if !snapshot.templates.contains_key(*name)
            && let Err(e) = env.add_template(name, source)
        {
            diags.push(template_diagnostic(snapshot, &e));
        }
    }
    if diags.is_empty() {
        Ok(env)
    } else {
        Err(LoadError(diags))
    }
}

/// Places a minijinja error in its template file, with line and column.
fn template_diagnostic(snapshot: &Snapshot, e: &minijinja::Error) -> Diagnostic {
    // Without a name (a template that does not exist) the directory is the
    // place to look; the message names the template.
    let file = match e.name() {
        Some(name) => snapshot.appliance.templates_dir.join(name),
        None => snapshot.appliance.templates_dir.clone(),
    };
    let name = e.name().unwrap_or_default();
    let message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    let column = match (e.range(), snapshot.templates.get(name)) {
        (Some(range), Some(src)) => {
            let start = range.start.min(src.len());
            let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
            src.get(line_start..start)
                .map_or(1, |s| s.chars().count() as u64 + 1)
        }
        _ => 1,
    };
    Diagnostic {
        file,
        position: e.line().map(|l| (l as u64, column)),
        message,
        snippet: None,
    }
}
