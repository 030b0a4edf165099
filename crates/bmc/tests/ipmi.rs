//! The IPMI driver against Debian's `ipmi_sim` (OpenIPMI), started by
//! `tests/beds/bmc/start.sh` on 127.0.0.1 with a machine behind it: a
//! `sleep infinity` whose process is the power state, or a QEMU guest.
//! `ipmitool` is the reference client, and `ipmi_sim`'s message log shows
//! what the BMC received.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kickstand_bmc::{Bmc, BootMode, Credentials, Error, Password, PowerAction, PowerState, ipmi};

const BED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/beds/bmc");
const TIMEOUT: Duration = Duration::from_secs(10);

/// One ipmi_sim and its machine, in a temp dir; stopped on drop.
struct SimBmc {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl SimBmc {
    fn start(machine: &[&str]) -> SimBmc {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new(Path::new(BED).join("start.sh"))
            .arg(dir.path())
            .args(machine)
            .status()
            .expect("run start.sh");
        assert!(status.success(), "start.sh: {status}");
        let env = std::fs::read_to_string(dir.path().join("bmc.env"))
            .expect("bmc.env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SimBmc { dir, env }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn port(&self) -> u16 {
        self.env["BMC_PORT"].parse().expect("BMC_PORT")
    }

    fn password(&self) -> String {
        std::fs::read_to_string(&self.env["BMC_PASSWORD_FILE"]).expect("password file")
    }

    fn bmc(&self) -> Bmc {
        self.bmc_with(&self.password())
    }

    fn bmc_with(&self, password: &str) -> Bmc {
        endpoint(self.port(), &self.env["BMC_USER"], password, TIMEOUT)
    }

    /// The pid of the machine's process while the BMC has it powered on.
    fn machine_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.path("machine.pid")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
        // A killed machine is a zombie until something reaps it.
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state != 'Z').then(|| pid.trim().parse().ok()).flatten()
    }

    /// `ipmitool` itself, as an operator would run it.
    fn ipmitool(&self, args: &[&str]) -> String {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-E"])
            .args(["-p", &self.port().to_string(), "-U", &self.env["BMC_USER"]])
            .args(args)
            .env("IPMI_PASSWORD", self.password())
            .output()
            .expect("run ipmitool");
        assert!(out.status.success(), "ipmitool {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The data bytes of every Set System Boot Options request (netfn 0,
    /// cmd 8) in ipmi_sim's message log, as hex strings.
    fn boot_option_requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.path("ipmi_sim.log")).expect("ipmi_sim.log");
        let lines: Vec<&str> = log.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("netfn=0x0 cmd=0x8 "))
            .filter_map(|(i, _)| lines.get(i + 2).map(|d| d.trim().to_string()))
            .collect()
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(BED).join("stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

fn endpoint(port: u16, user: &str, password: &str, timeout: Duration) -> Bmc {
    Bmc::Ipmi(ipmi::Endpoint {
        host: "127.0.0.1".into(),
        port,
        credentials: Credentials {
            username: user.into(),
            password: Password::new(password.into()),
        },
        // ipmi_sim does not answer Get Channel Cipher Suites.
        cipher_suite: Some(3),
        timeout,
    })
}

/// Polls `f` every 100 ms until it is true or `within` has passed.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

#[tokio::test]
#[ignore = "needs ipmi_sim (tests/setup-peers)"]
async fn power_on_then_off() {
    let sim = SimBmc::start(&["sleep", "infinity"]);
    let bmc = sim.bmc();
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::Off);
    assert_eq!(sim.machine_pid(), None);

    bmc.power(PowerAction::On).await.expect("on");
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::On);
    assert!(sim.machine_pid().is_some(), "no machine after power on");

    bmc.power(PowerAction::Off).await.expect("off");
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::Off);
    assert_eq!(
        sim.machine_pid(),
        None,
        "machine still runs after power off"
    );
}

#[tokio::test]
#[ignore = "needs ipmi_sim (tests/setup-peers)"]
async fn cycle_of_an_off_machine_powers_it_on() {
    let sim = SimBmc::start(&["sleep", "infinity"]);
    let bmc = sim.bmc();
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::Off);
    bmc.power(PowerAction::Cycle).await.expect("cycle");
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::On);
    assert!(sim.machine_pid().is_some());
}

#[tokio::test]
#[ignore = "needs ipmi_sim (tests/setup-peers)"]
async fn cycle_of_a_running_machine_restarts_it() {
    let sim = SimBmc::start(&["sleep", "infinity"]);
    let bmc = sim.bmc();
    bmc.power(PowerAction::On).await.expect("on");
    let first = sim.machine_pid().expect("machine runs");

    bmc.power(PowerAction::Cycle).await.expect("cycle");
    // ipmi_sim powers off at once and on again a second later.
    assert!(
        eventually(Duration::from_secs(5), || sim
            .machine_pid()
            .is_some_and(|pid| pid != first))
        .await,
        "no new machine after the cycle"
    );
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::On);
    let log = std::fs::read_to_string(sim.path("power.log")).expect("power.log");
    let events: Vec<&str> = log
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(events, ["on", "off", "on"], "{log}");
}

