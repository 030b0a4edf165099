//! Build tokens: the per-host secret that every installer URL carries
//! (`/ks/<mac>?token=…`, the callbacks), so a kickstart with a root
//! password hash and SSH keys is handed only to the machine being built.
//!
//! A token is 192 bits from the operating system's CSPRNG, written as
//! URL-safe base64 (32 characters, no padding, nothing to escape in a URL or
//! on a kernel command line). Comparison is constant-time.
//!
//! The store keeps the token's value, not a hash: the boot script and the
//! kickstart are rendered again whenever a host re-fetches them (a reboot
//! mid-install, an iPXE retry, or a second appliance rendering for the same
//! host), and each rendering must embed the same live token. A hash would
//! force a new token per render, breaking the URLs already handed out.
//! Whoever can read the state database can also flip a host's phase and
//! read the profiles the kickstart comes from, so a hash would protect
//! nothing from them.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use kickstand_profiles::Mac;
use subtle::ConstantTimeEq as _;

use crate::StateError;

/// A host's build token. Its `Debug` hides the value, so logging a host
/// record does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct BuildToken(String);

impl BuildToken {
    const BYTES: usize = 24;

    pub(crate) fn mint() -> Result<BuildToken, StateError> {
        let mut raw = [0u8; Self::BYTES];
        getrandom::fill(&mut raw).map_err(|e| StateError::Random(e.to_string()))?;
        Ok(BuildToken(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
        ))
    }

    pub(crate) fn from_stored(value: String) -> BuildToken {
        BuildToken(value)
    }

    /// The value to put in a URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time: how long a comparison takes says nothing of how much
    /// of a guess was right.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for BuildToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BuildToken(…)")
    }
}

/// Why a kickstart request or a callback was refused (an HTTP 403). Each
/// is also a `token-rejected` event on the host's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejected {
    #[error("no build token in the request")]
    Missing,
    #[error("the build token is not this host's")]
    Wrong,
    #[error("the build token has expired (install finished, failed, re-armed or timed out)")]
    Expired,
    #[error("the build token belongs to another host ({owner})")]
    OtherHost { owner: Mac },
    #[error("the build token is bound to {bound}, the address that first used it")]
    WrongAddress { bound: IpAddr },
}

impl TokenRejected {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            TokenRejected::Missing => "missing",
            TokenRejected::Wrong => "wrong",
            TokenRejected::Expired => "expired",
            TokenRejected::OtherHost { .. } => "other-host",
            TokenRejected::WrongAddress { .. } => "wrong-address",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() -> Result<(), StateError> {
        let a = BuildToken::mint()?;
        let b = BuildToken::mint()?;
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32, "192 bits in base64");
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{}",
            a.as_str()
        );
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
        assert!(!a.matches(""));
        assert!(
            !format!("{a:?}").contains(a.as_str()),
            "Debug leaks the token"
        );
        Ok(())
    }
}
