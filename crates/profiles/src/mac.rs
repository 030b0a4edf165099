use std::fmt;
use std::str::FromStr;

/// An Ethernet hardware address, the key of every host profile.
///
/// Parsed from `52:54:00:12:34:56`, `52-54-00-12-34-56` or `525400123456` in
/// any case, and always displayed lowercase with colons, so the same machine
/// written two ways in two files is caught as a duplicate.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Mac(pub [u8; 6]);

impl From<Mac> for String {
    fn from(mac: Mac) -> String {
        mac.to_string()
    }
}

impl TryFrom<String> for Mac {
    type Error = BadMac;
    fn try_from(s: String) -> Result<Mac, BadMac> {
        s.parse()
    }
}

impl Mac {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex octets like 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(s.to_owned());
        let hex: String = match s.as_bytes().get(2) {
            Some(b':') | Some(b'-') => {
                let sep = s.as_bytes()[2] as char;
                let parts: Vec<&str> = s.split(sep).collect();
                if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                    return Err(bad());
                }
                parts.concat()
            }
            _ => s.to_owned(),
        };
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings_to_one_value() {
        let want = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        for s in [
            "52:54:00:ab:cd:ef",
            "52:54:00:AB:CD:EF",
            "52-54-00-ab-cd-ef",
            "525400abcdef",
        ] {
            assert_eq!(s.parse::<Mac>(), Ok(want), "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:ab:cd:ef");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:eg",
            "52:54-00:ab:cd:ef",
            "5:254:00:ab:cd:ef",
            "52545400abcdef",
            "+2:54:00:ab:cd:ef",
            "ｆｆ:54:00:ab:cd:ef",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s:?} should be rejected");
        }
    }
}