#[tokio::test]
#[ignore = "needs ipmi_sim (tests/setup-peers)"]
async fn pxe_once_sets_the_boot_flags_for_the_next_boot() {
    let sim = SimBmc::start(&["sleep", "infinity"]);
    let bmc = sim.bmc();

    bmc.boot_pxe_once(BootMode::Uefi).await.expect("bootdev");
    let flags = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
    assert!(
        flags.contains("Boot Device Selector : Force PXE"),
        "{flags}"
    );
    assert!(flags.contains("Options apply to only next boot"), "{flags}");
    // ipmi_sim keeps only the device of a Set System Boot Options, so its
    // answer cannot show the EFI bit: the request it received does. Boot
    // flags (parameter 5): 0xa0 = valid, next boot only, EFI; 0x04 = PXE.
    bmc.boot_pxe_once(BootMode::Legacy).await.expect("bootdev");
    let requests = sim.boot_option_requests();
    let flags: Vec<&String> = requests.iter().filter(|r| r.starts_with("05 ")).collect();
    assert_eq!(
        flags,
        ["05 a0 04 00 00 00", "05 80 04 00 00 00"],
        "{requests:?}"
    );
}

#[tokio::test]
#[ignore = "needs ipmi_sim (tests/setup-peers)"]
async fn a_wrong_password_or_user_is_an_authentication_error() {
    let sim = SimBmc::start(&["sleep", "infinity"]);
    let wrong = "not-the-password";
    let e = sim
        .bmc_with(wrong)
        .power_state()
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&e, Error::Authentication(u) if u == "admin"),
        "{e:?}"
    );
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains(wrong), "password shown: {shown}");
    }
    assert_eq!(
        e.to_string(),
        "authentication failed (user admin): check the user name and password file"
    );

    let stranger = endpoint(sim.port(), "nobody", &sim.password(), TIMEOUT);
    let e = stranger
        .power(PowerAction::On)
        .await
        .expect_err("unknown user");
    assert!(
        matches!(&e, Error::Authentication(u) if u == "nobody"),
        "{e:?}"
    );
    assert_eq!(sim.machine_pid(), None);
}

#[tokio::test]
#[ignore = "needs ipmitool (tests/setup-peers)"]
async fn nothing_listening_fails_within_the_timeout() {
    // A port that was free a moment ago: the kernel answers ICMP port
    // unreachable, which ipmitool does not notice: it waits out its tries.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let timeout = Duration::from_secs(3);
    let start = Instant::now();
    let e = endpoint(port, "admin", "secret", timeout)
        .power_state()
        .await
        .expect_err("nothing there");
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout(t) if t == timeout), "{e:?}");
    assert!(took <= timeout, "took {took:?}");
}

#[tokio::test]
#[ignore = "needs ipmitool (tests/setup-peers)"]
async fn a_bmc_that_swallows_packets_times_out() {
    let hole = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = hole.local_addr().expect("addr").port();
    let password = "swallowed-secret";

    // ipmitool gives up by itself: 1 try of 1 s per request, twice.
    let timeout = Duration::from_secs(3);
    let start = Instant::now();
    let e = endpoint(port, "admin", password, timeout)
        .power(PowerAction::Off)
        .await
        .expect_err("no answer");
    assert!(matches!(e, Error::Timeout(t) if t == timeout), "{e:?}");
    assert!(start.elapsed() <= timeout, "took {:?}", start.elapsed());
    assert_eq!(e.to_string(), "no answer within 3s");

    // A timeout shorter than ipmitool's tries: the run is cut at the
    // timeout and ipmitool killed. While it runs, its arguments (readable
    // by anyone in /proc) do not carry the password.
    let timeout = Duration::from_secs(1);
    let bmc = endpoint(port, "admin", password, timeout);
    let start = Instant::now();
    let call = tokio::spawn(async move { bmc.power_state().await });
    assert!(
        eventually(Duration::from_secs(1), || !ipmitool_argv(port).is_empty()).await,
        "ipmitool never ran"
    );
    for argv in ipmitool_argv(port) {
        assert!(!argv.contains(password), "password in argv: {argv}");
        assert!(argv.contains(" -E "), "{argv}");
    }
    let e = call.await.expect("join").expect_err("no answer");
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout(t) if t == timeout), "{e:?}");
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    assert!(
        eventually(Duration::from_secs(1), || ipmitool_argv(port).is_empty()).await,
        "ipmitool still runs after the timeout"
    );
}

