//! Power control end to end through the real binary: `kickstand power`,
//! `rearm --reboot` and `install` against sushy-tools' Redfish emulator
//! (its fake driver: machines that are only state) over HTTPS with a
//! pinned certificate and an htpasswd file. What the emulator received is
//! read from the emulator (its log of resets, its systems over Redfish),
//! never from Kickstand. The machines are played by the test: one that
//! its BMC power cycled fetches its boot script and kickstart, as a real
//! one would once its firmware reached Kickstand.
//!
//! Ignored by default: `tests/run` runs them after `tests/setup-peers`
//! installed sushy-tools; they fail, not skip, without it.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::bmc::{Emulator, RACK, bed};
use support::{Bed, Daemon, eventually, kickstand};

/// The sample profiles' node01: no `bmc:`.
const NODE01: &str = "52:54:00:10:00:01";
const WAIT: Duration = Duration::from_secs(30);

/// A CLI command against the bed; (success, stdout, stderr).
fn cli(bed: &Bed, args: &[&str]) -> (bool, String, String) {
    let out = kickstand()
        .arg("--config")
        .arg(bed.config())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn events_of(daemon: &Daemon, mac: &str, kind: &str) -> Vec<serde_json::Value> {
    let (status, body) = daemon.get(&format!("/api/hosts/{mac}/timeline"));
    assert_eq!(status, 200, "{body}");
    json(&body)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].clone())
        .collect()
}

