//! Everything a machine's network boot asks, over every protocol:
//! ProxyDHCP's decision ([`kickstand_dhcp::Boot`]), TFTP's files
//! ([`kickstand_tftp::Source`]), and over HTTP its iPXE script, boot
//! loaders and the OS's boot files. One rule decides what a machine's next
//! boot does (the generation's [`BootDecision`] over its phase in memory),
//! written once for all three; what each protocol saw becomes an event on
//! the machine's timeline. Nothing here waits for a disk but a newly
//! minted build token, which is committed before it is handed out.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::wire_label::WireLabel;
use bytes::Bytes;
use http::{Response, StatusCode};
use kickstand_dhcp::advertise::{self, Grants};
use kickstand_dhcp::{Action, Boot, BootView, Firmware, HostBoot, HostLookup, HostStatus, Reason};
use kickstand_http::{ApiError, Body, Loader};
use kickstand_profiles::model::DhcpMode;
use kickstand_profiles::{Mac, urls};
use kickstand_render::{BootAction, UnknownAction};
use kickstand_repo::RepoProxy;
use kickstand_state::{
    Binding, Claimed, EventKind, Network, Phase, StateStore, Transition, Withheld,
};
use lru::LruCache;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::generation::{BootDecision, Generation};
use crate::hosts::{self, Fetched, ip_text, render_error, state_error};
use crate::live::{Live, lock};
use crate::metrics::{Metrics, RogueLabels};
use crate::segment::Duty;

/// A PXE client that was not answered is logged at `info` once per this
/// long, not once per packet.
const QUIET_FOR: Duration = Duration::from_secs(300);
/// A discovery report is taken only from the address that fetched the
/// discovery script within this long.
const DISCOVERY_WINDOW: Duration = Duration::from_secs(600);
/// Bound on the small in-memory tables below: a flood of forged MACs
/// pushes the least recently seen out rather than growing them.
const REMEMBERED: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");
/// Other DHCP servers remembered (and shown as metric series) at most; a
/// flood of forged offers from made-up servers is counted beyond it.
const MAX_ROGUES: usize = 32;
/// Answers to PXE clients without a profile: a rack of new machines
/// powering on at once fits the burst; a flood of forged MACs is shed.
const STRANGER_ANSWERS: kickstand_limit::Rate = kickstand_limit::Rate::per_second(50, 500);
/// Log lines about DHCP outcomes (a machine answered, or not, for the
/// first time in a while): a rack powering on is a burst of them.
const DHCP_LOG: kickstand_limit::Rate = kickstand_limit::Rate::per_second(5, 200);

/// The boot side of the daemon.
#[derive(Debug)]
pub(crate) struct Booting {
    pub(crate) live: Arc<Live>,
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) rogues: Arc<Rogues>,
    pub(crate) discovering: Arc<Discovering>,
    /// Whether this appliance answers its segment now (always, without
    /// `server.segment`).
    pub(crate) duty: Arc<Duty>,
    /// Boots served without their token, for the status page.
    pub(crate) withholdings: Arc<Withholdings>,
    /// What was logged about a PXE client, and when.
    logged: Mutex<LruCache<(Mac, Logged), Instant>>,
    /// The MACs ProxyDHCP just answered, each granted one router
    /// advertisement (`dhcp.answer_router_solicitations`).
    pub(crate) grants: Arc<Grants>,
    /// Answers to PXE clients without a profile (`unknown: local-boot` or
    /// `discover`), all of them together.
    strangers: Mutex<kickstand_limit::Flow>,
    /// Log lines about DHCP outcomes, and how many were not logged.
    dhcp_log: Mutex<(kickstand_limit::Flow, u64)>,
    /// Monotonic origin of the rate limits above.
    started: Instant,
}

impl Booting {
    pub(crate) fn new(
        live: Arc<Live>,
        store: StateStore,
        repo: RepoProxy,
        metrics: Arc<Metrics>,
        rogues: Arc<Rogues>,
        discovering: Arc<Discovering>,
        duty: Arc<Duty>,
    ) -> Booting {
        Booting {
            live,
            store,
            repo,
            metrics,
            rogues,
            discovering,
            duty,
            withholdings: Arc::default(),
            logged: Mutex::new(LruCache::new(REMEMBERED)),
            grants: Arc::default(),
            strangers: Mutex::new(kickstand_limit::Flow::new(STRANGER_ANSWERS)),
            dhcp_log: Mutex::new((kickstand_limit::Flow::new(DHCP_LOG), 0)),
            started: Instant::now(),
        }
    }

