//! What every part that answers for a host shares: putting what happened
//! on its timeline (a profiled host's, or a stranger's within its rate),
//! moving its phase (at once, or once on disk), and the one mapping of a
//! store or render failure to an HTTP error.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kickstand_http::ApiError;
use kickstand_profiles::Mac;
use kickstand_render::RenderError;
use kickstand_state::{Durability, EventKind, Outcome, StateError, StateStore, Transition};
use tracing::{info, warn};

use crate::generation::Generation;

pub(crate) fn state_error(e: StateError) -> ApiError {
    warn!(error = %e, "host state store failed");
    ApiError::Unavailable(format!("the host state store failed: {e}"))
}

pub(crate) fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::UnknownHost(mac) => ApiError::NoProfile(mac),
        e => {
            // Every host rendered when the generation was built, so this is
            // a bug, not bad input; say so instead of serving half a script.
            warn!(error = %e, "render failed");
            ApiError::Internal(format!("render failed: {e}"))
        }
    }
}

pub(crate) fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

/// Records an event on `mac`'s timeline: a host's when it has a profile in
/// `generation`, a stranger's (rate-limited, never kept in memory)
/// otherwise. Never waits for the disk.
pub(crate) fn record(
    store: &StateStore,
    generation: &Generation,
    mac: Mac,
    kind: EventKind,
    detail: serde_json::Value,
) {
    let now = SystemTime::now();
    if generation.snapshot().host(&mac).is_some() {
        store.record(mac, kind, detail, now).value();
    } else {
        store.record_stranger(mac, kind, detail, now).value();
    }
}

/// Records what a host at `peer` fetched, if `peer` is a host's: a boot
/// loader or OS boot file (`LoaderFetch`), or one of the installer's
/// images (`InstallerImage`, any other file is not an event). `via` names
/// the protocol when it is not HTTP. Returns the host.
pub(crate) fn fetched(
    store: &StateStore,
    peer: IpAddr,
    what: Fetched<'_>,
    via: Option<&str>,
) -> Option<Mac> {
    let mac = store.host_by_ip(peer)?;
    let (kind, file) = match what {
        Fetched::Loader(file) => (EventKind::LoaderFetch, file),
        Fetched::File(path) if INSTALLER_IMAGES.iter().any(|i| path.ends_with(i)) => {
            (EventKind::InstallerImage, path)
        }
        Fetched::File(_) => return Some(mac),
    };
    let mut detail = serde_json::json!({"file": file, "ip": ip_text(peer)});
    if let Some(via) = via {
        detail["via"] = via.into();
    }
    store.record(mac, kind, detail, SystemTime::now()).value();
    Some(mac)
}

/// What [`fetched`] records.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fetched<'a> {
    Loader(&'a str),
    File(&'a str),
}

/// The installer's images, by the end of their paths in a tree: fetching
/// one is a step of the journey on the timeline.
const INSTALLER_IMAGES: [&str; 4] = ["vmlinuz", "initrd.img", "install.img", "squashfs.img"];

/// Applies a transition in memory (on disk with the writer's next batch);
/// a refused one is recorded by the store.
pub(crate) fn transition(
    store: &StateStore,
    mac: Mac,
    t: Transition,
    ip: Option<IpAddr>,
) -> Outcome {
    let name = t.name();
    let outcome = store.transition(mac, t, ip, SystemTime::now()).value();
    log_phase(mac, name, outcome);
    outcome
}

/// Applies a transition and waits until it is on disk: for the callbacks
/// and operator actions whose answer says it happened.
pub(crate) async fn transition_durably(
    store: &StateStore,
    mac: Mac,
    t: Transition,
    ip: Option<IpAddr>,
) -> Result<Outcome, ApiError> {
    let name = t.name();
    let outcome = store
        .transition(mac, t, ip, SystemTime::now())
        .await
        .map_err(state_error)?;
    log_phase(mac, name, outcome);
    Ok(outcome)
}

/// How long an installer's callback waits for its commit. Past it (or at
/// once when the database is found unreachable) the callback is accepted
/// with the change kept in memory: the kickstart's `curl` waits as long
/// as it is made to, so an install must not hang on a failover.
const CALLBACK_WAIT: Duration = Duration::from_secs(5);

/// Applies an installer callback's transition and waits for its commit,
/// at most [`CALLBACK_WAIT`]. While no database takes it, the change is in
/// force in memory (the host's next boot is answered from there) and the
/// writer keeps it, in order, until the database is back: the install
/// finishes instead of failing on the database, and the callback is
/// acknowledged once, so it is written once.
pub(crate) async fn transition_reported(
    store: &StateStore,
    mac: Mac,
    t: Transition,
    ip: Option<IpAddr>,
) -> Result<(Outcome, Durability), ApiError> {
    let name = t.name();
    let (outcome, durability) = store
        .transition(mac, t, ip, SystemTime::now())
        .durable_within(CALLBACK_WAIT)
        .await
        .map_err(state_error)?;
    log_phase(mac, name, outcome);
    if durability == Durability::Kept {
        info!(%mac, transition = name, "callback accepted while the state database is unreachable: kept in memory, written when it is back");
    }
    Ok((outcome, durability))
}

fn log_phase(mac: Mac, transition: &str, outcome: Outcome) {
    if let Outcome::Changed { from, to } = outcome {
        info!(%mac, %from, %to, transition, "host phase");
    }
}

pub(crate) fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long ago, for tables: `3m 12s`.
pub(crate) fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
