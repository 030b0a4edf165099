//! The life cycle of one host as a pure function: where a host is
//! ([`Phase`]), what happened to it ([`Transition`]) and where that takes it
//! ([`next`]), or why it does not ([`Refused`]). The store applies the
//! answer and records it; nothing here touches storage.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a host is in its life, and so what its next PXE boot does.
///
/// `New`, `Discovered`, `Booting`, `Installing` and `Rearmed` are build
/// mode: the next boot installs. `Installed` boots its disk. `Failed` is
/// held: it boots its disk and gets no new install until an operator
/// re-arms it, so a broken kickstart cannot loop a host through the
/// installer, hammering the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Has a profile, never seen booting (or imported as new).
    #[default]
    New,
    /// Seen by ProxyDHCP, nothing fetched yet.
    Discovered,
    /// Fetched its loader or boot script: the journey to the installer is under way.
    Booting,
    /// Fetched its kickstart or called back from `%pre`.
    Installing,
    /// Called back from `%post`: boots its disk from now on.
    Installed,
    /// Called back from `%onerror`, or never reported `installed` in time.
    Failed,
    /// Sent back to the installer by an operator.
    Rearmed,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::New,
        Phase::Discovered,
        Phase::Booting,
        Phase::Installing,
        Phase::Installed,
        Phase::Failed,
        Phase::Rearmed,
    ];

    /// Whether the next boot installs (and the host may hold a build token).
    pub fn is_build_mode(self) -> bool {
        !matches!(self, Phase::Installed | Phase::Failed)
    }

    /// Whether an install is under way, so `install_timeout` runs.
    pub fn is_installing(self) -> bool {
        matches!(self, Phase::Booting | Phase::Installing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::Discovered => "discovered",
            Phase::Booting => "booting",
            Phase::Installing => "installing",
            Phase::Installed => "installed",
            Phase::Failed => "failed",
            Phase::Rearmed => "rearmed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = UnknownPhase;
    fn from_str(s: &str) -> Result<Phase, UnknownPhase> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPhase(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase {0:?}")]
pub struct UnknownPhase(pub String);

/// Something that happened to a host and may move it to another phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// ProxyDHCP saw a PXE request from it.
    SeenByDhcp,
    /// It fetched its boot loader (TFTP or HTTP) or its boot script.
    BootFetched,
    /// It fetched its kickstart with a valid build token.
    KickstartFetched,
    /// Its kickstart's `%pre` called back.
    PreCallback,
    /// Its kickstart's `%post` called back: the install is done. `os` is the
    /// profile's OS, whose last install sizes the progress bar of the next.
    PostCallback { os: String },
    /// Its kickstart's `%onerror` called back with what went wrong.
    OnError { reason: String },
    /// No `installed` within `install_timeout` of the install's start.
    TimedOut,
    /// Two addresses claimed its MAC in one build (a forged DHCP REQUEST
    /// or a spoofed MAC): it is held, and no address gets its token.
    AddressConflict {
        first: std::net::IpAddr,
        second: std::net::IpAddr,
    },
    /// An operator sent it back to the installer.
    Rearm,
}

impl Transition {
    /// The name events and logs use.
    pub fn name(&self) -> &'static str {
        match self {
            Transition::SeenByDhcp => "seen-by-dhcp",
            Transition::BootFetched => "boot-fetched",
            Transition::KickstartFetched => "kickstart-fetched",
            Transition::PreCallback => "pre-callback",
            Transition::PostCallback { .. } => "post-callback",
            Transition::OnError { .. } => "on-error",
            Transition::TimedOut => "timed-out",
            Transition::AddressConflict { .. } => "address-conflict",
            Transition::Rearm => "rearm",
        }
    }
}

/// Why a transition was not applied. The store records it as an event and
/// leaves the host where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The host already reported `installed`; only a rearm sends it back.
    #[error("the host is installed: only an operator's rearm sends it back to the installer")]
    Installed,
    /// The host failed and is held until an operator re-arms it.
    #[error("the host failed and is held until an operator re-arms it")]
    Failed,
    /// A callback or time-out that only an install under way can have.
    #[error("no install is under way (the host is {0})")]
    NotInstalling(Phase),
}

impl Refused {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Installed => "installed",
            Refused::Failed => "failed",
            Refused::NotInstalling(_) => "not-installing",
        }
    }
}

