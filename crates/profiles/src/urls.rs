//! The one place Kickstand's URLs are built and read back: boot scripts,
//! kickstarts, install callbacks, boot loaders and repo paths. The renderer,
//! ProxyDHCP, TFTP and the HTTP router all go through here, so a script
//! URL handed out by one is always one the others understand.

use std::net::{IpAddr, SocketAddr};

use percent_encoding::percent_decode_str;

use crate::{BadMac, Mac};

/// Where boot scripts and boot loaders live, over HTTP (`/boot/…`) and
/// TFTP (`boot/…`).
pub const BOOT_DIR: &str = "boot";
const SCRIPT_SUFFIX: &str = ".ipxe";

/// Where an OS's boot files (shim, GRUB, kernel, initrd) are served from
/// the repo cache: `os/<os>/<path in the tree>` over TFTP, `/os/…` over
/// HTTP. The shim then finds GRUB beside itself, and a RHEL-family GRUB its
/// config in the same directory.
pub const OS_DIR: &str = "os";

/// The directory Debian's signed network GRUB reads `grub.cfg` from,
/// whatever its boot file's path: its prefix is built in.
pub const GRUB_PREFIX_DIR: &str = "grub";

/// The URLs of one appliance, from the address and port machines reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlScheme {
    base: String,
}

impl UrlScheme {
    /// The scheme of `address`, either family: an IPv6 address is written
    /// in brackets (`http://[fd00::5]:8080`), as every URL parser wants.
    pub fn new(address: impl Into<IpAddr>, http_port: u16) -> UrlScheme {
        let base = match (address.into(), http_port) {
            (IpAddr::V4(v4), 80) => format!("http://{v4}"),
            (IpAddr::V6(v6), 80) => format!("http://[{v6}]"),
            (address, port) => format!("http://{}", SocketAddr::new(address, port)),
        };
        UrlScheme { base }
    }

    /// `http://10.0.0.1` (port 80), `http://10.0.0.1:8080` or
    /// `http://[fd00::5]:8080`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host's iPXE script: what ProxyDHCP hands iPXE, ending the
    /// chainload loop.
    pub fn boot_script(&self, mac: Mac) -> String {
        format!("{}/{}", self.base, boot_script_name(mac))
    }

    /// A boot loader over HTTP, for UEFI HTTP boot which has no TFTP.
    pub fn loader(&self, file: &str) -> String {
        format!("{}/{BOOT_DIR}/{file}", self.base)
    }

    /// An OS boot file over HTTP (UEFI HTTP boot of the shim, which then
    /// loads GRUB from beside it).
    pub fn os_file(&self, os: &str, path: &str) -> String {
        format!("{}/{}", self.base, os_file_name(os, path))
    }

    /// The host's kickstart, with its build token.
    pub fn kickstart(&self, mac: Mac, token: &str) -> String {
        format!("{}/ks/{mac}{}", self.base, token_query(token))
    }

    /// An install callback (`installing`, `installed`, `failed`), with the
    /// host's build token.
    pub fn callback(&self, mac: Mac, report: &str, token: &str) -> String {
        format!(
            "{}/api/hosts/{mac}/{report}{}",
            self.base,
            token_query(token)
        )
    }

    /// Where a machine with no profile reports what it is.
    pub fn discovery_report(&self, mac: Mac) -> String {
        format!("{}/api/discover/{mac}", self.base)
    }

    /// A directory of the repo proxy, with a trailing `/`.
    pub fn repo(&self, mirror: &str, path: &str) -> String {
        format!("{}/repo/{mirror}/{path}/", self.base)
    }
}

/// `?token=…`, or nothing for no token. Build tokens are URL-safe base64,
/// so they need no escaping.
fn token_query(token: &str) -> String {
    if token.is_empty() {
        String::new()
    } else {
        format!("?{TOKEN_PARAM}={token}")
    }
}

/// The query parameter that carries a build token.
pub const TOKEN_PARAM: &str = "token";