    /// What `mac`'s next network boot does, from `generation` and the
    /// host's phase (in memory: no reply waits on a disk).
    pub(crate) fn boot_for(&self, generation: &Generation, mac: Mac) -> BootDecision {
        let phase = if generation.snapshot().host(&mac).is_some() {
            self.store.phase(mac)
        } else {
            Phase::New
        };
        generation.boot_for(mac, phase)
    }

    /// Whether a PXE client without a profile may be answered now.
    fn answer_stranger(&self) -> bool {
        let answered = lock(&self.strangers).take(self.started.elapsed());
        if !answered {
            self.metrics.strangers_shed.inc();
        }
        answered
    }

    /// ProxyDHCP answered `reply`'s machine: if it is iPXE, and with
    /// `dhcp.answer_router_solicitations`, its router solicitation is
    /// answered now. Firmware's own PXE does not wait for a router, and a
    /// grant it left unused could go to the installer's kernel.
    fn grant_advertisement(&self, generation: &Generation, reply: &kickstand_dhcp::Reply) {
        if generation.appliance().dhcp.answer_router_solicitations
            && reply.firmware == Some(Firmware::Ipxe)
        {
            self.grants.grant(reply.mac);
        }
    }

    /// Whether a DHCP outcome may be logged now: `Some(n)` with the number
    /// of others not logged since the last line.
    pub(crate) fn may_log(&self) -> Option<u64> {
        let mut log = lock(&self.dhcp_log);
        if log.0.take(self.started.elapsed()) {
            Some(std::mem::take(&mut log.1))
        } else {
            log.1 += 1;
            None
        }
    }

    /// Whether what happened to a PXE client is worth a log line and an
    /// event now: once per MAC and kind per [`QUIET_FOR`].
    pub(crate) fn first_in_a_while(&self, mac: Mac, what: Logged) -> bool {
        let mut seen = lock(&self.logged);
        match seen.get(&(mac, what)) {
            Some(at) if at.elapsed() < QUIET_FOR => false,
            _ => {
                seen.put((mac, what), Instant::now());
                true
            }
        }
    }

    /// A machine's iPXE script, over HTTP or TFTP: its boot decision made
    /// into a script. A machine that is to be ignored gets none.
    pub(crate) async fn boot_script(
        &self,
        generation: &Generation,
        mac: Mac,
        peer: IpAddr,
    ) -> Result<String, ApiError> {
        self.boot_config(generation, mac, peer, Chain::Ipxe).await
    }