/// The command lines of the ipmitool processes that talk to `port`.
fn ipmitool_argv(port: u16) -> Vec<String> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|raw| {
            raw.split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|args| {
            args.first().is_some_and(|a| a.ends_with("ipmitool"))
                && args.windows(2).any(|w| w[0] == "-p" && w[1] == port)
        })
        .map(|args| args.join(" "))
        .collect()
}

/// How many times the machine's firmware has started, from its serial log
/// (appended to across power cycles).
fn seabios_boots(serial: &Path) -> usize {
    std::fs::read_to_string(serial)
        .unwrap_or_default()
        .matches("SeaBIOS (version")
        .count()
}

#[tokio::test]
#[ignore = "needs ipmi_sim and QEMU (tests/setup-peers)"]
async fn a_qemu_machine_follows_its_bmc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serial = dir.path().join("serial.log");
    let serial_arg = format!("file,id=ser0,path={},append=on", serial.display());
    // SeaBIOS without a disk or NIC: it prints its banner on COM1
    // (graphics=off), finds nothing to boot and waits to retry.
    let sim = SimBmc::start(&[
        "qemu-system-x86_64",
        "-machine",
        "q35,accel=tcg,graphics=off",
        "-m",
        "64",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-chardev",
        &serial_arg,
        "-serial",
        "chardev:ser0",
    ]);
    let bmc = sim.bmc();
    let boot = Duration::from_secs(60);

    bmc.boot_pxe_once(BootMode::Legacy).await.expect("bootdev");
    bmc.power(PowerAction::On).await.expect("on");
    let first = sim.machine_pid().expect("QEMU runs");
    assert!(
        eventually(boot, || seabios_boots(&serial) == 1).await,
        "no boot on serial: {:?}",
        std::fs::read_to_string(&serial)
    );

    bmc.power(PowerAction::Cycle).await.expect("cycle");
    assert!(
        eventually(boot, || seabios_boots(&serial) == 2).await,
        "no second boot on serial after the cycle"
    );
    let second = sim.machine_pid().expect("QEMU runs again");
    assert_ne!(first, second, "the cycle did not restart QEMU");
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::On);

    bmc.power(PowerAction::Off).await.expect("off");
    assert_eq!(bmc.power_state().await.expect("status"), PowerState::Off);
    assert_eq!(sim.machine_pid(), None, "QEMU still runs after power off");

    firmware_never_asked_the_bmc(&sim);
}

#[tokio::test]
#[ignore = "needs ipmi_sim, QEMU and OVMF (tests/setup-peers)"]
async fn ovmf_ignores_the_ipmi_boot_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = dir.path().join("VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF VARS");
    let serial = dir.path().join("serial.log");
    let serial_arg = format!("file,id=ser0,path={},append=on", serial.display());
    let code = "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd";
    let vars_arg = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    // OVMF's native PXE on a NIC whose hub leads nowhere: it announces its
    // first boot option on COM1 and finds no server.
    let sim = SimBmc::start(&[
        "qemu-system-x86_64",
        "-machine",
        "q35,accel=tcg",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-drive",
        code,
        "-drive",
        &vars_arg,
        "-chardev",
        &serial_arg,
        "-serial",
        "chardev:ser0",
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
        "-netdev",
        "hubport,id=n0,hubid=0",
    ]);
    let bmc = sim.bmc();
    bmc.boot_pxe_once(BootMode::Uefi).await.expect("bootdev");
    bmc.power(PowerAction::On).await.expect("on");
    let started = || {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains(">>Start PXE over IPv4")
    };
    assert!(
        eventually(Duration::from_secs(120), started).await,
        "OVMF never reached its first boot option"
    );
    bmc.power(PowerAction::Off).await.expect("off");
    firmware_never_asked_the_bmc(&sim);
}

/// QEMU's IPMI device connected to ipmi_sim (its handshake, ending with its
/// capabilities, is logged as `Raw serial cmd:`), and the firmware never
/// sent a byte of a request over it (`Raw serial receive:`, or a decoded
/// request on channel 15, the system interface): it never read the boot
/// flags (tests/beds/bmc/README.md).
fn firmware_never_asked_the_bmc(sim: &SimBmc) {
    let log = std::fs::read_to_string(sim.path("ipmi_sim.log")).expect("ipmi_sim.log");
    assert!(
        log.contains("Raw serial cmd:"),
        "QEMU never connected: {log}"
    );
    assert!(
        !log.contains("Raw serial receive:"),
        "a request from the guest: {log}"
    );
    assert!(
        !log.contains("channel=15 "),
        "a request from the guest: {log}"
    );
}
