//! Power control through the hosts' BMCs, for the operator: `kickstand
//! power`, `rearm --reboot` and `install` ask here over HTTPS, one host a
//! request. Each BMC call is bounded twice — by its timeout, and by a
//! share of [`SLOTS`] calls at once — so a rack of dead BMCs costs slots,
//! never the daemon, and nothing here is on a boot's reply path. Every
//! call ends on the host's timeline, and (by the HTTP front) in the audit
//! log. The status page's power column is a poll ([`Power::poll`]) every
//! `power.poll_interval` with [`POLL_SLOTS`] calls at once, kept in
//! memory: a view never waits for a BMC.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kickstand_bmc::{BootMode, PowerAction, PowerState};
use kickstand_http::route::PowerVerb;
use kickstand_http::{ApiError, Reply};
use kickstand_profiles::Mac;
use kickstand_profiles::model::{Arch, Bmc, BmcDriver};
use kickstand_state::{Event, EventKind, Phase, StateStore};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::generation::Generation;
use crate::live::{Live, lock};
use crate::tls;

/// BMC calls in flight at once, all hosts together: a rack-wide
/// `install` or a status poll never opens more.
const SLOTS: usize = 16;

/// One BMC call, connection included. BMCs are slow (a Redfish reset
/// answers in seconds on some); one that has not answered by then is
/// reported, not waited for.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// What the operator asks along with the verb.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerRequest {
    /// The next boot, and only that one, from the network first.
    #[serde(default)]
    pxe: bool,
    /// The operator confirmed cutting the power of an installed host.
    #[serde(default)]
    yes: bool,
}

/// How often a daemon with `power.poll_interval: off` looks whether a
/// reload turned it on.
const POLL_OFF_RECHECK: Duration = Duration::from_secs(60);

/// Status reads in flight at once: apart from [`SLOTS`], so a slow poll of
/// a big rack never holds up an operator's action.
const POLL_SLOTS: usize = 8;

/// A host's power as last read, for the status page and `/api/hosts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PowerView {
    /// The BMC's address (never its credentials).
    pub(crate) bmc: String,
    /// `on`, `off` or `changing`; `None` until read, or when the read failed.
    pub(crate) state: Option<String>,
    /// Why the last read failed.
    pub(crate) error: Option<String>,
    /// When it was read (UTC).
    pub(crate) read_at: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Power {
    store: StateStore,
    slots: Arc<Semaphore>,
    poll_slots: Arc<Semaphore>,
    timeout: Duration,
    /// The last power state read of each host with a BMC.
    states: Mutex<HashMap<Mac, PowerView>>,
}

impl Power {
    pub(crate) fn new(store: StateStore) -> Power {
        Power {
            store,
            slots: Arc::new(Semaphore::new(SLOTS)),
            poll_slots: Arc::new(Semaphore::new(POLL_SLOTS)),
            timeout: CALL_TIMEOUT,
            states: Mutex::default(),
        }
    }

    /// The power of `mac` as last read; `None` for a host without a BMC.
    pub(crate) fn view(&self, mac: Mac) -> Option<PowerView> {
        lock(&self.states).get(&mac).cloned()
    }