/// Where `event` takes a host that is in `current`.
pub fn next(current: Phase, event: &Transition) -> Result<Phase, Refused> {
    use Phase::*;
    // A held or finished host refuses anything that belongs to an install.
    let held = || match current {
        Installed => Err(Refused::Installed),
        Failed => Err(Refused::Failed),
        other => Err(Refused::NotInstalling(other)),
    };
    match event {
        Transition::SeenByDhcp => Ok(if current == New { Discovered } else { current }),
        // Installed and failed hosts fetch a loader too, on their way to
        // their disk; a host already under way may reboot and fetch again.
        Transition::BootFetched => Ok(match current {
            New | Discovered | Rearmed => Booting,
            other => other,
        }),
        Transition::KickstartFetched | Transition::PreCallback => match current {
            Installed | Failed => held(),
            _ => Ok(Installing),
        },
        Transition::PostCallback { .. } => match current {
            Booting | Installing => Ok(Installed),
            _ => held(),
        },
        Transition::OnError { .. } | Transition::TimedOut => match current {
            Booting | Installing => Ok(Failed),
            _ => held(),
        },
        // Whatever phase of a build it was in, a spoofed host is held.
        Transition::AddressConflict { .. } => match current {
            Installed | Failed => held(),
            _ => Ok(Failed),
        },
        Transition::Rearm => Ok(Rearmed),
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;
    use super::*;

    fn post() -> Transition {
        Transition::PostCallback {
            os: "rocky-9".into(),
        }
    }
    fn spoofed() -> Transition {
        Transition::AddressConflict {
            first: [10, 0, 0, 5].into(),
            second: [10, 0, 0, 99].into(),
        }
    }
    fn error() -> Transition {
        Transition::OnError {
            reason: "disk".into(),
        }
    }

    /// Every phase × every transition, written out so a change to the life
    /// cycle shows up as a changed row.
    #[test]
    fn transition_table() {
        use Transition as T;
        let ni = Refused::NotInstalling;
        #[rustfmt::skip]
        let table: Vec<(Phase, Transition, Result<Phase, Refused>)> = vec![
            (New,        T::SeenByDhcp,       Ok(Discovered)),
            (Discovered, T::SeenByDhcp,       Ok(Discovered)),
            (Booting,    T::SeenByDhcp,       Ok(Booting)),
            (Installing, T::SeenByDhcp,       Ok(Installing)),
            (Installed,  T::SeenByDhcp,       Ok(Installed)),
            (Failed,     T::SeenByDhcp,       Ok(Failed)),
            (Rearmed,    T::SeenByDhcp,       Ok(Rearmed)),

            (New,        T::BootFetched,      Ok(Booting)),
            (Discovered, T::BootFetched,      Ok(Booting)),
            (Booting,    T::BootFetched,      Ok(Booting)),
            (Installing, T::BootFetched,      Ok(Installing)),
            (Installed,  T::BootFetched,      Ok(Installed)),
            (Failed,     T::BootFetched,      Ok(Failed)),
            (Rearmed,    T::BootFetched,      Ok(Booting)),

            (New,        T::KickstartFetched, Ok(Installing)),
            (Discovered, T::KickstartFetched, Ok(Installing)),
            (Booting,    T::KickstartFetched, Ok(Installing)),
            (Installing, T::KickstartFetched, Ok(Installing)),
            (Installed,  T::KickstartFetched, Err(Refused::Installed)),
            (Failed,     T::KickstartFetched, Err(Refused::Failed)),
            (Rearmed,    T::KickstartFetched, Ok(Installing)),

            (New,        T::PreCallback,      Ok(Installing)),
            (Booting,    T::PreCallback,      Ok(Installing)),
            (Installing, T::PreCallback,      Ok(Installing)),
            (Installed,  T::PreCallback,      Err(Refused::Installed)),
            (Failed,     T::PreCallback,      Err(Refused::Failed)),

            (New,        post(),              Err(ni(New))),
            (Discovered, post(),              Err(ni(Discovered))),
            (Booting,    post(),              Ok(Installed)),
            (Installing, post(),              Ok(Installed)),
            (Installed,  post(),              Err(Refused::Installed)),
            (Failed,     post(),              Err(Refused::Failed)),
            (Rearmed,    post(),              Err(ni(Rearmed))),

            (New,        error(),             Err(ni(New))),
            (Booting,    error(),             Ok(Failed)),
            (Installing, error(),             Ok(Failed)),
            (Installed,  error(),             Err(Refused::Installed)),
            (Failed,     error(),             Err(Refused::Failed)),
            (Rearmed,    error(),             Err(ni(Rearmed))),

            (Discovered, T::TimedOut,         Err(ni(Discovered))),
            (Booting,    T::TimedOut,         Ok(Failed)),
            (Installing, T::TimedOut,         Ok(Failed)),
            (Installed,  T::TimedOut,         Err(Refused::Installed)),
            (Failed,     T::TimedOut,         Err(Refused::Failed)),

            (New,        spoofed(),           Ok(Failed)),
            (Discovered, spoofed(),           Ok(Failed)),
            (Booting,    spoofed(),           Ok(Failed)),
            (Installing, spoofed(),           Ok(Failed)),
            (Rearmed,    spoofed(),           Ok(Failed)),
            (Installed,  spoofed(),           Err(Refused::Installed)),
            (Failed,     spoofed(),           Err(Refused::Failed)),
        ];
        for (from, event, want) in table {
            assert_eq!(next(from, &event), want, "{from} + {}", event.name());
        }
        for from in Phase::ALL {
            assert_eq!(next(from, &T::Rearm), Ok(Rearmed), "{from} + rearm");
        }
    }

    #[test]
    fn build_mode_is_every_phase_but_installed_and_failed() {
        let build: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| p.is_build_mode())
            .collect();
        assert_eq!(build, [New, Discovered, Booting, Installing, Rearmed]);
    }

    #[test]
    fn phases_read_back_from_their_names() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).ok(), Some(format!("\"{p}\"")));
        }
        assert!("done".parse::<Phase>().is_err());
    }
}