/// `boot/<mac>.ipxe`: the script's path below the HTTP root and its name
/// over TFTP (iPXE builds without HTTP fetch it there).
pub fn boot_script_name(mac: Mac) -> String {
    format!("{BOOT_DIR}/{mac}{SCRIPT_SUFFIX}")
}

/// `os/<os>/<path>`: an OS boot file's TFTP name and HTTP path.
pub fn os_file_name(os: &str, path: &str) -> String {
    format!("{OS_DIR}/{os}/{path}")
}

/// Reads `os/<os>/<path>` back: the OS and the path in its tree.
pub fn parse_os_file_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(OS_DIR)?.strip_prefix('/')?;
    let (os, path) = rest.split_once('/')?;
    (!os.is_empty() && !path.is_empty()).then_some((os, path))
}

/// A GRUB config name, as GRUB builds ask for them over TFTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrubConfig {
    /// `grub.cfg`: chains to the host's own config by `$net_default_mac`.
    Generic,
    /// `grub.cfg-01-<mac>`: the host's own config (the name RHEL-family
    /// GRUB asks for first, and the generic one chains to).
    Host(Mac),
}

/// Reads a GRUB config name: `grub.cfg` or `grub.cfg-01-<mac with dashes>`
/// in GRUB's fixed prefix (`grub/`, Debian) or in an OS's boot file
/// directory (`os/<os>/…/`, RHEL-family GRUB, whose prefix is where its
/// boot file came from). `None` for every other name, including the
/// `grub.cfg-<hex IP>` steps RHEL's GRUB tries after the MAC: they are
/// answered "not found" and it goes on to `grub.cfg`.
pub fn parse_grub_config_name(name: &str) -> Option<GrubConfig> {
    let (dir, file) = name.rsplit_once('/')?;
    if dir != GRUB_PREFIX_DIR && parse_os_file_name(name).is_none() {
        return None;
    }
    if file == "grub.cfg" {
        return Some(GrubConfig::Generic);
    }
    let mac = file.strip_prefix("grub.cfg-01-")?;
    // Six octets in lower or upper hex, with dashes (or colons, as
    // `$net_default_mac` has them).
    (mac.len() == 17)
        .then(|| mac.replace('-', ":").parse().ok())
        .flatten()
        .map(GrubConfig::Host)
}

/// `grub.cfg-01-52-54-00-12-34-01`: the file name of a host's GRUB config.
pub fn grub_config_file(mac: Mac) -> String {
    format!("grub.cfg-01-{}", mac.to_string().replace(':', "-"))
}

/// Reads a file name under `boot/`: `Some` when it names a boot script
/// (`<mac>.ipxe`), with the MAC or why it is not one; `None` for any other
/// file (a boot loader).
pub fn parse_boot_script_file(file: &str) -> Option<Result<Mac, BadMac>> {
    file.strip_suffix(SCRIPT_SUFFIX).map(parse_mac_segment)
}

/// Reads a full name below the root (`boot/<mac>.ipxe`), as TFTP sees it.
pub fn parse_boot_script_name(name: &str) -> Option<Result<Mac, BadMac>> {
    parse_boot_script_file(name.strip_prefix(BOOT_DIR)?.strip_prefix('/')?)
}