    /// The boot decision for `mac` made into its loader's file. Fetching
    /// the install is what moves the host to `booting`; every fetch is an
    /// event on its timeline.
    async fn boot_config(
        &self,
        generation: &Generation,
        mac: Mac,
        peer: IpAddr,
        chain: Chain,
    ) -> Result<String, ApiError> {
        let site = generation.site.to(peer);
        let decision = self.boot_for(generation, mac);
        let kind = match decision {
            BootDecision::Install => "install",
            BootDecision::LocalDisk => "local-boot",
            BootDecision::UnknownLocalBoot => "unknown-local-boot",
            BootDecision::Discover => "discover",
            BootDecision::Ignore => "none",
        };
        let render = |action, token: &str| match chain {
            Chain::Ipxe => site.ipxe(&mac, action, token),
            Chain::Grub => site.grub(&mac, action, token),
        };
        let script = match decision {
            // A new token waits for its commit: a token handed out that the
            // disk never saw would be refused after a restart. A live one
            // (every later fetch of the script) waits for nothing.
            // The token goes only to the address the host's own DHCP
            // exchange gave it; a new one waits for its commit (a token
            // handed out that the disk never saw would be refused after a
            // restart), a live one for nothing.
            BootDecision::Install => {
                let handed = self
                    .store
                    .hand_token(mac, peer, binding(generation), SystemTime::now())
                    .map_err(state_error)?;
                let token = match handed {
                    Ok(token) => token.await.map_err(state_error)?,
                    Err(why) => return Ok(self.withheld(generation, mac, peer, why, chain)),
                };
                match token {
                    Some(token) => {
                        let script =
                            render(BootAction::Install, token.as_str()).map_err(render_error)?;
                        hosts::transition(&self.store, mac, Transition::BootFetched, Some(peer));
                        hosts::record(
                            &self.store,
                            generation,
                            mac,
                            EventKind::BootScript,
                            json!({"script": "install", "loader": chain.name(), "ip": ip_text(peer)}),
                        );
                        script
                    }
                    // It finished or failed a moment ago: its disk, then.
                    None => self.local_disk(generation, mac, peer, chain)?,
                }
            }
            BootDecision::LocalDisk => self.local_disk(generation, mac, peer, chain)?,
            // A machine without a profile has no GRUB config of its own
            // (its iPXE chains GRUB to reach the disk): the generic config
            // that asked for it boots the disk when it is missing. Serving
            // the generic one here would make it chain to itself.
            BootDecision::UnknownLocalBoot | BootDecision::Discover if chain == Chain::Grub => {
                return Err(ApiError::NotFound(format!("no GRUB config for {mac}")));
            }
            BootDecision::UnknownLocalBoot => site
                .unknown_ipxe(&mac, UnknownAction::LocalDisk)
                .map_err(render_error)?,
            BootDecision::Discover => {
                self.discovering.sent(mac, peer);
                site.unknown_ipxe(&mac, UnknownAction::Discover)
                    .map_err(render_error)?
            }
            BootDecision::Ignore => {
                self.metrics.unknown_hosts.inc();
                return Err(ApiError::NoProfile(mac));
            }
        };
        Metrics::named(&self.metrics.boot_scripts, kind);
        Ok(script)
    }

    /// The script for a boot that asked from an address the host's token
    /// does not go to: it says why on the machine's console, and the
    /// attempt is an event, a metric and a warning on the status page. The
    /// host's phase does not move: an anonymous fetch changes nothing.
    fn withheld(
        &self,
        generation: &Generation,
        mac: Mac,
        peer: IpAddr,
        why: Withheld,
        chain: Chain,
    ) -> String {
        Metrics::named(&self.metrics.tokens_withheld, why.name());
        self.withholdings.note(mac, peer, why);
        let mut detail = json!({"ip": ip_text(peer), "reason": why.name()});
        if let Withheld::OtherAddress { claimed } = why {
            detail["claimed"] = ip_text(claimed).into();
        }
        hosts::record(
            &self.store,
            generation,
            mac,
            EventKind::TokenWithheld,
            detail,
        );
        if let Some(unlogged) = self.may_log() {
            warn!(%mac, %peer, reason = %why, unlogged, "boot script served without the build token");
        }
        let why = why.to_string();
        match chain {
            Chain::Ipxe => kickstand_render::Site::withheld_ipxe(&mac, &why),
            Chain::Grub => kickstand_render::Site::withheld_grub(&mac, &why),
        }
    }

    /// Notes the address `mac`'s own DHCP exchange on `network` gave it.
    /// A second address in one build holds the host: an alarm for the
    /// operator. Its installer's on its install VLAN is not a second one.
    pub(crate) fn claimed(&self, mac: Mac, ip: IpAddr, network: Network) {
        match self.store.claim(mac, ip, network, SystemTime::now()) {
            Claimed::Conflict { first, second } => {
                Metrics::named(&self.metrics.tokens_withheld, "conflict");
                self.withholdings
                    .note(mac, second, Withheld::Conflict { first, second });
                warn!(%mac, %first, %second, "two addresses claim one MAC: possible spoofing; the host is held until an operator re-arms it");
            }
            Claimed::Moved { from, to } => {
                info!(%mac, %from, %to, "the installer took its address on the host's boot_vlan: its build token goes there now");
            }
            Claimed::First | Claimed::Again | Claimed::Added(_) | Claimed::NotBuilding => {}
        }
    }

