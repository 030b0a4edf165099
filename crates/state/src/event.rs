//! Timeline events: what every module saw of a host, in one table, so
//! "why didn't node07 install?" has an answer without logs.

use std::fmt;
use std::time::SystemTime;

use kickstand_profiles::Mac;

/// What happened. The string form (`dhcp-offer`, …) is what the database
/// stores and the API shows.
///
/// Each kind documents the fields of its `detail` object: producers write
/// them, the diagnosis reads them. Addresses are strings (`"10.0.0.5"`),
/// sizes and durations are integers, a field a producer does not know is
/// left out. A kind this version does not know (written by a newer
/// appliance sharing the database) reads back as [`EventKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// ProxyDHCP answered. `{"boot_file": "ipxe.efi", "arch": "uefi-x64",
    /// "client_arch": 7}`; `boot_file` is an `http://…` URL when the offer
    /// is iPXE's script; `arch` is `ipxe` for iPXE, whose `client_arch` (as
    /// it reported it) tells the firmware under it (0: BIOS).
    DhcpOffer,
    /// ProxyDHCP did not answer. `{"reason": "no-profile", "arch": "bios"}`.
    DhcpIgnored,
    /// A TFTP read ended. `{"file": "ipxe.efi", "bytes": 0, "duration_ms": 12,
    /// "outcome": "complete" | "aborted" | "timed-out" | "error",
    /// "error_code": 8, "ip": "10.0.0.5"}`; `error_code` is the TFTP error
    /// the client sent, when it sent one.
    TftpTransfer,
    /// A boot loader fetched over HTTP (UEFI HTTP boot). `{"file", "ip"}`.
    LoaderFetch,
    /// The iPXE boot script was served. `{"script": "install" | "local-boot"
    /// | "discover", "ip"}`.
    BootScript,
    /// Installer kernel, initrd or stage 2 fetched through the repo proxy.
    /// `{"file": "images/pxeboot/vmlinuz", "bytes", "ip"}`.
    InstallerImage,
    /// The kickstart was served. `{"ip"}`.
    KickstartFetch,
    /// A kickstart callback arrived. `{"stage": "pre" | "post" | "onerror",
    /// "ip", "reason"}` (`reason` for `onerror`).
    Callback,
    /// The store minted a build token. `{"expires": <unix ms>}`; never the token.
    TokenIssued,
    /// A build token was used for the first time and bound to its address,
    /// or moved with its host's installer onto the install VLAN. `{"ip",
    /// "from": "10.0.0.5"}` (`from` when moved).
    TokenBound,
    /// A request with a missing or bad build token was refused. `{"ip",
    /// "reason": "missing" | "wrong" | "expired" | "other-host" |
    /// "wrong-address", "bound": "10.0.0.5", "owner": "<mac>"}`.
    TokenRejected,
    /// A boot script or GRUB config was served without the build token:
    /// the address asking is not the one the host's own DHCP exchange gave
    /// it. `{"ip", "reason": "no-exchange" | "other-address" | "conflict",
    /// "claimed": "10.0.0.5"}`.
    TokenWithheld,
    /// The host was sent to its own disk. `{"how": "exit" | "not-answered" |
    /// "chainload", "ip"}`.
    LocalBoot,
    /// The store moved the host to another phase. `{"from", "to",
    /// "transition", "reason"}` (`from` is null for an imported host).
    PhaseChange,
    /// The store refused a transition. `{"phase", "transition", "reason"}`.
    TransitionRefused,
    /// An unknown machine reported its facts. `{"ip", "outcome": "added" |
    /// "updated" | "full" | "too-large"}`.
    DiscoveryReport,
    /// The installer's syslog for this host. `{"path", "lines"}`.
    InstallerLog,
    /// An operator's power action through the host's BMC. `{"action":
    /// "status" | "on" | "off" | "cycle", "pxe": true, "bmc": "<address>",
    /// "state": "on" | "off" | "changing", "error"}` (`state` for a status,
    /// `error` when the BMC failed).
    Power,
    /// A kind this version does not know.
    Other(String),
}