    /// Reads every BMC's power state every `power.poll_interval` (a round
    /// that takes longer, with dead BMCs, delays the next), until shutdown.
    pub(crate) async fn poll(self: Arc<Self>, live: Arc<Live>, shutdown: CancellationToken) {
        loop {
            let generation = live.current();
            let Some(every) = generation.appliance().power_poll else {
                lock(&self.states).clear();
                tokio::select! {
                    () = tokio::time::sleep(POLL_OFF_RECHECK) => continue,
                    () = shutdown.cancelled() => return,
                }
            };
            let bmcs: Vec<(Mac, Bmc)> = generation
                .snapshot()
                .hosts
                .values()
                .filter_map(|h| Some((h.mac, h.bmc.clone()?)))
                .collect();
            {
                // Hosts that lost their BMC go; new ones show as not read yet.
                let mut states = lock(&self.states);
                let with_bmc: HashSet<Mac> = bmcs.iter().map(|(mac, _)| *mac).collect();
                states.retain(|mac, _| with_bmc.contains(mac));
                for (mac, bmc) in &bmcs {
                    states.entry(*mac).or_insert_with(|| PowerView {
                        bmc: bmc.address(),
                        state: None,
                        error: None,
                        read_at: None,
                    });
                }
            }
            let mut reads = tokio::task::JoinSet::new();
            for (mac, bmc) in bmcs {
                let power = self.clone();
                reads.spawn(async move {
                    let slot = power.poll_slots.clone().acquire_owned().await;
                    let read = power.call(&bmc, None, None, slot.ok()).await;
                    // A call without an action always answers a state.
                    power.remember(mac, &bmc, read.map(|s| s.unwrap_or(PowerState::Changing)));
                });
            }
            tokio::select! {
                _ = async { while reads.join_next().await.is_some() {} } => {}
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn remember(&self, mac: Mac, bmc: &Bmc, read: Result<PowerState, CallError>) {
        let (state, error) = match read {
            Ok(state) => (Some(state.as_str().to_owned()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let view = PowerView {
            bmc: bmc.address(),
            state,
            error,
            read_at: Some(crate::hosts::stamp(SystemTime::now())),
        };
        lock(&self.states).insert(mac, view);
    }

    /// `POST /api/hosts/<mac>/power/<verb>`.
    pub(crate) async fn act(
        &self,
        generation: &Generation,
        mac: Mac,
        verb: PowerVerb,
        body: &[u8],
        peer: IpAddr,
    ) -> Result<Reply, ApiError> {
        let req: PowerRequest = if body.is_empty() {
            PowerRequest::default()
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::BadRequest(format!("power wants {{\"pxe\": bool, \"yes\": bool}}: {e}"))
            })?
        };
        let Some(host) = generation.snapshot().host(&mac) else {
            return Err(ApiError::NoProfile(mac));
        };
        let name = &host.hostname;
        let Some(bmc) = &host.bmc else {
            return Err(ApiError::Conflict(format!(
                "{name} ({mac}) has no bmc: in its profile; give it one (README.md, \"Power control\") or power it by hand"
            )));
        };
        let action = match verb {
            PowerVerb::Status => None,
            PowerVerb::On => Some(PowerAction::On),
            PowerVerb::Off => Some(PowerAction::Off),
            PowerVerb::Cycle => Some(PowerAction::Cycle),
        };
        if req.pxe && !matches!(action, Some(PowerAction::On | PowerAction::Cycle)) {
            return Err(ApiError::BadRequest(format!(
                "--pxe sets the next boot, so it goes with `on` or `cycle`, not `{}`",
                verb.as_str()
            )));
        }
        let cuts_power = matches!(action, Some(PowerAction::Off | PowerAction::Cycle));
        if cuts_power && !req.yes && self.store.phase(mac) == Phase::Installed {
            return Err(ApiError::Conflict(format!(
                "{name} is installed and may be running: `power {}` cuts its power without a shutdown; confirm with --yes",
                verb.as_str()
            )));
        }
        let mode = req
            .pxe
            .then(|| boot_mode(host.arch, &self.store.recent(mac)));
        let done = self.call(bmc, action, mode, None).await;
        let mut detail = json!({
            "action": verb.as_str(),
            "pxe": req.pxe,
            "bmc": bmc.address(),
        });
        match &done {
            Ok(Some(state)) => detail["state"] = json!(state.as_str()),
            Ok(None) => {}
            Err(e) => detail["error"] = json!(e.to_string()),
        }
        self.store
            .record(mac, EventKind::Power, detail, SystemTime::now())
            .value();
        match (&done, action) {
            (Ok(Some(state)), _) => self.remember(mac, bmc, Ok(*state)),
            (Ok(None), Some(PowerAction::Off)) => self.remember(mac, bmc, Ok(PowerState::Off)),
            (Ok(None), Some(_)) => self.remember(mac, bmc, Ok(PowerState::On)),
            _ => {}
        }
        let state = done.map_err(|e| {
            let e = format!("{name} BMC {}: {e}", bmc.address());
            warn!(%mac, hostname = %name, action = verb.as_str(), error = %e, "power action failed");
            ApiError::BadGateway(e)
        })?;
        if action.is_some() {
            info!(%mac, hostname = %name, action = verb.as_str(), pxe = req.pxe, operator = %peer, "power");
        }
        Ok(Reply::Json(json!({
            "mac": mac.to_string(),
            "hostname": name,
            "action": verb.as_str(),
            "pxe": req.pxe,
            "boot_mode": mode.map(|m| match m {
                BootMode::Uefi => "uefi",
                BootMode::Legacy => "legacy",
            }),
            "state": state.map(PowerState::as_str),
        })))
    }

    /// The BMC calls of one request, in a slot (one of [`SLOTS`] unless it
    /// holds one): the one-time network boot first (a reset must find it
    /// set), then the power action, or the state when there is none.
    async fn call(
        &self,
        bmc: &Bmc,
        action: Option<PowerAction>,
        pxe: Option<BootMode>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Option<PowerState>, CallError> {
        let client = connect(bmc, self.timeout)?;
        let _slot = match slot {
            Some(slot) => slot,
            None => self
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| CallError::Setup("shutting down".into()))?,
        };
        if let Some(mode) = pxe {
            client.boot_pxe_once(mode).await?;
        }
        match action {
            Some(action) => client.power(action).await.map(|()| None),
            None => client.power_state().await.map(Some),
        }
        .map_err(CallError::Bmc)
    }
}

/// Why a power call failed: before the BMC was asked (its password file,
/// its CA file), or by the BMC's answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Bmc(#[from] kickstand_bmc::Error),
}

/// The driver for `bmc`, its password read from its file now (a new
/// password needs no reload).
fn connect(bmc: &Bmc, timeout: Duration) -> Result<kickstand_bmc::Bmc, CallError> {
    let password = kickstand_profiles::read_secret(&bmc.password_file)
        .map_err(|e| CallError::Setup(format!("password_file {e}")))?;
    let credentials = kickstand_bmc::Credentials {
        username: bmc.username.clone(),
        password: kickstand_bmc::Password::new(password),
    };
    Ok(match &bmc.driver {
        BmcDriver::Redfish { base, system, tls } => {
            let tls = tls::bmc_client(tls).map_err(|e| CallError::Setup(format!("tls: {e:#}")))?;
            kickstand_bmc::Bmc::Redfish(kickstand_bmc::redfish::Endpoint {
                base: base.clone(),
                system: system.clone(),
                credentials,
                tls,
                timeout,
            })
        }
        BmcDriver::Ipmi {
            host,
            port,
            cipher_suite,
        } => kickstand_bmc::Bmc::Ipmi(kickstand_bmc::ipmi::Endpoint {
            host: host.clone(),
            port: *port,
            credentials,
            cipher_suite: *cipher_suite,
            timeout,
        }),
    })
}

/// The firmware mode of a one-time network boot: the one the host last
/// asked ProxyDHCP from (its client architecture, 0 being BIOS, as its
/// firmware or the iPXE on top reported it). An ARM64 host, or one never
/// seen, boots UEFI: what servers ship with.
fn boot_mode(arch: Arch, recent: &[Event]) -> BootMode {
    let seen = recent
        .iter()
        .rev()
        .filter(|e| e.kind == EventKind::DhcpOffer)
        .find_map(|e| e.detail.get("client_arch")?.as_u64())
        .map(|arch| {
            if arch == 0 {
                BootMode::Legacy
            } else {
                BootMode::Uefi
            }
        });
    match arch {
        Arch::Aarch64 => BootMode::Uefi,
        Arch::X86_64 => seen.unwrap_or(BootMode::Uefi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(client_arch: Option<u16>) -> Event {
        Event {
            id: 1,
            time: SystemTime::UNIX_EPOCH,
            mac: "52:54:00:10:00:07".parse().expect("mac"),
            appliance: "a".into(),
            kind: EventKind::DhcpOffer,
            detail: json!({"arch": "ipxe", "client_arch": client_arch}),
        }
    }

    /// The newest offer's client architecture decides, iPXE's too: an
    /// iPXE ROM on BIOS reports 0.
    #[test]
    fn the_boot_mode_is_the_firmware_the_host_last_reported() {
        let bios = [offer(Some(7)), offer(Some(0))];
        assert_eq!(boot_mode(Arch::X86_64, &bios), BootMode::Legacy);
        let uefi = [offer(Some(0)), offer(Some(7))];
        assert_eq!(boot_mode(Arch::X86_64, &uefi), BootMode::Uefi);
        assert_eq!(
            boot_mode(Arch::X86_64, &[offer(None)]),
            BootMode::Uefi,
            "unsaid"
        );
        assert_eq!(boot_mode(Arch::X86_64, &[]), BootMode::Uefi, "never seen");
        assert_eq!(boot_mode(Arch::Aarch64, &bios), BootMode::Uefi);
    }
}