    fn local_disk(
        &self,
        generation: &Generation,
        mac: Mac,
        peer: IpAddr,
        chain: Chain,
    ) -> Result<String, ApiError> {
        let site = generation.site.to(peer);
        let (script, how) = match chain {
            Chain::Ipxe => (site.ipxe(&mac, BootAction::LocalDisk, ""), "exit"),
            Chain::Grub => (site.grub(&mac, BootAction::LocalDisk, ""), "chainload"),
        };
        let script = script.map_err(render_error)?;
        hosts::record(
            &self.store,
            generation,
            mac,
            EventKind::BootScript,
            json!({"script": "local-boot", "loader": chain.name(), "ip": ip_text(peer)}),
        );
        hosts::record(
            &self.store,
            generation,
            mac,
            EventKind::LocalBoot,
            json!({"how": how, "ip": ip_text(peer)}),
        );
        Ok(script)
    }

    /// `GET /boot/<file>`: a boot loader from the TFTP root (UEFI HTTP
    /// boot), resolved by TFTP's rules.
    pub(crate) async fn loader(
        &self,
        generation: &Generation,
        file: &str,
        peer: SocketAddr,
    ) -> Result<Loader, ApiError> {
        let root = generation.appliance().tftp_root.clone();
        let not_found = || ApiError::NotFound("no such boot loader".into());
        // TFTP's own rules, so the two protocols refuse the same names.
        let name = kickstand_tftp::normalize(file.as_bytes()).map_err(|_| not_found())?;
        let (opened, len) =
            tokio::task::spawn_blocking(move || kickstand_tftp::path::open_file(&root, &name))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|_| not_found())?;
        if let Some(mac) = hosts::fetched(&self.store, peer.ip(), Fetched::Loader(file), None) {
            hosts::transition(&self.store, mac, Transition::BootFetched, Some(peer.ip()));
        }
        Ok(Loader {
            file: tokio::fs::File::from_std(opened),
            len,
        })
    }

    /// `GET|HEAD /os/<os>/<path>`: an OS's boot file from the repo cache.
    pub(crate) async fn os_file(
        &self,
        generation: &Generation,
        os: &str,
        path: &str,
        req: http::Request<()>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Some((mirror, repo_path)) = generation.os_boot_file(os, path) else {
            return ApiError::NotFound("no such boot file".into()).into_response();
        };
        hosts::fetched(
            &self.store,
            peer.ip(),
            Fetched::Loader(&format!("{os}/{path}")),
            None,
        );
        crate::installs::serve_repo(
            &self.store,
            &self.repo,
            generation,
            &mirror,
            &repo_path,
            req,
            peer,
        )
        .await
    }

    /// A boot file a known host pulls over TFTP joins its install's file
    /// list (`cache warm --like`), and its installer images its timeline.
    fn note_boot_file(&self, peer: IpAddr, mirror: &str, repo_path: &str) {
        if let Some(mac) = hosts::fetched(&self.store, peer, Fetched::File(repo_path), Some("tftp"))
        {
            self.repo.note_pull(&mac.to_string(), mirror, repo_path);
        }
    }

    /// Another server's boot offer, seen over DHCPv4 or found by the
    /// DHCPv6 probe ([`crate::probe6`]).
    pub(crate) fn rogue_seen(&self, offer: &kickstand_dhcp::RogueOffer) {
        if self.rogues.note(offer, &self.metrics) {
            // Once per server, not per offer.
            warn!(
                server = %offer.server,
                offered = WireLabel::new(&offer.offered).as_str(),
                client = %offer.client,
                "another server offers boot information on this segment: it can take machines away from Kickstand"
            );
        }
    }

    /// What TFTP serves for `path`, from `generation`:
    /// - `boot/<mac>.ipxe`, for iPXE builds without HTTP: the same script
    ///   the HTTP route serves;
    /// - GRUB's configs (`grub.cfg`, `grub.cfg-01-<mac>`), where GRUB
    ///   builds look for them;
    /// - `os/<os>/<path>`: an OS's shim, GRUB, kernel and initrd, from the
    ///   repo cache (one download through the office proxy for the rack);
    /// - anything else from the TFTP root.
    async fn tftp_content(
        &self,
        generation: &Generation,
        path: &str,
        peer: SocketAddr,
    ) -> Result<kickstand_tftp::Content, kickstand_tftp::OpenError> {
        use kickstand_tftp::{Content, OpenError};
        let text = |text: String| Content::Bytes(Bytes::from(text));
        let root = || Content::UnderRoot(generation.appliance().tftp_root.clone());
        if let Some(Ok(mac)) = urls::parse_boot_script_name(path) {
            return Ok(self
                .boot_script(generation, mac, peer.ip())
                .await
                .map_or_else(|_| root(), text));
        }
        match urls::parse_grub_config_name(path) {
            Some(urls::GrubConfig::Host(mac)) => {
                return self
                    .boot_config(generation, mac, peer.ip(), Chain::Grub)
                    .await
                    .map(text)
                    .map_err(|_| OpenError::NotFound);
            }
            Some(urls::GrubConfig::Generic) => {
                return generation
                    .site
                    .to(peer.ip())
                    .grub_chain()
                    .map(text)
                    .map_err(|_| OpenError::NotFound);
            }
            None => {}
        }
        let Some((os, file)) = urls::parse_os_file_name(path) else {
            return Ok(root());
        };
        let Some((mirror, repo_path)) = generation.os_boot_file(os, file) else {
            return Err(OpenError::NotFound);
        };
        self.note_boot_file(peer.ip(), &mirror, &repo_path);
        match self
            .repo
            .open_file_with(&generation.upstream, &mirror, &repo_path)
            .await
        {
            Ok(kickstand_repo::Opened::Complete { file, offset, len }) => Ok(Content::File {
                file,
                offset,
                size: len,
            }),
            Ok(kickstand_repo::Opened::Arriving(arriving)) => {
                Ok(Content::Growing(Box::new(FromCache(arriving))))
            }
            Err(e) => {
                warn!(%peer, file = path, error = %e, "boot file not available from the repo cache");
                Err(match kickstand_repo::status_for(&e) {
                    StatusCode::NOT_FOUND => OpenError::NotFound,
                    _ => OpenError::Io(std::io::Error::other(e.to_string())),
                })
            }
        }
    }
}