impl EventKind {
    const KNOWN: [EventKind; 18] = [
        EventKind::DhcpOffer,
        EventKind::DhcpIgnored,
        EventKind::TftpTransfer,
        EventKind::LoaderFetch,
        EventKind::BootScript,
        EventKind::InstallerImage,
        EventKind::KickstartFetch,
        EventKind::Callback,
        EventKind::TokenIssued,
        EventKind::TokenBound,
        EventKind::TokenRejected,
        EventKind::TokenWithheld,
        EventKind::LocalBoot,
        EventKind::PhaseChange,
        EventKind::TransitionRefused,
        EventKind::DiscoveryReport,
        EventKind::InstallerLog,
        EventKind::Power,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::DhcpOffer => "dhcp-offer",
            EventKind::DhcpIgnored => "dhcp-ignored",
            EventKind::TftpTransfer => "tftp-transfer",
            EventKind::LoaderFetch => "loader-fetch",
            EventKind::BootScript => "boot-script",
            EventKind::InstallerImage => "installer-image",
            EventKind::KickstartFetch => "kickstart-fetch",
            EventKind::Callback => "callback",
            EventKind::TokenIssued => "token-issued",
            EventKind::TokenBound => "token-bound",
            EventKind::TokenRejected => "token-rejected",
            EventKind::TokenWithheld => "token-withheld",
            EventKind::LocalBoot => "local-boot",
            EventKind::PhaseChange => "phase-change",
            EventKind::TransitionRefused => "transition-refused",
            EventKind::DiscoveryReport => "discovery-report",
            EventKind::InstallerLog => "installer-log",
            EventKind::Power => "power",
            EventKind::Other(s) => s,
        }
    }

    /// Never fails: an unknown name is kept as [`EventKind::Other`].
    pub fn parse(s: &str) -> EventKind {
        EventKind::KNOWN
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_else(|| EventKind::Other(s.to_owned()))
    }
}

/// Which bound an event is kept under. A host's timeline keeps each class
/// within its own count, so a flood of one class never pushes another out:
/// ten thousand rejected tokens cannot erase the install they were aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// What the life cycle itself did: phase changes, tokens issued and
    /// bound, boot scripts, callbacks, installer log markers.
    LifeCycle,
    /// What a module saw of the host on its way: DHCP offers, TFTP
    /// transfers, fetches, local boots, discovery reports.
    Activity,
    /// Refusals anyone on the LAN can cause at will: rejected tokens,
    /// unanswered PXE requests, refused transitions.
    Noise,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::LifeCycle, Class::Activity, Class::Noise];

    /// The number the `class` column stores.
    pub(crate) fn code(self) -> i64 {
        match self {
            Class::LifeCycle => 0,
            Class::Activity => 1,
            Class::Noise => 2,
        }
    }

    pub(crate) fn index(self) -> usize {
        self.code() as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::LifeCycle => "life-cycle",
            Class::Activity => "activity",
            Class::Noise => "noise",
        }
    }
}

impl EventKind {
    /// The bound this kind is kept under.
    pub fn class(&self) -> Class {
        match self {
            EventKind::PhaseChange
            | EventKind::TokenIssued
            | EventKind::TokenBound
            | EventKind::BootScript
            | EventKind::Callback
            | EventKind::InstallerLog
            | EventKind::Power => Class::LifeCycle,
            EventKind::TokenRejected
            | EventKind::TokenWithheld
            | EventKind::DhcpIgnored
            | EventKind::TransitionRefused => Class::Noise,
            EventKind::DhcpOffer
            | EventKind::TftpTransfer
            | EventKind::LoaderFetch
            | EventKind::InstallerImage
            | EventKind::KickstartFetch
            | EventKind::LocalBoot
            | EventKind::DiscoveryReport
            | EventKind::Other(_) => Class::Activity,
        }
    }

    /// Whether repeats of this kind are rate-limited per host: everything a
    /// request from the LAN can cause over and over. What only a change of
    /// the host's state produces (a phase change, a token minted or bound,
    /// a callback that carried the live token, an operator's power action)
    /// is written every time.
    pub fn limited(&self) -> bool {
        !matches!(
            self,
            EventKind::PhaseChange
                | EventKind::TokenIssued
                | EventKind::TokenBound
                | EventKind::Callback
                | EventKind::InstallerLog
                | EventKind::Power
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a host's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Increases with every event the database stores, across appliances.
    pub id: i64,
    pub time: SystemTime,
    pub mac: Mac,
    /// Which appliance saw it: with a shared PostgreSQL, rack A's DHCP offer
    /// and rack B's kickstart fetch sit on one timeline.
    pub appliance: String,
    pub kind: EventKind,
    /// A JSON object with the fields documented on [`EventKind`].
    pub detail: serde_json::Value,
}

impl Event {
    /// A string field of the detail.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.detail.get(field).and_then(|v| v.as_str())
    }

    /// An integer field of the detail.
    pub fn number(&self, field: &str) -> Option<u64> {
        self.detail.get(field).and_then(|v| v.as_u64())
    }

    /// How many events this one stands for: more than one when repeats
    /// within a minute were folded into it (`"repeated": n`).
    pub fn repeated(&self) -> u64 {
        self.number("repeated").unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_from_their_names_and_unknown_ones_are_kept() {
        for k in EventKind::KNOWN {
            assert_eq!(EventKind::parse(k.as_str()), k);
        }
        assert_eq!(
            EventKind::parse("bmc-power-on"),
            EventKind::Other("bmc-power-on".into())
        );
        assert_eq!(EventKind::parse("bmc-power-on").as_str(), "bmc-power-on");
    }
}
