//! A Redfish BMC for the tests: sushy-tools' emulator with its fake
//! driver (machines that are only state), over HTTPS with a self-signed
//! certificate and an htpasswd file, and a bed whose rack it drives.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Bed, eventually};

pub const NEEDS_SUSHY: &str = "needs sushy-emulator (tests/setup-peers)";
const WAIT: Duration = Duration::from_secs(30);

pub const USER: &str = "admin";
pub const PASSWORD: &str = "rack-secret-7f3a";
/// The bed's rack: three machines, each a system of one emulator.
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

/// sushy-emulator (fake driver) with the rack's three systems, on a free
/// loopback port over HTTPS, with an htpasswd file.
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub fingerprint: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    pub fn start(power: &str) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(d.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(d.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-nbB", USER, PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils)");
        assert!(htpasswd.status.success(), "{htpasswd:?}");
        std::fs::write(d.join("htpasswd"), htpasswd.stdout).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let systems: String = RACK
            .iter()
            .map(|(_, name, uuid)| {
                format!(
                    "{{'uuid': '{uuid}', 'name': '{name}', 'power_state': '{power}', 'boot_device': 'Hdd', 'boot_mode': 'Legacy', 'external_notifier': False, 'nics': []}},"
                )
            })
            .collect();
        let dp = d.display();
        std::fs::write(
            d.join("emulator.conf"),
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                 SUSHY_EMULATOR_SSL_CERT = '{dp}/cert.pem'\n\
                 SUSHY_EMULATOR_SSL_KEY = '{dp}/key.pem'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{dp}/htpasswd'\n\
                 SUSHY_EMULATOR_STATE_DIR = '{dp}/state'\n\
                 SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [{systems}]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("emulator.log")).unwrap();
        // Python's root logger at INFO: the emulator logs each reset it
        // receives, with its ResetType, at INFO.
        let child = Command::new("python3")
            .args([
                "-c",
                "import logging, sys\n\
                 logging.getLogger().setLevel(logging.INFO)\n\
                 from sushy_tools.emulator.main import main\n\
                 sys.exit(main())",
            ])
            .env("SUSHY_EMULATOR_CONFIG", d.join("emulator.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3");
        let fingerprint = super::tls::fingerprint(made.cert.der());
        let emulator = Emulator {
            child,
            port,
            fingerprint,
            dir,
        };
        eventually(WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "sushy-emulator did not start ({NEEDS_SUSHY}): {}",
                emulator.log()
            )
        });
        emulator
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
            .arg(format!("{USER}:{PASSWORD}"))
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
        "groups:\n  rack9:\n    match: {{ hostname: [\"r9n*\"] }}\n    profile:\n      bmc:\n        driver: redfish\n        address: https://127.0.0.1:{}\n        username: {USER}\n        password_file: ../bmc/rack9.pass\n        tls: \"{}\"\nhosts:\n",
        emulator.port, emulator.fingerprint
    );
    for (mac, name, uuid) in RACK {
        yaml.push_str(&format!(
            "  \"{mac}\":\n    hostname: {name}\n    bmc:\n      system: /redfish/v1/Systems/{uuid}\n"
        ));
    }
    bed.write("profiles/hosts/rack9.yaml", &yaml);
    bed
}