/// How the address a host's token goes to is learnt: from its DHCP
/// exchange, or, where the appliance sees none (`dhcp.mode: off`), from
/// the first fetch of its boot script.
fn binding(generation: &Generation) -> Binding {
    match generation.appliance().dhcp.mode {
        DhcpMode::Off => Binding::FirstFetch,
        DhcpMode::Proxy | DhcpMode::Full => Binding::Dhcp,
    }
}

/// What a log line about a PXE client said: each is logged once in a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Logged {
    Answered,
    NotAnswered,
    Advertised,
    /// The same two for DHCPv6, logged apart from DHCPv4's.
    AnsweredV6,
    NotAnsweredV6,
}

/// The loader a boot config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    Ipxe,
    Grub,
}

impl Chain {
    fn name(self) -> &'static str {
        match self {
            Chain::Ipxe => "ipxe",
            Chain::Grub => "grub",
        }
    }
}

impl Boot for Booting {
    type View<'a> = PacketView<'a>;

    /// One generation for the packets read together.
    fn view(&self) -> PacketView<'_> {
        PacketView {
            booting: self,
            generation: self.live.current(),
        }
    }

    fn answering(&self) -> bool {
        self.duty.answering()
    }

    fn rogue(&self, offer: &kickstand_dhcp::RogueOffer) {
        self.rogue_seen(offer);
    }

    fn solicited(&self, from: Ipv6Addr, outcome: &advertise::Outcome) {
        self.metrics.dhcp.observe_solicitation(outcome);
        match outcome {
            advertise::Outcome::Answer(mac) => {
                if self.first_in_a_while(*mac, Logged::Advertised)
                    && let Some(unlogged) = self.may_log()
                {
                    info!(%mac, %from, unlogged, "router solicitation answered: its iPXE need not wait for an IPv6 router");
                }
            }
            advertise::Outcome::Ignore(why) => {
                debug!(%from, %why, "router solicitation ignored");
            }
        }
    }
}

/// What ProxyDHCP decides a batch of packets with: one generation, and the
/// host states in memory.
pub(crate) struct PacketView<'a> {
    booting: &'a Booting,
    generation: Arc<Generation>,
}

impl PacketView<'_> {
    /// The generation these packets are decided with.
    pub(crate) fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }
}