/// A MAC as a URL path segment: iPXE percent-encodes the colons of a URL
/// it was handed (`52%3A54%3A00…`); an operator with curl types them raw
/// or with dashes. Anything that decodes to other bytes is not a MAC.
pub fn parse_mac_segment(segment: &str) -> Result<Mac, BadMac> {
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| BadMac(segment.to_owned()))?;
    decoded.parse()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn mac() -> Mac {
        Mac([0x52, 0x54, 0, 0x12, 0x34, 0x01])
    }

    #[test]
    fn built_urls_parse_back() {
        let urls = UrlScheme::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        assert_eq!(
            urls.boot_script(mac()),
            "http://10.0.0.1:8080/boot/52:54:00:12:34:01.ipxe"
        );
        assert_eq!(
            UrlScheme::new(Ipv4Addr::new(10, 0, 0, 1), 80).kickstart(mac(), "tok-1_2"),
            "http://10.0.0.1/ks/52:54:00:12:34:01?token=tok-1_2"
        );
        assert_eq!(
            urls.callback(mac(), "installed", ""),
            "http://10.0.0.1:8080/api/hosts/52:54:00:12:34:01/installed"
        );
        let name = boot_script_name(mac());
        assert_eq!(parse_boot_script_name(&name), Some(Ok(mac())));
        let path = urls.boot_script(mac());
        let file = path.rsplit('/').next().unwrap_or_default();
        assert_eq!(parse_boot_script_file(file), Some(Ok(mac())));
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let v6 = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
        assert_eq!(UrlScheme::new(v6, 80).base(), "http://[fd00::5]");
        assert_eq!(
            UrlScheme::new(v6, 8080).boot_script(mac()),
            "http://[fd00::5]:8080/boot/52:54:00:12:34:01.ipxe"
        );
    }

    #[test]
    fn os_files_and_grub_configs() {
        let urls = UrlScheme::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        assert_eq!(
            urls.os_file("centos-stream-9", "EFI/BOOT/BOOTX64.EFI"),
            "http://10.0.0.1:8080/os/centos-stream-9/EFI/BOOT/BOOTX64.EFI"
        );
        let name = os_file_name("centos-stream-9", "images/pxeboot/vmlinuz");
        assert_eq!(
            parse_os_file_name(&name),
            Some(("centos-stream-9", "images/pxeboot/vmlinuz"))
        );
        for bad in ["os", "os/", "os/x", "os//a", "osx/a/b", "boot/a/b"] {
            assert_eq!(parse_os_file_name(bad), None, "{bad}");
        }
        let host = Some(GrubConfig::Host(mac()));
        let file = grub_config_file(mac());
        assert_eq!(file, "grub.cfg-01-52-54-00-12-34-01");
        for (name, want) in [
            ("grub/grub.cfg", Some(GrubConfig::Generic)),
            ("os/c9/EFI/BOOT/grub.cfg", Some(GrubConfig::Generic)),
            ("grub/grub.cfg-01-52-54-00-12-34-01", host),
            (
                "grub/grub.cfg-01-52-54-00-AB-CD-01",
                Some(GrubConfig::Host(Mac([0x52, 0x54, 0, 0xab, 0xcd, 1]))),
            ),
            ("os/c9/EFI/BOOT/grub.cfg-01-52-54-00-12-34-01", host),
            ("grub/grub.cfg-0A004D64", None),
            ("grub/grub.cfg-01-52-54-00-12-34", None),
            // `configfile $prefix/grub.cfg-01-$net_default_mac` asks so.
            ("grub/grub.cfg-01-52:54:00:12:34:01", host),
            ("grub/x86_64-efi/command.lst", None),
            ("grub.cfg", None),
            ("elsewhere/grub.cfg", None),
            ("boot/grub.cfg", None),
        ] {
            assert_eq!(parse_grub_config_name(name), want, "{name}");
        }
    }

    #[test]
    fn mac_segments() {
        for ok in [
            "52:54:00:12:34:01",
            "52-54-00-12-34-01",
            "52%3A54%3A00%3A12%3A34%3A01",
            "52%3a54%3a00%3a12%3a34%3a01",
            "525400123401",
        ] {
            assert_eq!(parse_mac_segment(ok), Ok(mac()), "{ok}");
        }
        for bad in [
            "52%3A54%3A00%3A12%3A34%3A01%00",
            "52%2F54",
            "%ff%fe",
            "zz",
            "../../etc/passwd",
        ] {
            assert!(parse_mac_segment(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_boot_script_file("ipxe.efi"), None);
        assert_eq!(parse_boot_script_name("undionly.kpxe"), None);
        assert_eq!(parse_boot_script_name("boot/ipxe.efi"), None);
        assert!(matches!(
            parse_boot_script_name("boot/zz.ipxe"),
            Some(Err(_))
        ));
    }
}
