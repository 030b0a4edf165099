//! Drives the BMCs of the rack's servers, so that a reinstall needs nobody
//! at the console: read the power state, power on, off or cycle, and set a
//! one-time network boot. Two drivers: [`redfish`] (JSON over HTTP(S), the
//! BMC's certificate checked as the host profile says) and [`ipmi`]
//! (`ipmitool` over RMCP+ as a child process, as Ironic and MAAS do).
//!
//! What it owns: one call to one BMC, bounded by a timeout, ending in a
//! result or an [`Error`] an operator can act on. What it does not: which
//! hosts to drive, how many at once, the audit log and the timelines (the
//! daemon), or where the password comes from (the profiles read it from
//! its file; here it is only carried, and never shown).

use std::fmt;
use std::time::Duration;

pub mod ipmi;
pub mod redfish;

/// One BMC, ready to be called.
#[derive(Debug, Clone)]
pub enum Bmc {
    Redfish(redfish::Endpoint),
    Ipmi(ipmi::Endpoint),
}

impl Bmc {
    pub async fn power_state(&self) -> Result<PowerState, Error> {
        match self {
            Bmc::Redfish(e) => e.power_state().await,
            Bmc::Ipmi(e) => e.power_state().await,
        }
    }

    /// `Cycle` on a machine that is off powers it on.
    pub async fn power(&self, action: PowerAction) -> Result<(), Error> {
        match self {
            Bmc::Redfish(e) => e.power(action).await,
            Bmc::Ipmi(e) => e.power(action).await,
        }
    }

    /// The next boot, and only the next, from the network, in `mode`.
    pub async fn boot_pxe_once(&self, mode: BootMode) -> Result<(), Error> {
        match self {
            Bmc::Redfish(e) => e.boot_pxe_once(mode).await,
            Bmc::Ipmi(e) => e.boot_pxe_once(mode).await,
        }
    }

    /// Where it is, for messages: a URL or `host:port`, never credentials.
    pub fn address(&self) -> String {
        match self {
            Bmc::Redfish(e) => e.address(),
            Bmc::Ipmi(e) => e.address(),
        }
    }
}

/// A user name and its password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// A BMC password: shown as `<hidden>` by `Debug`, with no `Display`, so
/// that no log line, error or API answer can carry it by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Password {
        Password(password)
    }

    /// The password itself, for the one place that sends it to the BMC.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// What the BMC says of the machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PowerState {
    On,
    Off,
    /// On its way on or off (Redfish `PoweringOn`/`PoweringOff`).
    Changing,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Changing => "changing",
        }
    }
}

/// What the operator asks of the machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    /// At once, as a power button held down: a reinstall does not wait
    /// for the OS to shut down.
    Off,
    /// Off and on again; on, if it was off.
    Cycle,
}

/// The firmware mode of a one-time network boot: the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    Legacy,
}

/// How a call to a BMC failed, in words an operator can act on; the
/// caller says which host and BMC (`node07 BMC 10.0.9.21: …`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("authentication failed (user {0}): check the user name and password file")]
    Authentication(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The BMC understood and said no (an HTTP status, an IPMI completion code).
    #[error("refused {what}: {why}")]
    Refused { what: String, why: String },
    /// An answer that does not follow the protocol.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// `ipmitool` missing or failing to start.
    #[error("{0}")]
    Tool(String),
}