impl HostLookup for PacketView<'_> {
    fn lookup(&self, mac: Mac) -> HostStatus {
        let generation = &self.generation;
        let profiled = || {
            let snapshot = generation.snapshot();
            let host = snapshot.host(&mac)?;
            let os = snapshot.oses.get(&host.os)?;
            let shim = urls::os_file_name(&os.name, &os.shim);
            Some(HostBoot::profiled(host.boot_loader, os.arch, shim))
        };
        match self.booting.boot_for(generation, mac) {
            BootDecision::Install => profiled().map_or(HostStatus::Unknown, HostStatus::Netboot),
            BootDecision::LocalDisk => {
                profiled().map_or(HostStatus::Unknown, HostStatus::LocalDisk)
            }
            // Answers to machines without a profile share one rate: a flood
            // of forged MACs costs a bounded number of replies, and the
            // rest are counted, not answered.
            BootDecision::UnknownLocalBoot | BootDecision::Discover => {
                if self.booting.answer_stranger() {
                    HostStatus::Netboot(HostBoot::ipxe())
                } else {
                    HostStatus::Unknown
                }
            }
            BootDecision::Ignore => HostStatus::Unknown,
        }
    }
}

/// Which of `mac`'s networks a DHCP exchange that arrived on `interface`
/// is on: its install VLAN when its profile's `boot_vlan` is the VLAN
/// `server.interface_vlans` names for that interface.
fn claim_network(generation: &Generation, mac: Mac, interface: Option<&str>) -> Network {
    let snapshot = generation.snapshot();
    let boot_vlan = snapshot.host(&mac).and_then(|h| h.boot_vlan);
    let arrived_on = interface.and_then(|i| snapshot.appliance.server.interface_vlans.get(i));
    match (boot_vlan, arrived_on) {
        (Some(wanted), Some(vlan)) if wanted == *vlan => Network::InstallVlan,
        _ => Network::Boot,
    }
}

impl BootView for PacketView<'_> {
    fn context(&self) -> &kickstand_dhcp::Context {
        &self.generation.dhcp
    }

    fn profiled(&self, mac: Mac) -> bool {
        self.generation.snapshot().host(&mac).is_some()
    }

    fn decided(&self, mac: Option<Mac>, seen: &kickstand_dhcp::Seen<'_>, action: &Action) {
        let booting = self.booting;
        booting.metrics.dhcp.observe(action);
        let Some(mac) = mac else { return };
        let generation = &self.generation;
        let store = &booting.store;
        let known = generation.snapshot().host(&mac).is_some();
        let network = claim_network(generation, mac, seen.interface);
        match action {
            Action::Respond(reply) if known => {
                booting.grant_advertisement(generation, reply);
                if let Some(leased) = reply.leased {
                    booting.claimed(mac, IpAddr::V4(leased), network);
                }
                let detail = json!({
                    "boot_file": reply.boot_file,
                    "arch": reply.firmware.map(|f| f.name()),
                    "client_arch": reply.client_arch,
                });
                // In memory now, on disk with the writer's next batch: the
                // reply never waits for either.
                // A DISCOVER's requested address is a wish, not a lease:
                // the host's address is learnt only from its exchange.
                hosts::transition(store, mac, Transition::SeenByDhcp, None);
                if booting.first_in_a_while(mac, Logged::Answered)
                    && let Some(unlogged) = booting.may_log()
                {
                    info!(%mac, boot_file = reply.boot_file.as_deref().unwrap_or("-"), unlogged, "dhcp: answered");
                }
                hosts::record(store, generation, mac, EventKind::DhcpOffer, detail);
            }
            Action::Respond(reply) => booting.grant_advertisement(generation, reply),
            // The machine took another server's address offer: where it
            // will be, the one address its build token goes to.
            Action::Ignore(Reason::ForOtherServer(_)) if known => {
                if let Some(requested) = seen.requested {
                    booting.claimed(mac, IpAddr::V4(requested), network);
                }
                hosts::transition(store, mac, Transition::SeenByDhcp, None);
            }
            // The holder gave its lease back (in use elsewhere): the lease
            // it takes next is its address, not a second one. A token
            // already handed out stays bound where it went.
            Action::Ignore(Reason::Declined(_)) if known => store.release_claim(mac),
            Action::Ignore(
                reason @ (Reason::UnknownHost(_)
                | Reason::Installed(_)
                | Reason::UnsupportedArch(_)
                | Reason::MissingArch),
            ) => {
                // Once per machine per few minutes, and within a rate: an
                // operator should never need debug logs to learn why a
                // machine was not served, and a flood of forged MACs must
                // not become a flood of log lines.
                if !booting.first_in_a_while(mac, Logged::NotAnswered) {
                    return;
                }
                let name = match reason {
                    Reason::UnknownHost(_) => "no-profile",
                    Reason::Installed(_) => "installed",
                    Reason::UnsupportedArch(_) => "unsupported-arch",
                    _ => "no-arch",
                };
                if let Some(unlogged) = booting.may_log() {
                    info!(%mac, from = %seen.from, %reason, unlogged, "dhcp: PXE client not answered");
                }
                hosts::record(
                    store,
                    generation,
                    mac,
                    EventKind::DhcpIgnored,
                    json!({"reason": name, "detail": reason.to_string()}),
                );
                if matches!(reason, Reason::Installed(_)) {
                    hosts::record(
                        store,
                        generation,
                        mac,
                        EventKind::LocalBoot,
                        json!({"how": "not-answered"}),
                    );
                }
            }
            Action::Ignore(_) => {}
        }
    }
}

