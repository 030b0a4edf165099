//! Power control through the hosts' BMCs, for the operator: `kickstand
//! power`, `rearm --reboot` and `install` ask here over HTTPS, one host a
//! request. Each BMC call is bounded twice — by its timeout, and by a
//! share of [`SLOTS`] calls at once — so a rack of dead BMCs costs slots,
//! never the daemon, and nothing here is on a boot's reply path. Every
//! call ends on the host's timeline, and (by the HTTP front) in the audit
//! log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kickstand_bmc::{BootMode, PowerAction, PowerState};
use kickstand_http::route::PowerVerb;
use kickstand_http::{ApiError, Reply};
use kickstand_profiles::Mac;
use kickstand_profiles::model::{Bmc, BmcDriver, Host};
use kickstand_state::{Event, EventKind, Phase, StateStore};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::generation::Generation;
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

#[derive(Debug)]
pub(crate) struct Power {
    store: StateStore,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Power {
    pub(crate) fn new(store: StateStore) -> Power {
        Power {
            store,
            slots: Arc::new(Semaphore::new(SLOTS)),
            timeout: CALL_TIMEOUT,
        }
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
        let mode = req.pxe.then(|| boot_mode(host, &self.store.recent(mac)));
        let done = self.call(bmc, action, mode).await;
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

    /// The BMC calls of one request, in a slot: the one-time network boot
    /// first (a reset must find it set), then the power action, or the
    /// state when there is none.
    async fn call(
        &self,
        bmc: &Bmc,
        action: Option<PowerAction>,
        pxe: Option<BootMode>,
    ) -> Result<Option<PowerState>, CallError> {
        let client = connect(bmc, self.timeout)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| CallError::Setup("shutting down".into()))?;
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
        BmcDriver::Ipmi { host, port } => kickstand_bmc::Bmc::Ipmi(kickstand_bmc::ipmi::Endpoint {
            host: host.clone(),
            port: *port,
            credentials,
            timeout,
        }),
    })
}

/// The firmware mode of a one-time network boot: the one the host's
/// firmware last asked ProxyDHCP with (`bios` → legacy). An ARM64 host,
/// or one never seen, boots UEFI: what servers ship with.
fn boot_mode(host: &Host, recent: &[Event]) -> BootMode {
    let seen = recent.iter().rev().find_map(|e| {
        let arch = e.detail.get("arch")?.as_str()?.to_ascii_lowercase();
        if arch == "bios" {
            Some(BootMode::Legacy)
        } else if arch.contains("efi") {
            Some(BootMode::Uefi)
        } else {
            None
        }
    });
    match host.arch {
        kickstand_profiles::model::Arch::Aarch64 => BootMode::Uefi,
        _ => seen.unwrap_or(BootMode::Uefi),
    }
}