fn phase(daemon: &Daemon, mac: &str) -> String {
    let (_, hosts) = daemon.get("/api/hosts");
    json(&hosts)
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["mac"] == mac)
        .map(|h| h["phase"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// `power status`, then `power cycle --pxe` of a machine that is off: the
/// emulator receives the one-time PXE override in UEFI mode and a reset
/// that powers it on; the host's timeline and the audit log say so. A
/// host without `bmc:` among them is reported, and the command fails.
#[test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
fn power_cycle_with_pxe_sets_a_one_time_network_boot_and_powers_on() {
    let emulator = Emulator::start("Off");
    let bed = bed(&emulator, &emulator.password);
    let daemon = Daemon::start(&bed.config());
    let (mac, name, uuid) = RACK[0];

    let (ok, out, err) = cli(&bed, &["power", name, "status"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(name) && out.contains("power off"), "{out}");

    let (ok, out, err) = cli(&bed, &["power", name, "node01", "cycle", "--pxe"]);
    assert!(!ok, "node01 has no BMC: the command must fail\n{out}{err}");
    assert!(
        out.contains("power cycled, next boot from the network (uefi)"),
        "{out}"
    );
    assert!(
        err.contains("node01") && err.contains("has no bmc:"),
        "{err}"
    );
    assert_eq!(
        emulator.resets(),
        [(uuid.to_owned(), "On".to_owned())],
        "an off machine is powered on"
    );
    // (The fake driver shows every override as `Continuous`; that Kickstand
    // asks for `Once` is proven in crates/bmc's tests, on the wire.)
    let boot = &emulator.system(uuid)["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe", "{boot}");
    assert_eq!(boot["BootSourceOverrideMode"], "UEFI", "{boot}");

    let power = events_of(&daemon, mac, "power");
    assert_eq!(power.len(), 2, "{power:?}");
    assert_eq!(power[0]["action"], "status");
    assert_eq!(power[0]["state"], "off");
    assert_eq!(power[1]["action"], "cycle");
    assert_eq!(power[1]["pxe"], true);
    assert!(events_of(&daemon, NODE01, "power").is_empty());
    // `kickstand hosts` shows the power the daemon polled (on, after the
    // cycle, once the fake driver has applied it), `-` without a BMC.
    let row = |out: &str, host: &str| {
        out.lines()
            .find(|l| l.contains(host))
            .map(|l| l.split_whitespace().nth(4).unwrap_or_default().to_owned())
    };
    let (ok, hosts, err) = cli(&bed, &["hosts"]);
    assert!(ok, "{err}");
    assert_eq!(row(&hosts, "node01").as_deref(), Some("-"), "{hosts}");
    assert!(
        ["on", "off", "changing"].contains(&row(&hosts, name).unwrap_or_default().as_str()),
        "{hosts}"
    );
    let (ok, audit, err) = cli(&bed, &["audit"]);
    assert!(ok, "{err}");
    assert!(
        audit.contains("power-cycle") && audit.contains(mac),
        "{audit}"
    );
    assert!(audit.contains("power-status"), "{audit}");
    // The status page's poll reads the BMCs too; never the password.
    let (_, hosts) = daemon.get("/api/hosts");
    assert!(!hosts.contains(&emulator.password), "{hosts}");
    assert!(!daemon.log().contains(&emulator.password));
}

/// A wrong password, a certificate other than the pinned one, an
/// installed host without `--yes`: each refused with a line that names
/// the host and BMC and says why; nothing reaches the machine.
#[test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
fn wrong_credentials_another_certificate_and_an_installed_host_are_refused() {
    let emulator = Emulator::start("On");
    let bed = bed(&emulator, "not-the-password");
    let daemon = Daemon::start(&bed.config());
    let (mac, name, _) = RACK[0];
    let (ok, out, err) = cli(&bed, &["power", name, "on"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("{name} BMC https://127.0.0.1:{}", emulator.port))
            && err.contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains("not-the-password") && !daemon.log().contains("not-the-password"));
    let failed = events_of(&daemon, mac, "power");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{failed:?}"
    );

    // The right password; a fingerprint that is not the emulator's.
    bed.write(
        "profiles/bmc/rack9.pass",
        &format!("{}\n", emulator.password),
    );
    let other = format!("{}CD", "AB:".repeat(31));
    bed.edit("profiles/hosts/rack9.yaml", &emulator.fingerprint, &other);
    let reloaded = eventually(WAIT, || {
        let (_, _, err) = cli(&bed, &["power", name, "status"]);
        err.contains("AB:AB").then_some(err)
    });
    let err = reloaded
        .unwrap_or_else(|| panic!("the pinned fingerprint never refused:\n{}", daemon.log()));
    assert!(err.contains("not the pinned"), "{err}");

    // Pinned right: an installed host is not cut off without --yes.
    bed.edit("profiles/hosts/rack9.yaml", &other, &emulator.fingerprint);
    eventually(WAIT, || {
        cli(&bed, &["power", name, "status"]).0.then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the pinned fingerprint was never taken back:\n{}",
            daemon.log()
        )
    });
    let token = daemon.build_token(mac);
    let (status, _) = daemon.post(&format!("/api/hosts/{mac}/installed?token={token}"));
    assert_eq!(status, 200);
    let refused = eventually(WAIT, || {
        let (ok, _, err) = cli(&bed, &["power", name, "off"]);
        (!ok && err.contains("is installed")).then_some(err)
    });
    let err = refused.unwrap_or_else(|| panic!("power off of an installed host was not refused"));
    assert!(err.contains("--yes"), "{err}");
    assert!(emulator.resets().is_empty(), "{:?}", emulator.resets());
    let (ok, out, err) = cli(&bed, &["power", name, "off", "--yes"]);
    assert!(ok, "{out}{err}");
    assert_eq!(emulator.resets().len(), 1, "{:?}", emulator.resets());
    assert_eq!(emulator.resets()[0].1, "ForceOff");
}

/// A BMC that accepts and never answers costs its caller the timeout and
/// nothing else: boot scripts are served meanwhile.
#[test]
fn a_hanging_bmc_holds_up_no_boot() {
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let bed = Bed::new();
    bed.write("profiles/bmc/hang.pass", "x\n");
    std::fs::set_permissions(
        bed.path("profiles/bmc/hang.pass"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    bed.write(
        "profiles/hosts/hang.yaml",
        &format!(
            "hosts:\n  \"52:54:00:90:00:09\":\n    hostname: hang09\n    bmc:\n      driver: redfish\n      address: http://{}\n      username: u\n      password_file: ../bmc/hang.pass\n",
            hang.local_addr().unwrap()
        ),
    );
    let daemon = Daemon::start(&bed.config());
    let mut power = kickstand()
        .arg("--config")
        .arg(bed.config())
        .args(["power", "hang09", "status"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The BMC has the connection (accepted by the kernel) and says nothing.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(daemon.get(&format!("/boot/{NODE01}.ipxe")).0, 200);
    }
    let serving = started.elapsed();
    assert!(
        power.try_wait().unwrap().is_none(),
        "the power call ended before the boots"
    );
    let status = power.wait().unwrap();
    let mut err = String::new();
    for line in BufReader::new(power.stderr.take().unwrap()).lines() {
        err.push_str(&line.unwrap());
    }
    assert!(!status.success());
    assert!(
        err.contains("hang09 BMC http://127.0.0.1") && err.contains("no answer within 20s"),
        "{err}"
    );
    eprintln!("20 boot scripts served in {serving:?} while the BMC hung");
    drop(hang);
}

/// `install rack9 --parallel 2` over three machines: re-armed and power
/// cycled in hostname order, never more than two between their power
/// cycle and `installing`; the third waits for one of the first two to
/// fetch its kickstart.
#[test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
fn install_paces_the_rack() {
    let emulator = Emulator::start("On");
    let bed = bed(&emulator, &emulator.password);
    let daemon = Arc::new(Daemon::start(&bed.config()));
    // The machines: each fetches its kickstart 4 s after its BMC reset it.
    let installing: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let resets: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let machines = std::thread::spawn({
        let (daemon, installing, resets) = (daemon.clone(), installing.clone(), resets.clone());
        let emulator_log = emulator.dir.path().join("emulator.log");
        move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut due: Vec<(&str, Instant)> = Vec::new();
            while installing.lock().unwrap().len() < RACK.len() && Instant::now() < deadline {
                let log = std::fs::read_to_string(&emulator_log).unwrap_or_default();
                for (mac, name, uuid) in RACK {
                    let reset = log.contains(&format!("System \"{uuid}\" power state set to"));
                    if reset && !resets.lock().unwrap().iter().any(|(n, _)| n == name) {
                        resets
                            .lock()
                            .unwrap()
                            .push((name.to_owned(), Instant::now()));
                        due.push((mac, Instant::now() + Duration::from_secs(4)));
                    }
                }
                due.retain(|(mac, at)| {
                    if Instant::now() < *at {
                        return true;
                    }
                    let (status, ks) = daemon.kickstart(mac);
                    assert_eq!(status, 200, "{ks}");
                    let name = RACK.iter().find(|(m, ..)| m == mac).unwrap().1;
                    installing
                        .lock()
                        .unwrap()
                        .push((name.to_owned(), Instant::now()));
                    false
                });
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let (ok, out, err) = cli(&bed, &["install", "rack9", "--parallel", "2"]);
    machines.join().unwrap();
    assert!(ok, "{out}\n{err}\n{}", daemon.log());
    assert!(
        out.contains("3 of 3 hosts on their way to the installer; 0 failed"),
        "{out}"
    );
    // Not a terminal: no bar, every host's progress a plain line.
    for (_, name, _) in RACK {
        let said = |what: &str| out.lines().any(|l| l.starts_with(name) && l.contains(what));
        assert!(
            said("re-armed; power cycled, next boot from the network"),
            "{out}"
        );
        assert!(said("installing"), "{out}");
    }
    let resets = resets.lock().unwrap().clone();
    let installing = installing.lock().unwrap().clone();
    let order: Vec<&str> = resets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["r9n01", "r9n02", "r9n03"], "{resets:?}");
    let first_installing = installing.iter().map(|(_, t)| *t).min().unwrap();
    assert!(
        resets[2].1 >= first_installing,
        "r9n03 was powered before either of the first two was installing: {resets:?} {installing:?}"
    );
    assert!(
        resets[1].1 < first_installing,
        "r9n02 waited though a place was free"
    );
    for (mac, name, uuid) in RACK {
        assert_eq!(phase(&daemon, mac), "installing", "{name}");
        assert_eq!(
            emulator.system(uuid)["Boot"]["BootSourceOverrideTarget"],
            "Pxe",
            "{name}"
        );
        let power = events_of(&daemon, mac, "power");
        assert!(
            power
                .iter()
                .any(|p| p["action"] == "cycle" && p["pxe"] == true),
            "{name}: {power:?}"
        );
    }
}

/// Ctrl-C during `install`: the host already powered installs on, no
/// other is started, and the command says so.
#[test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
fn ctrl_c_stops_an_install_from_starting_more() {
    let emulator = Emulator::start("On");
    let bed = bed(&emulator, &emulator.password);
    let _daemon = Daemon::start(&bed.config());
    let install = kickstand()
        .arg("--config")
        .arg(bed.config())
        .args(["install", "rack9", "--parallel", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(WAIT, || (!emulator.resets().is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("the first host was never reset:\n{}", emulator.log()));
    let sent = Command::new("kill")
        .args(["-INT", &install.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = install.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "1 of 3 hosts on their way to the installer; 0 failed; 2 not started (Ctrl-C)"
        ),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resets = emulator.resets();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0].0, RACK[0].2);
}

/// `tls:` naming a CA file checks the BMC's certificate chain and that it
/// is for the address asked; `verify` (the public CAs) refuses the same BMC.
#[test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
fn a_bmc_certificate_is_checked_against_a_ca_file() {
    let emulator = Emulator::start("Off");
    let bed = bed(&emulator, &emulator.password);
    std::fs::copy(&emulator.ca, bed.path("profiles/bmc/ca.pem")).unwrap();
    let pinned = format!("tls: \"{}\"", emulator.fingerprint);
    bed.edit("profiles/hosts/rack9.yaml", &pinned, "tls: ../bmc/ca.pem");
    let daemon = Daemon::start(&bed.config());
    let (_, name, _) = RACK[0];
    let (ok, out, err) = cli(&bed, &["power", name, "status"]);
    assert!(ok && out.contains("power off"), "{out}{err}");

    bed.edit(
        "profiles/hosts/rack9.yaml",
        "tls: ../bmc/ca.pem",
        "tls: verify",
    );
    let refused = eventually(WAIT, || {
        let (ok, _, err) = cli(&bed, &["power", name, "status"]);
        (!ok && err.contains("TLS")).then_some(err)
    })
    .unwrap_or_else(|| {
        panic!(
            "the public CAs took the BMC's certificate:\n{}",
            daemon.log()
        )
    });
    assert!(refused.to_lowercase().contains("issuer"), "{refused}");
}