impl kickstand_tftp::Source for Booting {
    fn answering(&self) -> bool {
        self.duty.answering()
    }

    /// One generation per request: a reload that moves `tftp.root` takes
    /// effect for the next transfer.
    fn open<'a>(
        &'a self,
        path: &'a str,
        peer: SocketAddr,
    ) -> kickstand_tftp::BoxFuture<'a, Result<kickstand_tftp::Content, kickstand_tftp::OpenError>>
    {
        Box::pin(async move {
            let generation = self.live.current();
            self.tftp_content(&generation, path, peer).await
        })
    }

    fn transfer_ended(&self, peer: SocketAddr, report: &kickstand_tftp::TransferReport) {
        self.metrics.tftp.observe(report);
        let Some(mac) = self.store.host_by_ip(peer.ip()) else {
            return;
        };
        let mut detail = json!({
            "file": report.file,
            "bytes": report.bytes,
            "duration_ms": report.duration.as_millis() as u64,
            "outcome": report.outcome.name(),
            "ip": peer.ip().to_string(),
        });
        if let kickstand_tftp::TransferOutcome::ClientAborted { code, .. } = report.outcome {
            detail["error_code"] = code.into();
        }
        let loader = report.outcome == kickstand_tftp::TransferOutcome::Complete
            && urls::parse_boot_script_name(&report.file).is_none();
        self.store
            .record(mac, EventKind::TftpTransfer, detail, SystemTime::now())
            .value();
        if loader {
            hosts::transition(&self.store, mac, Transition::BootFetched, Some(peer.ip()));
        }
    }
}

/// A boot file still downloading into the repo cache, as TFTP reads it.
#[derive(Debug)]
struct FromCache(kickstand_repo::Arriving);

