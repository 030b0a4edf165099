//! A Redfish BMC for the tests: sushy-tools' emulator with its fake
//! driver (machines that are only state), over HTTPS with a self-signed
//! certificate and an htpasswd file (`tests/beds/bmc/redfish-start.sh`),
//! and a bed whose rack it drives.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use super::Bed;

pub const NEEDS_SUSHY: &str = "needs sushy-emulator (tests/setup-peers)";

/// The bed's rack: three machines, each a system of one emulator (its
/// systems 1 to 3, as `tests/beds/bmc/redfish-start.sh` names them).
pub const RACK: [(&str, &str, &str); 3] = [
    (
        "52:54:00:90:00:01",
        "r9n01",
        "5a0b1c2d-0000-4000-8000-000000000001",
    ),
    (
        "52:54:00:90:00:02",
        "r9n02",
        "5a0b1c2d-0000-4000-8000-000000000002",
    ),
    (
        "52:54:00:90:00:03",
        "r9n03",
        "5a0b1c2d-0000-4000-8000-000000000003",
    ),
];

/// sushy-emulator (fake driver) with the rack's three systems, started by
/// `tests/beds/bmc/redfish-start.sh` in a temp dir.
pub struct Emulator {
    pid: u32,
    pub port: u16,
    pub fingerprint: String,
    /// The CA that signed its certificate (for IP 127.0.0.1).
    pub ca: std::path::PathBuf,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

impl Emulator {
    pub fn start(power: &str) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(super::repo_root().join("tests/beds/bmc/redfish-start.sh"))
            .arg(dir.path())
            .arg(power)
            .arg(RACK.len().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sushy-emulator did not start ({NEEDS_SUSHY}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("redfish.env")).unwrap();
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key} in redfish.env"))
                .to_owned()
        };
        let password = std::fs::read_to_string(var("REDFISH_PASSWORD_FILE")).unwrap();
        Emulator {
            pid: var("REDFISH_PID").parse().unwrap(),
            port: var("REDFISH_PORT").parse().unwrap(),
            fingerprint: var("REDFISH_FINGERPRINT"),
            ca: var("REDFISH_CA").into(),
            user: var("REDFISH_USER"),
            password: password.trim().to_owned(),
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    /// The resets the emulator received, as (system uuid, ResetType), in order.
    pub fn resets(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("System \"")?;
                let (uuid, rest) = rest.split_once("\" power state set to \"")?;
                Some((uuid.to_owned(), rest.trim_end_matches('"').to_owned()))
            })
            .collect()
    }

    /// A system as the emulator shows it, read by curl.
    pub fn system(&self, uuid: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--insecure", "--user"])
            .arg(format!("{}:{}", self.user, self.password))
            .arg(format!(
                "https://127.0.0.1:{}/redfish/v1/Systems/{uuid}",
                self.port
            ))
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The sample profiles plus the rack: a group with the BMC's driver,
/// user, password file and pinned certificate; each host its system.
pub fn bed(emulator: &Emulator, password: &str) -> Bed {
    let bed = Bed::new();
    bed.write("profiles/bmc/rack9.pass", &format!("{password}\n"));
    std::fs::set_permissions(
        bed.path("profiles/bmc/rack9.pass"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut yaml = format!(
        "groups:\n  rack9:\n    match: {{ hostname: [\"r9n*\"] }}\n    profile:\n      bmc:\n        driver: redfish\n        address: https://127.0.0.1:{}\n        username: {}\n        password_file: ../bmc/rack9.pass\n        tls: \"{}\"\nhosts:\n",
        emulator.port, emulator.user, emulator.fingerprint
    );
    for (mac, name, uuid) in RACK {
        yaml.push_str(&format!(
            "  \"{mac}\":\n    hostname: {name}\n    bmc:\n      system: /redfish/v1/Systems/{uuid}\n"
        ));
    }
    bed.write("profiles/hosts/rack9.yaml", &yaml);
    bed
}