impl kickstand_tftp::Growing for FromCache {
    fn size(&self) -> u64 {
        self.0.len()
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// Machines sent the discovery script: from where, and when. A report is
/// taken only from the address its script went to.
#[derive(Debug)]
pub(crate) struct Discovering(Mutex<LruCache<Mac, (IpAddr, Instant)>>);

impl Default for Discovering {
    fn default() -> Discovering {
        Discovering(Mutex::new(LruCache::new(REMEMBERED)))
    }
}

impl Discovering {
    /// Notes that `mac` was sent the discovery script at `ip`.
    fn sent(&self, mac: Mac, ip: IpAddr) {
        lock(&self.0).put(mac, (ip, Instant::now()));
    }

    /// Whether a report for `mac` from `ip` follows a discovery script
    /// that machine fetched from there.
    pub(crate) fn may_report(&self, mac: Mac, ip: IpAddr) -> bool {
        lock(&self.0)
            .peek(&mac)
            .is_some_and(|(from, at)| *from == ip && at.elapsed() < DISCOVERY_WINDOW)
    }
}

/// Boots served without their build token lately (and spoofing alarms),
/// for the status page's warnings: the newest [`MAX_WITHHELD`], each shown
/// for [`WITHHELD_SHOWN`]. A flood of fetches from strangers keeps the list
/// at its bound; the metric and the host's timeline count every one.
#[derive(Debug, Default)]
pub(crate) struct Withholdings(Mutex<std::collections::VecDeque<Withholding>>);

const MAX_WITHHELD: usize = 32;
const WITHHELD_SHOWN: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Withholding {
    mac: Mac,
    ip: IpAddr,
    why: Withheld,
    times: u64,
    last_seen: SystemTime,
    at: Instant,
}

impl Withholdings {
    fn note(&self, mac: Mac, ip: IpAddr, why: Withheld) {
        let mut list = lock(&self.0);
        let same = |w: &Withholding| w.mac == mac && w.ip == ip && w.why == why;
        let times = match list.iter().position(same) {
            Some(i) => list.remove(i).map_or(1, |w| w.times + 1),
            None => 1,
        };
        if list.len() >= MAX_WITHHELD {
            list.pop_front();
        }
        list.push_back(Withholding {
            mac,
            ip,
            why,
            times,
            last_seen: SystemTime::now(),
            at: Instant::now(),
        });
    }

    /// The recent ones, newest first, as the status document shows them.
    pub(crate) fn list(&self) -> Vec<serde_json::Value> {
        let mut list = lock(&self.0);
        list.retain(|w| w.at.elapsed() < WITHHELD_SHOWN);
        list.iter()
            .rev()
            .map(|w| {
                let mut row = json!({
                    "mac": w.mac.to_string(),
                    "ip": ip_text(w.ip),
                    "reason": w.why.name(),
                    "message": w.why.to_string(),
                    "times": w.times,
                    "last_seen": humantime::format_rfc3339_seconds(w.last_seen).to_string(),
                });
                if let Withheld::Conflict { first, second } = w.why {
                    row["addresses"] = json!([ip_text(first), ip_text(second)]);
                }
                row
            })
            .collect()
    }
}

/// Other servers that offered boot information to PXE clients on this
/// segment (over DHCPv4) or to the appliance's probe (over DHCPv6), until
/// they have been quiet for `dhcp.rogue_forget_after`.
#[derive(Debug, Default)]
pub(crate) struct Rogues {
    seen: Mutex<std::collections::HashMap<IpAddr, Rogue>>,
}

#[derive(Debug, Clone)]
struct Rogue {
    offered: WireLabel,
    client: Mac,
    last_seen: SystemTime,
    at: Instant,
}

impl Rogues {
    /// Records an offer and keeps its metric series: whether the server is
    /// new (to be logged). Past [`MAX_ROGUES`] servers a new one is only
    /// counted; a server's series follows what it offers now, so no
    /// sequence of offers grows the metrics.
    fn note(&self, offer: &kickstand_dhcp::RogueOffer, metrics: &Metrics) -> bool {
        let mut seen = lock(&self.seen);
        let previous = seen.get(&offer.server).map(|r| r.offered.clone());
        if previous.is_none() && seen.len() >= MAX_ROGUES {
            metrics.rogue_unlisted.inc();
            return false;
        }
        let offered = WireLabel::new(&offer.offered);
        if let Some(old) = previous.as_ref().filter(|old| **old != offered) {
            metrics
                .rogue_dhcp
                .remove(&RogueLabels::new(offer.server, old.clone()));
        }
        metrics
            .rogue_dhcp
            .get_or_create(&RogueLabels::new(offer.server, offered.clone()))
            .set(1);
        seen.insert(
            offer.server,
            Rogue {
                offered,
                client: offer.client,
                last_seen: SystemTime::now(),
                at: Instant::now(),
            },
        );
        previous.is_none()
    }

    /// The servers seen within `forget_after`, each with what it offered;
    /// the quiet ones are forgotten (and their metric removed).
    pub(crate) fn list(&self, forget_after: Duration, metrics: &Metrics) -> Vec<serde_json::Value> {
        let mut seen = lock(&self.seen);
        seen.retain(|server, r| {
            let keep = r.at.elapsed() < forget_after;
            if !keep {
                info!(%server, "the other DHCP server offering boot files has gone quiet");
                metrics
                    .rogue_dhcp
                    .remove(&RogueLabels::new(*server, r.offered.clone()));
            }
            keep
        });
        seen.iter()
            .map(|(server, r)| {
                json!({
                    "server": server.to_string(),
                    "offered": r.offered.as_str(),
                    "client": r.client.to_string(),
                    "last_seen": humantime::format_rfc3339_seconds(r.last_seen).to_string(),
                })
            })
            .collect()
    }
}
