//! End-to-end netboot on real firmware: QEMU (TCG) machines PXE-boot from
//! `kickstand serve` on a private bridge inside network namespaces, next to
//! dnsmasq playing the office DHCP server (addresses only). The installer is
//! a stand-in (Debian's kernel plus a busybox initramfs, built by
//! `tests/beds/netboot/build-initrd.sh`) that fetches its kickstart, reports
//! `installed` and powers off, so a whole boot fits in well under a minute.
//!
//! The bed itself (namespaces, bridge, tap, office dnsmasq, mirror) is the
//! shell scripts in `tests/beds/netboot/`; this file owns the Kickstand
//! config, the daemon process and the assertions. Every test needs root,
//! `ip netns`, dnsmasq, qemu-system-x86, ipxe, ipxe-qemu, ovmf,
//! busybox-static, linux-image-amd64, python3 and curl, and fails (never
//! skips) when one is missing; the bed also wants shim-signed,
//! grub-efi-amd64-signed, sbsigntool, grub-pc-bin, xorriso, mtools,
//! dosfstools and fdisk (Secure Boot tree, test disks), and the ARM64 and
//! HTTP boot self-checks qemu-system-arm, qemu-efi-aarch64 and PyPI's
//! virt-firmware, and the IPMI test openipmi and ipmitool (`tests/setup-peers`
//! installs them all).
//!
//! The `bed_selfcheck_*` tests run the stand-in (dnsmasq and small Python
//! servers in Kickstand's place) on every firmware path: when they pass and
//! a Kickstand test fails, look at Kickstand.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

const BED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/beds/netboot");
const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates");
/// Kickstand's address on the bed's bridge, and its HTTP port there.
const APPLIANCE: &str = "http://10.77.0.1:8080";
/// The operator's channel: HTTPS, its certificate the one the daemon made.
const OPERATOR: &str = "https://10.77.0.1:8443";
/// The mirror directory (inside the bed's mirror) holding the stand-in.
const TREE: &str = "standin/9/BaseOS/x86_64/os";

const BIOS_MAC: &str = "52:54:00:12:34:01";
const UEFI_MAC: &str = "52:54:00:12:34:02";
const ONCE_MAC: &str = "52:54:00:12:34:03";
const STRANGER_MAC: &str = "52:54:00:99:99:01";
const STRANGER_UEFI_MAC: &str = "52:54:00:99:99:02";
const FAIL_MAC: &str = "52:54:00:12:34:04";

/// SeaBIOS found nothing to boot: the network boot (and the absent disk)
/// came to nothing.
const SEABIOS_NO_BOOT: &str = "No bootable device";
/// Signs on the serial console that a machine gave up netbooting, so a
/// failing test stops there instead of at the hard timeout.
const GAVE_UP: &[&str] = &[
    SEABIOS_NO_BOOT,
    "KS-STANDIN: FAILED",
    "Shell> ",
    "BdsDxe: No bootable option",
];

/// What the stand-in installer prints once it has its kickstart, before
/// the MAC (and only then: its whole serial log is read at every poll).
const KICKSTART_FETCHED: &str = "KS-STANDIN: fetched kickstart for ";

/// What the bed's test disks print when a machine boots them.
const DISK_MARKER: &str = "KS-DISK: booted from disk";
/// A boot-to-disk run stops at the disk's marker, or where the machine
/// will not reach its disk: the EFI shell, OVMF's setup menu, or the
/// installer starting again.
const DISK_OR_STUCK: &[&str] = &[
    DISK_MARKER,
    SEABIOS_NO_BOOT,
    "Shell> ",
    "Boot Maintenance Manager",
    "KS-STANDIN",
    // GRUB found no config: the machine waits at its prompt.
    "grub> ",
];

/// Hard limit for one VM run under TCG (a whole install boot takes 25–50 s
/// on 2 cores; a failed UEFI PXE falls back to HTTP boot after ~70 s).
const VM_LIMIT: Duration = Duration::from_secs(240);

/// Two beds (and VMs) at a time: a TCG guest keeps one core busy, so two
/// share a 2-core machine's cores; a third would only slow all of them
/// and bring the hard timeout within reach. Each bed has namespaces of its
/// own, and the stand-in cache is built under a lock (bed-up.sh).
static SLOTS: Slots = Slots::new(2);

/// A counting semaphore over threads (std has none).
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    const fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot; it is given back when the `Slot` drops, also
    /// when a test panics.
    fn take(&'static self) -> Slot {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

#[derive(Debug)]
struct Slot(&'static Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// What the bed's Kickstand config says beyond its hosts.
#[derive(Debug, Clone, Copy)]
struct Site<'a> {
    /// `dhcp.unknown`.
    unknown: &'static str,
    /// A host whose install fails on purpose.
    failing: Option<&'static str>,
    /// Extra profile lines per host (MAC, YAML indented under the host).
    extra: &'a [(&'a str, &'a str)],
    /// Also define `standin-9-arm`, the bed's arm64 tree (`arch: aarch64`).
    aarch64: bool,
    /// The machines' port also carries this VLAN tagged (`bed-up.sh`'s
    /// `KS_BED_VLAN`), and Kickstand listens on it (`interface_vlans`).
    vlan: Option<u16>,
    /// The segment also has IPv6 (`bed-up.sh`'s `KS_BED_IPV6`: the office
    /// router and DHCPv6 server), and Kickstand is an IPv6-only appliance
    /// (`address: fd77::1`, no DHCPv4).
    ipv6: bool,
}

impl Default for Site<'_> {
    fn default() -> Self {
        Site {
            unknown: "ignore",
            failing: None,
            extra: &[],
            aarch64: false,
            vlan: None,
            ipv6: false,
        }
    }
}

/// Who answers PXE on the bed.
#[derive(Debug, Clone, Copy)]
enum BedMode {
    Kickstand,
    Standin,
}

#[derive(Debug, Clone, Copy)]
enum Firmware {
    /// SeaBIOS; the NIC's option ROM is QEMU's iPXE, so the very first DHCP
    /// already carries user class `iPXE`.
    Bios,
    /// OVMF with the option ROM disabled: native UEFI PXE, TFTP of ipxe.efi.
    Uefi,
    /// OVMF's Secure Boot build with Microsoft's keys enrolled and Secure
    /// Boot enforced: only signed loaders (shim → GRUB → kernel) run.
    UefiSecureBoot,
    /// `qemu-system-aarch64` with AAVMF: native UEFI PXE, client arch 11.
    Aarch64,
}

impl Firmware {
    fn arg(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiSecureBoot => "uefi-sb",
            Firmware::Aarch64 => "aarch64",
        }
    }
}

/// The bed's test disks (`build-disk.sh`): booting one prints
/// [`DISK_MARKER`] on the serial console and powers the VM off.
#[derive(Debug, Clone, Copy)]
enum Disk {
    /// GRUB for i386-pc.
    Bios,
    /// GPT with an ESP holding Debian's signed shim and GRUB at
    /// `EFI/BOOT/BOOTX64.EFI` and `EFI/debian/shimx64.efi`.
    Uefi,
    /// [`Disk::Bios`] that stays up after the marker: a running installed
    /// system, for its BMC to power cycle.
    BiosStaysUp,
}

impl Disk {
    /// The image's path, as `bed.env` names it.
    fn image(self, bed: &Bed) -> String {
        let key = match self {
            Disk::Bios => "DISK_BIOS",
            Disk::Uefi => "DISK_UEFI",
            Disk::BiosStaysUp => "DISK_BIOS_UP",
        };
        read_env(&bed.path("bed.env"), key)
    }
}

/// Extras for one VM run (`vm.sh` options).
#[derive(Debug, Clone, Copy, Default)]
struct VmOpts {
    /// Attach this disk; the boot order becomes network first, disk second.
    disk: Option<Disk>,
    /// UEFI: the NIC's HTTP boot option goes first in BootOrder.
    http_first: bool,
    /// UEFI: the firmware's IPv4 PXE is off, as on an IPv6-only rack.
    no_pxe4: bool,
}

/// How a VM run ended.
#[derive(Debug)]
enum VmEnd {
    /// QEMU exited by itself (the guest powered off, or the bed's timeout).
    Exited(ExitStatus),
    /// The serial console showed one of the texts the test stops at.
    StoppedAt(&'static str),
}

#[derive(Debug)]
struct VmRun {
    end: VmEnd,
    elapsed: Duration,
    serial: String,
    /// When the stand-in said it fetched its kickstart, from power-on.
    kickstart_at: Option<Duration>,
}

impl VmRun {
    fn powered_off(&self) -> bool {
        matches!(&self.end, VmEnd::Exited(s) if s.success())
    }
}

/// A running bed plus a running daemon. Dropping it stops everything and
/// removes the namespaces, also when the test panicked (then it prints the
/// logs first).
#[derive(Debug)]
struct Bed {
    _slot: Slot,
    work: tempfile::TempDir,
    ns: String,
    daemon: Option<Child>,
}

impl Bed {
    /// Brings up the bed and `kickstand serve` with a profile for `hosts`
    /// (MAC, hostname); every other MAC is a stranger to Kickstand.
    fn up(hosts: &[(&str, &str)]) -> Bed {
        Bed::up_with(hosts, &Site::default())
    }

    fn up_with(hosts: &[(&str, &str)], site: &Site) -> Bed {
        let mut bed = Bed::bring_up_with(BedMode::Kickstand, site);
        bed.write_site(hosts, site);
        bed.start_daemon();
        bed
    }

    /// The bed with dnsmasq (ProxyDHCP + TFTP) and a small HTTP server in
    /// Kickstand's place: checks the bed, the firmware and the stand-in alone.
    fn standin() -> Bed {
        Bed::bring_up(BedMode::Standin)
    }

    fn bring_up(mode: BedMode) -> Bed {
        Bed::bring_up_with(mode, &Site::default())
    }

    /// The bed as `site` wants it: with `aarch64` the mirror also gets the
    /// arm64 tree (Debian's arm64 shim and GRUB, downloaded once through
    /// apt into the stand-in cache); with `vlan` the machines' port carries
    /// that VLAN tagged too; with `ipv6` the segment has IPv6.
    fn bring_up_with(mode: BedMode, site: &Site) -> Bed {
        let slot = SLOTS.take();
        let work = tempfile::Builder::new()
            .prefix("ks-netboot-")
            .tempdir()
            .expect("temp dir");
        let standin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netboot-standin");
        let mut up = Command::new(format!("{BED}/bed-up.sh"));
        up.arg(work.path())
            .env("KS_STANDIN_DIR", &standin)
            .env("KS_MIRROR_TREE", TREE);
        if let BedMode::Standin = mode {
            up.arg("standin");
        }
        if site.aarch64 {
            up.env("KS_BED_AARCH64", "1");
        }
        if let Some(vlan) = site.vlan {
            up.env("KS_BED_VLAN", vlan.to_string());
        }
        if site.ipv6 {
            up.env("KS_BED_IPV6", "1");
        }
        let status = up
            .status()
            .expect("run tests/beds/netboot/bed-up.sh (needs bash)");
        // bed-up.sh takes down what it built when it fails.
        assert!(
            status.success(),
            "bed-up.sh failed: {status} (needs root, iproute2, dnsmasq, qemu, python3, busybox-static, linux-image-amd64)"
        );
        let ns = read_env(&work.path().join("bed.env"), "NS");
        Bed {
            _slot: slot,
            work,
            ns,
            daemon: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// How the bed treats `mac` (`bed-host.sh`): roles such as `grub`,
    /// `ignore`, `snp`, and the stand-in's own iPXE script or GRUB config
    /// for that host.
    fn host(&self, mac: &str, roles: &[&str], ipxe_script: Option<&str>, grub_cfg: Option<&str>) {
        let mut cmd = Command::new(format!("{BED}/bed-host.sh"));
        cmd.arg(self.work.path()).arg(mac).args(roles);
        let tag = mac.replace(':', "");
        if let Some(script) = ipxe_script {
            let file = self.path(&format!("host-{tag}.ipxe"));
            fs::write(&file, script).expect("write the host's iPXE script");
            cmd.arg("--ipxe-script").arg(file);
        }
        if let Some(cfg) = grub_cfg {
            let file = self.path(&format!("host-{tag}.grub.cfg"));
            fs::write(&file, cfg).expect("write the host's GRUB config");
            cmd.arg("--grub-cfg").arg(file);
        }
        let status = cmd.status().expect("run tests/beds/netboot/bed-host.sh");
        assert!(
            status.success(),
            "bed-host.sh {mac} {roles:?} failed: {status}"
        );
    }

    fn write_site(&self, hosts: &[(&str, &str)], options: &Site) {
        // The boot loaders, installed the way an appliance gets them.
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../image/install-bootloaders.sh");
        let status = Command::new(script)
            .arg(self.path("tftp"))
            .status()
            .expect("install-bootloaders.sh");
        assert!(
            status.success(),
            "install-bootloaders.sh failed (needs Debian's ipxe package)"
        );
        let site = self.path("site");
        fs::create_dir_all(&site).expect("site dir");
        fs::write(
            site.join("kickstand.yaml"),
            format!(
                "server:
  address: {address}
  bind: {bind}
  interfaces: {interfaces}
  http_port: 8080
  https_port: 8443
  tftp_port: 69
dhcp:
  mode: proxy
  unknown: {unknown}
  uefi_loader: ipxe.efi
  # iPXE would wait some 13 s for an IPv6 router before asking for its
  # script: there is none on the bed.
  answer_router_solicitations: true
tftp:
  root: ../tftp
# The bed's mirror, reached directly (no office proxy in this bed).
mirrors:
  bed: [http://127.0.0.1:8081/]
cache:
  dir: ../cache
  max_size: 1GiB
paths:
  templates: {TEMPLATES}
  state: ../state
",
                unknown = options.unknown,
                address = if options.ipv6 {
                    "\"fd77::1\""
                } else {
                    "10.77.0.1"
                },
                bind = if options.ipv6 { "\"::\"" } else { "0.0.0.0" },
                interfaces = match options.vlan {
                    None => "[ksbr0]".to_owned(),
                    Some(v) => format!("[ksbr0, ksvl{v}]\n  interface_vlans: {{ ksvl{v}: {v} }}"),
                },
            ),
        )
        .expect("write kickstand.yaml");
        let mut profile = String::from(
            "defaults:
  timezone: UTC
  root_password_hash: \"$6$kickstand$7nnnz58yhhGqh4hFM4Ph9yOkPehrOLT.DgrbuBQQD.ozFzzuJQvJKjE.Mgvl4FzX9K6BdB05rk7bZb0PkRJD4.\"
os:
  standin-9:
    title: Installer stand-in
    mirror: bed
    tree: ",
        );
        profile.push_str(TREE);
        profile.push_str(
            "
    kickstart: centos-stream-9.ks.j2
    boot_args: console=ttyS0
",
        );
        if options.aarch64 {
            let tree = read_env(&self.path("bed.env"), "MIRROR_TREE_AA64");
            profile.push_str(&format!(
                "  standin-9-arm:
    title: Installer stand-in (arm64)
    mirror: bed
    tree: {tree}
    arch: aarch64
    kickstart: centos-stream-9.ks.j2
"
            ));
        }
        profile.push_str("hosts:\n");
        for (mac, hostname) in hosts {
            let extra: String = options
                .extra
                .iter()
                .filter(|(m, _)| m == mac)
                .map(|(_, lines)| *lines)
                .collect();
            profile.push_str(&format!("  \"{mac}\":\n    hostname: {hostname}\n"));
            // Extra lines may name another OS.
            if !extra.lines().any(|l| l.starts_with("    os:")) {
                profile.push_str("    os: standin-9\n");
            }
            profile.push_str(&extra);
            if options.failing == Some(*mac) {
                // The stand-in's %onerror path: it reports this reason.
                profile.push_str(
                    "    kickstart:\n      pre: \"# KS-STANDIN-FAIL: no disk matches ignoredisk --only-use=vda\"\n",
                );
            }
        }
        fs::write(site.join("bed.yaml"), profile).expect("write bed.yaml");
    }

    fn start_daemon(&mut self) {
        let log = fs::File::create(self.path("kickstand.log")).expect("daemon log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                env!("CARGO_BIN_EXE_kickstand"),
                "serve",
                "--config",
            ])
            .arg(self.path("site/kickstand.yaml"))
            // Decisions to ignore a client are logged at debug.
            .env(
                "KICKSTAND_LOG",
                "info,kickstand_dhcp=debug,kickstand_tftp=debug",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start kickstand in the bed's namespace");
        // bed-down.sh stops every process it finds a pid file for.
        fs::write(self.path("kickstand.pid"), child.id().to_string()).expect("pid file");
        self.daemon = Some(child);

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("kickstand serve exited early: {status}");
            }
            if self.http("GET", "/status").0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kickstand did not answer /status within 30 s"
            );
            sleep(Duration::from_millis(200));
        }
        // HTTP answers last in `serve`; give the UDP services a moment too.
        sleep(Duration::from_millis(500));
    }

    /// Edits the running daemon's `kickstand.yaml` (`from` → `to`) and
    /// waits until the daemon has put the new profiles in force.
    fn reconfigure(&self, from: &str, to: &str) {
        let path = self.path("site/kickstand.yaml");
        let text = fs::read_to_string(&path).expect("read kickstand.yaml");
        assert!(text.contains(from), "kickstand.yaml lacks {from:?}");
        let reloads = || self.daemon_log().matches("profiles reloaded").count();
        let before = reloads();
        fs::write(&path, text.replacen(from, to, 1)).expect("write kickstand.yaml");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reloads() == before {
            assert!(
                Instant::now() < deadline,
                "the daemon did not reload kickstand.yaml within 30 s"
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// An HTTP request from inside the namespace: (status, body).
    fn http(&self, method: &str, path: &str) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "curl", "-sS", "-m", "10", "-X", method,
            ])
            .args(["-w", "\n%{http_code}", &format!("{APPLIANCE}{path}")])
            .stdin(Stdio::null())
            .output()
            .expect("run curl in the bed's namespace");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn read(&self, name: &str) -> String {
        fs::read(self.path(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn daemon_log(&self) -> String {
        strip_ansi(&self.read("kickstand.log"))
    }

    /// Boots one VM and waits until it powers off, the bed's hard timeout
    /// kills it, or one of the `stop_at` texts shows on its serial console.
    fn boot(&self, fw: Firmware, mac: &str, name: &str, stop_at: &[&'static str]) -> VmRun {
        self.boot_with(fw, mac, name, stop_at, VmOpts::default())
    }

    /// [`Bed::boot`] with a disk attached or HTTP boot first.
    fn boot_with(
        &self,
        fw: Firmware,
        mac: &str,
        name: &str,
        stop_at: &[&'static str],
        opts: VmOpts,
    ) -> VmRun {
        let serial = self.path(&format!("{name}.log"));
        let mut vm = Command::new(format!("{BED}/vm.sh"));
        if let Some(disk) = opts.disk {
            vm.arg("--disk").arg(disk.image(self));
        }
        if opts.http_first {
            vm.arg("--http-first");
        }
        if opts.no_pxe4 {
            vm.arg("--no-pxe4");
        }
        let started = Instant::now();
        let mut vm = vm
            .arg(self.work.path())
            .args([fw.arg(), mac])
            .arg(&serial)
            .arg(VM_LIMIT.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::File::create(self.path(&format!("{name}.qemu-stderr.log")))
                    .expect("stderr log"),
            )
            .spawn()
            .expect("run tests/beds/netboot/vm.sh");
        let fetched = format!("{KICKSTART_FETCHED}{mac}");
        let mut kickstart_at = None;
        let end = loop {
            if let Some(status) = vm.try_wait().expect("wait for vm.sh") {
                break VmEnd::Exited(status);
            }
            let seen = read_lossy(&serial);
            if kickstart_at.is_none() && seen.contains(&fetched) {
                kickstart_at = Some(started.elapsed());
            }
            if let Some(text) = stop_at.iter().find(|t| seen.contains(**t)) {
                self.stop_qemu();
                let _ = vm.wait();
                break VmEnd::StoppedAt(text);
            }
            if started.elapsed() > VM_LIMIT + Duration::from_secs(20) {
                // vm.sh's own timeout should have fired; do its job.
                self.stop_qemu();
                let _ = vm.kill();
                break VmEnd::Exited(vm.wait().expect("reap vm.sh"));
            }
            sleep(Duration::from_millis(250));
        };
        let run = VmRun {
            end,
            elapsed: started.elapsed(),
            serial: read_lossy(&serial),
            kickstart_at,
        };
        let how = match &run.end {
            VmEnd::Exited(status) => format!("exited ({status})"),
            VmEnd::StoppedAt(text) => format!("stopped at `{text}`"),
        };
        eprintln!(
            "netboot: {name} ({}) {how} after {:.1} s",
            fw.arg(),
            run.elapsed.as_secs_f64()
        );
        if let Some(at) = run.kickstart_at {
            eprintln!(
                "netboot: {name}: power-on → kickstart fetched in {:.1} s",
                at.as_secs_f64()
            );
        }
        run
    }

    fn stop_qemu(&self) {
        let pid = self.read("qemu.pid");
        let pid = pid.trim();
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
    }

    /// A POST from inside the namespace with the operator token, over
    /// HTTPS to the certificate the daemon made (and no other).
    fn operator_post(&self, path: &str, body: &str) -> (u16, String) {
        let token = self.read("state/operator.token");
        let cert = self.path("state/https.crt");
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "curl", "-sS", "-m", "10", "-X", "POST",
            ])
            .arg("--cacert")
            .arg(&cert)
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .args(["-H", "Content-Type: application/json", "--data", body])
            .args(["-w", "\n%{http_code}", &format!("{OPERATOR}{path}")])
            .stdin(Stdio::null())
            .output()
            .expect("run curl in the bed's namespace");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The real `kickstand` CLI on the daemon's config, in the namespace
    /// (the operator's token and pinned certificate are in its state dir):
    /// (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_kickstand")])
            .arg("--config")
            .arg(self.path("site/kickstand.yaml"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run kickstand in the bed's namespace");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The build token the host's install script carries now.
    /// The host's build token as the state database holds it: the VM's
    /// own script carried it, and the test's address is never handed one.
    fn stored_token(&self, mac: &str) -> Option<String> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 row = sqlite3.connect(sys.argv[1]).execute(\n\
                 'select token from hosts where mac = ?', (sys.argv[2],)).fetchone()\n\
                 print(row[0] if row and row[0] else '')",
            ])
            .arg(self.path("state/state.db"))
            .arg(mac)
            .output()
            .expect("python3");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!token.is_empty()).then_some(token)
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.http("GET", path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The `phase` of `mac` in `GET /api/hosts`.
    fn phase(&self, mac: &str) -> String {
        let (status, body) = self.http("GET", "/api/hosts");
        assert_eq!(status, 200, "GET /api/hosts: {body}");
        let hosts: serde_json::Value = serde_json::from_str(&body).expect("/api/hosts is JSON");
        let host = hosts
            .as_array()
            .expect("/api/hosts is a list")
            .iter()
            .find(|h| h["mac"].as_str() == Some(mac))
            .unwrap_or_else(|| panic!("{mac} missing from /api/hosts: {body}"));
        host["phase"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// An operator re-arms an installed `mac`: its next boot (`fw`, serial
    /// log `name`) installs again with a new build token, and the token of
    /// the install before, `first_token`, is refused.
    fn rearm_and_reinstall(&self, fw: Firmware, mac: &str, first_token: &str, name: &str) {
        let (status, body) = self.operator_post(&format!("/api/hosts/{mac}/rearm"), "");
        assert_eq!(status, 200, "rearm: {body}");
        let run = self.boot(fw, mac, name, GAVE_UP);
        assert!(
            run.powered_off()
                && run
                    .serial
                    .contains(&format!("KS-STANDIN: reported installed for {mac}")),
            "the re-armed host did not reinstall: {:?}",
            run.end
        );
        assert_eq!(self.phase(mac), "installed");
        let second_token = self.stored_token(mac).expect("the reinstall's token");
        assert_ne!(second_token, first_token, "the reinstall gets a new token");
        let (status, _) = self.http("GET", &format!("/ks/{mac}?token={first_token}"));
        assert_eq!(status, 403, "the first install's token still works");
    }

    /// Asserts what Kickstand itself saw of one full install of `mac`.
    fn assert_installed_by_kickstand(&self, mac: &str, run: &VmRun) {
        assert!(
            run.powered_off(),
            "the VM did not power off after installing: {:?}",
            run.end
        );
        for marker in [
            format!("{KICKSTART_FETCHED}{mac}"),
            format!("KS-STANDIN: reported installed for {mac}"),
        ] {
            assert!(
                run.serial.contains(&marker),
                "serial console lacks `{marker}`"
            );
        }
        let log = self.daemon_log();
        assert!(
            log_has(&log, &["dhcp: reply", mac, "Ipxe"]),
            "Kickstand's log shows no ProxyDHCP reply to iPXE on {mac}"
        );
        assert!(
            log_has(&log, &["router solicitation answered", mac]),
            "Kickstand's log shows no router advertisement to the iPXE on {mac}"
        );
        assert!(
            http_logged(&log, "/boot/", mac, "200"),
            "Kickstand's log shows no GET /boot/<mac>.ipxe → 200 for {mac}"
        );
        assert!(
            http_logged(&log, "/ks/", mac, "200"),
            "Kickstand's log shows no GET /ks/<mac> → 200 for {mac}"
        );
        assert!(
            http_logged(&log, "/api/hosts/", mac, "20") && log.contains("/installed"),
            "Kickstand's log shows no accepted POST /api/hosts/<mac>/installed for {mac}"
        );
        // The installer images came through the repo proxy: the mirror saw
        // Kickstand (loopback in the namespace), never the VM.
        let mirror = self.read("mirror.log");
        for image in ["images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"] {
            let hits: Vec<&str> = mirror
                .lines()
                .filter(|l| l.contains(image) && l.contains("\"GET "))
                .collect();
            assert!(!hits.is_empty(), "the mirror never served {image}");
            assert!(
                hits.iter().all(|l| l.starts_with("127.0.0.1 ")),
                "{image} was fetched from the mirror by someone other than Kickstand: {hits:?}"
            );
        }
        assert_eq!(
            self.phase(mac),
            "installed",
            "GET /api/hosts state of {mac}"
        );
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let down = Command::new(format!("{BED}/bed-down.sh"))
            .arg(self.work.path())
            .status();
        if let Some(mut daemon) = self.daemon.take() {
            if !matches!(daemon.try_wait(), Ok(Some(_))) {
                let _ = daemon.kill();
            }
            let _ = daemon.wait();
        }
        if !matches!(down, Ok(s) if s.success()) {
            eprintln!(
                "netboot: bed-down.sh failed ({down:?}); namespace {} may be left over",
                self.ns
            );
        }
    }
}

impl Bed {
    fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(self.work.path()) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = read_lossy(&log);
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(150)..];
            eprintln!(
                "===== {} (last {} lines) =====\n{}",
                log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// The log without terminal colour codes, in case the subscriber colours
/// a file anyway.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn read_env(path: &Path, key: &str) -> String {
    let text = read_lossy(path);
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing from {}", path.display()))
        .trim()
        .to_owned()
}

/// Every spelling of a MAC a request path may carry: iPXE percent-encodes
/// the colons of a URL it got from DHCP (`52%3A54%3A…`).
fn mac_forms(mac: &str) -> [String; 3] {
    [
        mac.to_owned(),
        mac.replace(':', "%3A"),
        mac.replace(':', "-"),
    ]
}

/// A log line holding every one of `needles`.
fn log_has(log: &str, needles: &[&str]) -> bool {
    log.lines().any(|l| needles.iter().all(|n| l.contains(n)))
}

/// An `http` access line for `prefix…<mac>…` with a status starting `status`.
fn http_logged(log: &str, prefix: &str, mac: &str, status: &str) -> bool {
    let status = format!("status={status}");
    log.lines().any(|l| {
        l.contains(prefix)
            && l.contains(&status)
            && mac_forms(mac)
                .iter()
                .any(|m| l.contains(&format!("{prefix}{m}")))
    })
}

/// How many times Kickstand served `mac` its boot script.
fn script_fetches(log: &str, mac: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("status=200")
                && mac_forms(mac)
                    .iter()
                    .any(|m| l.contains(&format!("/boot/{m}.ipxe")))
        })
        .count()
}

/// The bed without Kickstand: when this passes and the others fail, look
/// at Kickstand, not at the firmware, the bed or the stand-in.
#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn bed_selfcheck_standin_proxydhcp_boots_installer() {
    let bed = Bed::standin();
    let run = bed.boot(Firmware::Bios, BIOS_MAC, "selfcheck", GAVE_UP);
    assert!(
        run.powered_off(),
        "the VM did not power off after installing: {:?}",
        run.end
    );
    for marker in [
        format!("KS-STANDIN: fetched kickstart for {BIOS_MAC}"),
        format!("KS-STANDIN: reported installed for {BIOS_MAC}"),
    ] {
        assert!(
            run.serial.contains(&marker),
            "serial console lacks `{marker}`"
        );
    }
    assert!(
        bed.path(&format!("standin-http/{BIOS_MAC}.installed"))
            .exists(),
        "no installed report arrived"
    );
}

#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn bios_ipxe_rom_installs_through_kickstand() {
    // `boot_loader: grub` is for UEFI: BIOS stays on iPXE.
    let bed = Bed::up_with(
        &[(BIOS_MAC, "bios01")],
        &Site {
            extra: &[(BIOS_MAC, "    boot_loader: grub\n")],
            ..Site::default()
        },
    );
    let run = bed.boot(Firmware::Bios, BIOS_MAC, "bios", GAVE_UP);
    bed.assert_installed_by_kickstand(BIOS_MAC, &run);
}

const VLAN_MAC: &str = "52:54:00:12:34:05";

/// `boot_vlan`: BIOS and iPXE boot on the port's untagged network; the
/// installer tags its NIC with VLAN 20 (its kernel's 802.1Q, on the
/// wire), takes its address from the office's DHCP there, and fetches its
/// kickstart and reports from that address, which its build token moved
/// to; no spoofing alarm.
#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn a_boot_vlan_host_installs_over_its_tagged_vlan() {
    let bed = Bed::up_with(
        &[(VLAN_MAC, "vlan01")],
        &Site {
            extra: &[(VLAN_MAC, "    boot_vlan: 20\n")],
            vlan: Some(20),
            ..Site::default()
        },
    );
    let run = bed.boot(Firmware::Bios, VLAN_MAC, "vlan", GAVE_UP);
    bed.assert_installed_by_kickstand(VLAN_MAC, &run);
    for marker in [
        "KS-STANDIN: VLAN 20 on ksboot",
        "KS-STANDIN: DHCP lease on ksboot.20: inet 10.77.20.",
    ] {
        assert!(
            run.serial.contains(marker),
            "serial console lacks `{marker}`"
        );
    }
    let timeline = bed.json(&format!("/api/hosts/{VLAN_MAC}/timeline"));
    let events = timeline["events"].as_array().expect("events");
    let from = |kind: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["detail"]["ip"].as_str())
            .collect()
    };
    let boot_script = from("boot-script");
    assert!(
        !boot_script.is_empty() && boot_script.iter().all(|ip| ip.starts_with("10.77.0.")),
        "iPXE fetched its script untagged: {timeline}"
    );
    let installer = from("kickstart-fetch");
    assert!(
        installer.len() == 1 && installer[0].starts_with("10.77.20."),
        "the kickstart went to the VLAN address: {timeline}"
    );
    let callbacks = from("callback");
    assert!(
        callbacks.len() >= 2 && callbacks.iter().all(|ip| *ip == installer[0]),
        "the callbacks came from the VLAN address: {timeline}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "token-bound"
            && e["detail"]["ip"] == installer[0]
            && e["detail"]["from"] == boot_script[0]),
        "the token moved from the boot address to the VLAN's: {timeline}"
    );
    assert!(
        !bed.daemon_log().contains("possible spoofing"),
        "a spoofing alarm for the installer's own VLAN address"
    );
}

#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn uefi_native_pxe_installs_then_boots_its_disk_then_reinstalls_when_rearmed() {
    let bed = Bed::up(&[(UEFI_MAC, "uefi01")]);
    let run = bed.boot(Firmware::Uefi, UEFI_MAC, "uefi", GAVE_UP);
    let first_token = bed.stored_token(UEFI_MAC).expect("the install's token");
    let log = bed.daemon_log();
    // A TFTP offer (a bare file name), not the UEFI HTTP boot URL that OVMF
    // only asks for after native PXE failed.
    assert!(
        log.lines().any(|l| l.contains("dhcp: reply")
            && l.contains(UEFI_MAC)
            && l.contains("ipxe.efi")
            && !l.contains("http://")),
        "Kickstand's log shows no ProxyDHCP offer of ipxe.efi (TFTP) to the UEFI PXE client {UEFI_MAC}"
    );
    assert!(
        !log.lines().any(|l| l.contains("kickstand_tftp")
            && l.contains("ipxe.efi")
            && l.contains("refused")),
        "Kickstand refused ipxe.efi over TFTP"
    );
    assert!(
        log_has(&log, &["kickstand_tftp", "ipxe.efi", "sent"]),
        "Kickstand's log shows no completed TFTP transfer of ipxe.efi"
    );
    bed.assert_installed_by_kickstand(UEFI_MAC, &run);

    // Installed, its firmware gets iPXE again (not left to time out
    // through PXEv6 and HTTP boot); the script does not `exit` (it hangs on
    // OVMF) but names Kickstand as next server and chains the tree's GRUB,
    // which reads its local-disk config from Kickstand and chainloads the
    // disk's own loader. The office DHCP is left as it is: it names itself.
    let before = bed.daemon_log().len();
    assert_reaches_disk(
        &bed,
        Firmware::Uefi,
        UEFI_MAC,
        "uefi-disk",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
    assert_office_names_no_next_server(&bed);
    assert!(
        bed.read("uefi-disk.log")
            .contains("Kickstand: uefi01 is installed; booting from its local disk"),
        "the disk was not reached through Kickstand's local-disk GRUB config"
    );
    let log = &bed.daemon_log()[before..];
    assert!(
        log_has(log, &["dhcp: reply", UEFI_MAC, "ipxe.efi"]),
        "the installed host's firmware was not offered iPXE"
    );
    assert!(
        log_has(log, &["/os/standin-9/EFI/BOOT/grubx64.efi", "status=200"]),
        "iPXE did not chain the tree's GRUB over HTTP"
    );
    assert!(
        tftp_sent_by_kickstand(log, &format!("grub.cfg-01-{}", UEFI_MAC.replace(':', "-"))),
        "GRUB did not read its config from Kickstand"
    );

    // `dhcp.uefi_local_boot: grub`, where the office names Kickstand as
    // next server (Debian's GRUB reads it only there): the firmware gets
    // the tree's shim at once and GRUB chainloads the disk.
    bed.reconfigure(
        "uefi_loader: ipxe.efi\n",
        "uefi_loader: ipxe.efi\n  uefi_local_boot: grub\n",
    );
    bed.host(UEFI_MAC, &["next-server"], None, None);
    let before = bed.daemon_log().len();
    assert_reaches_disk(
        &bed,
        Firmware::Uefi,
        UEFI_MAC,
        "uefi-disk-shim",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
    assert!(
        log_has(
            &bed.daemon_log()[before..],
            &["dhcp: reply", UEFI_MAC, "os/standin-9/EFI/BOOT/BOOTX64.EFI"]
        ),
        "the installed host's firmware was not offered the shim"
    );

    // Re-armed by the operator, the third boot installs again (iPXE, as
    // its profile says) with a new build token; the first one is refused.
    bed.rearm_and_reinstall(Firmware::Uefi, UEFI_MAC, &first_token, "uefi-reinstall");
}

#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn machine_without_profile_gets_no_boot_offer() {
    let bed = Bed::up(&[(BIOS_MAC, "bios01")]);
    // iPXE gives up on the network and SeaBIOS moves on: nothing was offered.
    let run = bed.boot(Firmware::Bios, STRANGER_MAC, "stranger", &[SEABIOS_NO_BOOT]);
    assert!(
        matches!(run.end, VmEnd::StoppedAt(_)),
        "the stranger VM never gave up on netboot: {:?}",
        run.end
    );
    assert!(
        bed.read("office.leases").contains(STRANGER_MAC),
        "the office DHCP server gave the stranger no address, so the bed proved nothing"
    );
    let log = bed.daemon_log();
    assert!(
        log_has(&log, &["dhcp: ignored", STRANGER_MAC, "no profile"]),
        "Kickstand's log shows no UnknownHost decision for {STRANGER_MAC}"
    );
    assert!(
        !log_has(&log, &["dhcp: reply", STRANGER_MAC]),
        "Kickstand answered the stranger's DHCP"
    );
    assert!(
        !mac_forms(STRANGER_MAC)
            .iter()
            .any(|m| log.contains(&format!("/boot/{m}"))),
        "the stranger fetched a boot script"
    );
    assert!(
        !run.serial.contains("KS-STANDIN"),
        "the stranger booted the installer"
    );
}

#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn installed_machine_next_boot_exits_to_local_disk() {
    let bed = Bed::up(&[(ONCE_MAC, "once01")]);
    let first = bed.boot(Firmware::Bios, ONCE_MAC, "once-install", GAVE_UP);
    bed.assert_installed_by_kickstand(ONCE_MAC, &first);
    let first_token = bed.stored_token(ONCE_MAC).expect("the install's token");

    // The script as iPXE asks for it (colons percent-encoded) and as written.
    for form in &mac_forms(ONCE_MAC)[..2] {
        let (status, script) = bed.http("GET", &format!("/boot/{form}.ipxe"));
        assert_eq!(status, 200, "GET /boot/{form}.ipxe: {script}");
        assert!(script.starts_with("#!ipxe"), "not an iPXE script: {script}");
        assert!(
            script.lines().any(|l| l.trim() == "exit"),
            "script does not exit to the local disk: {script}"
        );
        assert!(
            !script.lines().any(|l| l.trim_start().starts_with("kernel")),
            "script still boots an installer: {script}"
        );
    }

    // Boot again with its disk: iPXE runs the script, exits, and SeaBIOS
    // boots the disk; the installer never starts.
    let mirror_before = bed.read("mirror.log").len();
    let scripts_before = script_fetches(&bed.daemon_log(), ONCE_MAC);
    assert_reaches_disk(
        &bed,
        Firmware::Bios,
        ONCE_MAC,
        "once-reboot",
        Disk::Bios,
        "pc, (hd0)",
    );
    assert!(
        script_fetches(&bed.daemon_log(), ONCE_MAC) > scripts_before,
        "second boot never fetched its (local-disk) script from Kickstand"
    );
    let mirror = bed.read("mirror.log");
    assert!(
        !mirror[mirror_before..].contains("vmlinuz"),
        "second boot fetched the installer kernel"
    );
    assert_eq!(bed.phase(ONCE_MAC), "installed");

    // An operator re-arms it: the third boot installs again, with a new
    // build token; the first install's token is refused.
    bed.rearm_and_reinstall(Firmware::Bios, ONCE_MAC, &first_token, "once-reinstall");
    let timeline = bed.json(&format!("/api/hosts/{ONCE_MAC}/timeline"));
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    // (No TFTP on this path: the NIC's ROM is iPXE already.)
    for kind in [
        "dhcp-offer",
        "boot-script",
        "kickstart-fetch",
        "callback",
        "local-boot",
        "token-rejected",
    ] {
        assert!(
            kinds.contains(&kind),
            "no {kind} on the timeline: {kinds:?}"
        );
    }
}

/// `%onerror` through the stand-in: the host is failed with the reason,
/// its next boot is its disk (held), and the timeline says why.
#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn a_failing_install_is_reported_held_and_diagnosed() {
    let bed = Bed::up_with(
        &[(FAIL_MAC, "fail01")],
        &Site {
            failing: Some(FAIL_MAC),
            ..Site::default()
        },
    );
    let run = bed.boot(Firmware::Bios, FAIL_MAC, "failing", GAVE_UP);
    assert!(
        run.serial
            .contains(&format!("KS-STANDIN: reported failed for {FAIL_MAC}")),
        "the stand-in did not report its failure: {:?}",
        run.end
    );
    assert_eq!(bed.phase(FAIL_MAC), "failed");
    let timeline = bed.json(&format!("/api/hosts/{FAIL_MAC}/timeline"));
    let diagnosis = timeline["diagnosis"].as_str().unwrap_or_default();
    assert!(diagnosis.contains("no disk matches"), "{diagnosis}");
    // Its installer log came over syslog (inst.syslog=).
    let (status, log) = bed.http("GET", &format!("/api/hosts/{FAIL_MAC}/log"));
    assert_eq!(status, 200, "no installer log: {log}");
    assert!(log.contains("KS-STANDIN failing"), "{log}");
    // Held: the next boot is the disk, not the installer again.
    let (_, script) = bed.http("GET", &format!("/boot/{FAIL_MAC}.ipxe"));
    assert!(
        script.contains("\nexit\n") && !script.contains("kernel"),
        "{script}"
    );
}

/// `dhcp.unknown: discover`: a machine with no profile reports what iPXE
/// knows of it and boots its disk — a UEFI one through an OS tree's GRUB,
/// with the office DHCP untouched; adopted, its next boot installs.
#[test]
#[ignore = "peer: needs root, netns, qemu; run by .ci/run"]
fn an_unknown_machine_is_discovered_adopted_and_installed() {
    let bed = Bed::up_with(
        &[(BIOS_MAC, "bios01")],
        &Site {
            unknown: "discover",
            ..Site::default()
        },
    );
    let first = bed.boot(
        Firmware::Bios,
        STRANGER_MAC,
        "discovery",
        &[SEABIOS_NO_BOOT],
    );
    assert!(matches!(first.end, VmEnd::StoppedAt(_)), "{:?}", first.end);
    assert!(
        !first.serial.contains("KS-STANDIN"),
        "a stranger booted the installer"
    );
    let found = bed.json("/api/discovered");
    let row = found
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["mac"] == STRANGER_MAC))
        .unwrap_or_else(|| {
            panic!(
                "{STRANGER_MAC} not discovered: {found}\n{}",
                bed.daemon_log()
            )
        });
    let product = row["facts"]["product"].as_str().unwrap_or_default();
    assert!(
        product.contains("Standard PC"),
        "QEMU's SMBIOS product: {row}"
    );
    assert!(row["facts"]["uuid"].as_str().is_some(), "{row}");

    // UEFI: iPXE's `exit` would hang at "No more network devices".
    assert_reaches_disk(
        &bed,
        Firmware::Uefi,
        STRANGER_UEFI_MAC,
        "discovery-uefi",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
    assert_office_names_no_next_server(&bed);
    assert!(
        bed.read("discovery-uefi.log").contains(&format!(
            "Kickstand: no GRUB config for {STRANGER_UEFI_MAC}; booting the local disk"
        )),
        "the disk was not reached through Kickstand's generic GRUB config"
    );
    let found = bed.json("/api/discovered");
    let row = found
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["mac"] == STRANGER_UEFI_MAC))
        .unwrap_or_else(|| panic!("{STRANGER_UEFI_MAC} not discovered: {found}"));
    assert_eq!(row["facts"]["platform"], "efi", "{row}");

    let (status, body) = bed.operator_post(
        &format!("/api/discovered/{STRANGER_MAC}/adopt"),
        r#"{"hostname": "disc01", "os": "standin-9"}"#,
    );
    assert_eq!(status, 200, "adopt: {body}");
    let second = bed.boot(Firmware::Bios, STRANGER_MAC, "adopted", GAVE_UP);
    bed.assert_installed_by_kickstand(STRANGER_MAC, &second);
}

/// MACs of Kickstand's own firmware-path tests.
const SB_GRUB_MAC: &str = "52:54:00:12:36:11";
const SB_AUTO_MAC: &str = "52:54:00:12:36:12";
const UEFI_GRUB_MAC: &str = "52:54:00:12:36:13";
const ARM_MAC: &str = "52:54:00:12:36:14";
const HTTP_MAC: &str = "52:54:00:12:36:15";

/// The bed's x86_64 OS as Kickstand names its boot files over TFTP.
fn os_file(path: &str) -> String {
    format!("os/standin-9/{path}")
}

/// Kickstand's log shows a whole TFTP transfer of `file` (its span names
/// the file as asked, with or without a leading `/`).
fn tftp_sent_by_kickstand(log: &str, file: &str) -> bool {
    log.lines().any(|l| {
        l.contains("kickstand_tftp") && l.contains(&format!("{file}\"")) && l.contains(" sent ")
    })
}

/// GETs of `path` in the mirror's log, by client address.
fn mirror_gets<'a>(mirror: &'a str, path: &str) -> Vec<&'a str> {
    mirror
        .lines()
        .filter(|l| l.contains(&format!("\"GET /{path} ")))
        .collect()
}

/// The status code of one mirror log line (`"GET /p HTTP/1.1" 304 -`).
fn mirror_status(line: &str) -> Option<u16> {
    let (_, after) = line.rsplit_once("\" ")?;
    after.split_whitespace().next()?.parse().ok()
}

impl Bed {
    /// One install of `mac` on the shim → GRUB chain, as Kickstand saw it:
    /// ProxyDHCP offered the tree's shim, TFTP served the shim, GRUB, the
    /// configs, the kernel and the initrd from the repo cache (each pulled
    /// from the mirror once, by Kickstand), the kickstart was fetched and
    /// the install reported.
    fn assert_installed_through_grub(&self, mac: &str, run: &VmRun) {
        assert!(
            run.powered_off(),
            "the VM did not power off after installing: {:?}",
            run.end
        );
        for marker in [
            format!("KS-STANDIN: fetched kickstart for {mac}"),
            format!("KS-STANDIN: reported installed for {mac}"),
            "Kickstand: installing standin-9 on".to_owned(),
        ] {
            assert!(
                run.serial.contains(&marker),
                "serial console lacks `{marker}`"
            );
        }
        let log = self.daemon_log();
        let shim = os_file("EFI/BOOT/BOOTX64.EFI");
        assert!(
            log_has(
                &log,
                &["dhcp: reply", mac, &format!("boot_file=\"{shim}\"")]
            ),
            "Kickstand's log shows no ProxyDHCP offer of the shim to {mac}"
        );
        let host_cfg = format!("grub.cfg-01-{}", mac.replace(':', "-"));
        for file in [
            shim.clone(),
            os_file("EFI/BOOT/grubx64.efi"),
            "grub/grub.cfg".to_owned(),
            host_cfg,
            os_file("images/pxeboot/vmlinuz"),
            os_file("images/pxeboot/initrd.img"),
        ] {
            assert!(
                tftp_sent_by_kickstand(&log, &file),
                "Kickstand's log shows no whole TFTP transfer of {file}"
            );
        }
        assert!(
            http_logged(&log, "/ks/", mac, "200"),
            "Kickstand's log shows no GET /ks/<mac> → 200 for {mac}"
        );
        let mirror = self.read("mirror.log");
        for path in [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/grubx64.efi",
            "images/pxeboot/vmlinuz",
            "images/pxeboot/initrd.img",
        ] {
            let gets = mirror_gets(&mirror, &format!("{TREE}/{path}"));
            assert!(!gets.is_empty(), "the mirror never served {path}");
            assert!(
                gets.iter().all(|l| l.starts_with("127.0.0.1 ")),
                "{path} was fetched from the mirror by someone other than Kickstand: {gets:?}"
            );
        }
        assert_eq!(self.phase(mac), "installed", "state of {mac}");
    }
}

/// Secure Boot enforced (OVMF's Secure Boot build, Microsoft's keys): a
/// `boot_loader: grub` host is offered the tree's signed shim, which loads
/// the tree's GRUB beside it, which reads its config and the signed kernel
/// from Kickstand — all through the repo cache — and installs; its next
/// boot goes to its own disk through the same chain (GRUB chainloads the
/// disk's shim, which Secure Boot verifies). The same firmware offered the
/// unsigned ipxe.efi (`auto` on UEFI x64) refuses it: Secure Boot is on.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn secure_boot_installs_through_the_trees_shim_and_grub_then_boots_its_disk() {
    let bed = Bed::up_with(
        &[(SB_GRUB_MAC, "sb01"), (SB_AUTO_MAC, "sb02")],
        &Site {
            extra: &[(SB_GRUB_MAC, "    boot_loader: grub\n")],
            ..Site::default()
        },
    );
    // Debian's signed GRUB takes its TFTP server from the office ACK
    // (it lacks the RHEL patch that reads the ProxyDHCP offer).
    bed.host(SB_GRUB_MAC, &["next-server"], None, None);
    let install = bed.boot(Firmware::UefiSecureBoot, SB_GRUB_MAC, "sb-install", GAVE_UP);
    bed.assert_installed_through_grub(SB_GRUB_MAC, &install);
    for marker in [
        "EFI stub: UEFI Secure Boot is enabled.",
        "secureboot: Secure boot enabled",
    ] {
        assert!(
            install.serial.contains(marker),
            "serial console lacks `{marker}`: Secure Boot was not on"
        );
    }
    let mirror_before = bed.read("mirror.log");

    // Installed: the firmware gets the shim again, GRUB its local-disk
    // config, and the disk's own shim boots.
    assert_reaches_disk(
        &bed,
        Firmware::UefiSecureBoot,
        SB_GRUB_MAC,
        "sb-disk",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
    let serial = bed.read("sb-disk.log");
    assert!(
        serial.contains("Kickstand: sb01 is installed; booting from its local disk"),
        "the disk was not reached through Kickstand's local-disk GRUB config"
    );
    // The second boot's shim and GRUB came from the cache. Boot files are
    // revalidated once `cache.revalidate_after` has passed, so the mirror
    // may see a conditional GET answered 304, never a second download. (The
    // shim also asks for optional files the tree lacks, such as
    // revocations_sbat.efi; a miss is not cached, so those may reach the
    // mirror again.)
    let mirror = bed.read("mirror.log");
    let second_boot = &mirror[mirror_before.len()..];
    for path in ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi"] {
        let downloads: Vec<&str> = mirror_gets(second_boot, &format!("{TREE}/{path}"))
            .into_iter()
            .filter(|l| mirror_status(l) != Some(304))
            .collect();
        assert!(
            downloads.is_empty(),
            "the second boot downloaded {path} from the mirror again: {downloads:?}"
        );
    }
    assert_eq!(bed.phase(SB_GRUB_MAC), "installed");

    // The negative check: unsigned iPXE is downloaded whole, then refused.
    let stop: Vec<&'static str> = std::iter::once(SECURE_BOOT_REFUSED)
        .chain(GAVE_UP.iter().copied())
        .collect();
    let refused = bed.boot(Firmware::UefiSecureBoot, SB_AUTO_MAC, "sb-ipxe", &stop);
    assert!(
        matches!(refused.end, VmEnd::StoppedAt(SECURE_BOOT_REFUSED)),
        "OVMF did not refuse ipxe.efi: {:?}",
        refused.end
    );
    assert!(
        refused.serial.contains("NBP file downloaded successfully"),
        "ipxe.efi did not arrive whole: the refusal would prove nothing"
    );
    assert!(
        !refused.serial.contains("iPXE initialising"),
        "ipxe.efi ran under Secure Boot"
    );
    assert!(
        tftp_sent_by_kickstand(&bed.daemon_log(), "ipxe.efi"),
        "Kickstand never sent ipxe.efi"
    );
}

/// Plain OVMF: a `boot_loader: grub` host installs through the shim → GRUB
/// chain without Secure Boot too.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn uefi_without_secure_boot_installs_through_grub() {
    let bed = Bed::up_with(
        &[(UEFI_GRUB_MAC, "grub01")],
        &Site {
            extra: &[(UEFI_GRUB_MAC, "    boot_loader: grub\n")],
            ..Site::default()
        },
    );
    bed.host(UEFI_GRUB_MAC, &["next-server"], None, None);
    let run = bed.boot(Firmware::Uefi, UEFI_GRUB_MAC, "uefi-grub", GAVE_UP);
    bed.assert_installed_through_grub(UEFI_GRUB_MAC, &run);
    assert!(
        !run.serial.contains("Secure boot enabled"),
        "this firmware was meant to run without Secure Boot"
    );
}

const V6_MAC: &str = "52:54:00:12:36:18";

/// An IPv6-only rack: the firmware's IPv4 PXE is off and Kickstand has
/// only an IPv6 address. OVMF's PXEv6 takes its address from the office's
/// DHCPv6 server and loads the tree's shim over TFTP from Kickstand (the
/// host's `boot_loader` is the default, `auto`: over IPv6 that is the
/// shim → GRUB chain), GRUB
/// reads its config there (with the build token: the address it asks from
/// is the one the firmware's own DHCPv6 exchange took), then the kernel
/// and the installer; the installer takes its SLAAC address, fetches its
/// kickstart over IPv6 and reports. The next boot reaches the disk through
/// the same chain. Over IPv6 the shim and GRUB read their TFTP server only
/// from the office's DHCPv6 reply (the lease's), not from Kickstand's
/// answer: the office names the shim on Kickstand as the boot file URL
/// (`next-server`).
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, radvd, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn ipv6_only_uefi_installs_through_grub_then_boots_its_disk() {
    let bed = Bed::up_with(
        &[(V6_MAC, "v6node")],
        &Site {
            ipv6: true,
            ..Site::default()
        },
    );
    bed.host(V6_MAC, &["next-server"], None, None);
    let opts = VmOpts {
        no_pxe4: true,
        ..VmOpts::default()
    };
    let run = bed.boot_with(Firmware::Uefi, V6_MAC, "uefi-v6", GAVE_UP, opts);
    assert!(
        run.powered_off(),
        "the VM did not power off after installing: {:?}",
        run.end
    );
    for marker in [
        "Start PXE over IPv6",
        "KS-STANDIN: SLAAC address on",
        "Kickstand: installing standin-9 on v6node",
        &format!("KS-STANDIN: fetched kickstart for {V6_MAC}"),
        &format!("KS-STANDIN: reported installed for {V6_MAC}"),
    ] {
        assert!(
            run.serial.contains(marker),
            "serial console lacks `{marker}`"
        );
    }
    let log = bed.daemon_log();
    assert!(
        log_has(&log, &["dhcpv6: answered", V6_MAC]),
        "Kickstand did not answer the firmware's DHCPv6"
    );
    assert!(
        !log.lines().any(|l| l.contains("dhcp: reply")),
        "an IPv6-only appliance answered DHCPv4"
    );
    // Every boot file went over TFTP to an IPv6 address.
    let host_cfg = format!("grub.cfg-01-{}", V6_MAC.replace(':', "-"));
    for file in [
        os_file("EFI/BOOT/BOOTX64.EFI"),
        os_file("EFI/BOOT/grubx64.efi"),
        host_cfg,
        os_file("images/pxeboot/vmlinuz"),
        os_file("images/pxeboot/initrd.img"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("kickstand_tftp")
                && l.contains(&format!("{file}\""))
                && l.contains(" sent ")
                && l.contains("peer=[fd77::")),
            "no whole TFTP transfer of {file} to an IPv6 address"
        );
    }
    // GRUB got the token at the firmware's leased address; the installer
    // used it from its own SLAAC (EUI-64) address.
    let timeline = bed.json(&format!("/api/hosts/{V6_MAC}/timeline"));
    let events = timeline["events"].as_array().expect("events");
    let from = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["detail"]["ip"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let leased = |ip: &str| {
        ip.parse::<std::net::Ipv6Addr>().is_ok_and(|a| {
            a.segments()[..7] == [0xfd77, 0, 0, 0, 0, 0, 0]
                && (0x100..=0x1ff).contains(&a.segments()[7])
        })
    };
    let script = from("boot-script");
    assert!(
        !script.is_empty() && script.iter().all(|ip| leased(ip)),
        "GRUB's config went to the office's DHCPv6 lease: {timeline}"
    );
    let slaac = "fd77::5054:ff:fe12:3618";
    assert_eq!(from("kickstart-fetch"), [slaac], "{timeline}");
    let callbacks = from("callback");
    assert!(
        callbacks.len() >= 2 && callbacks.iter().all(|ip| ip == slaac),
        "the callbacks came from the installer's address: {timeline}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "token-withheld" || e["kind"] == "token-rejected"),
        "a token was withheld or refused: {timeline}"
    );
    assert_eq!(bed.phase(V6_MAC), "installed");

    // Installed: the same chain, and GRUB's local-disk config.
    let before = bed.daemon_log().len();
    let run = bed.boot_with(
        Firmware::Uefi,
        V6_MAC,
        "uefi-v6-disk",
        DISK_OR_STUCK,
        VmOpts {
            disk: Some(Disk::Uefi),
            no_pxe4: true,
            ..VmOpts::default()
        },
    );
    assert!(
        run.serial
            .contains(&format!("{DISK_MARKER} (efi, (hd0,gpt1)/EFI/debian)")),
        "the installed host did not reach its disk's own loader: {:?}",
        run.end
    );
    assert!(
        run.serial
            .contains("Kickstand: v6node is installed; booting from its local disk"),
        "the disk was not reached through Kickstand's local-disk GRUB config"
    );
    assert!(
        !run.serial.contains("KS-STANDIN"),
        "the installer started again"
    );
    assert!(
        tftp_sent_by_kickstand(
            &bed.daemon_log()[before..],
            &format!("grub.cfg-01-{}", V6_MAC.replace(':', "-"))
        ),
        "GRUB did not read its config from Kickstand"
    );
}

/// ARM64 (AAVMF, client architecture 11): an `arch: aarch64` host with the
/// default `auto` loader is offered the arm64 tree's shim over TFTP from
/// the repo cache, the shim loads grubaa64.efi beside it, and GRUB reads
/// the generic config and then the host's own from Kickstand. (The bed has
/// no arm64 kernel; reading the host's install config is the proof.)
#[test]
#[ignore = "peer: needs root, netns, qemu-system-arm, qemu-efi-aarch64, apt for Debian's arm64 loaders; run by tests/run"]
fn aarch64_pxe_gets_the_arm64_shim_grub_and_its_config_from_kickstand() {
    let bed = Bed::up_with(
        &[(ARM_MAC, "arm01")],
        &Site {
            extra: &[(ARM_MAC, "    os: standin-9-arm\n    arch: aarch64\n")],
            aarch64: true,
            ..Site::default()
        },
    );
    bed.host(ARM_MAC, &["next-server"], None, None);
    const CONFIG_READ: &str = "Kickstand: installing standin-9-arm on arm01";
    let stop: Vec<&'static str> = std::iter::once(CONFIG_READ)
        .chain(GAVE_UP.iter().copied())
        .chain(["grub> "])
        .collect();
    let run = bed.boot(Firmware::Aarch64, ARM_MAC, "aarch64", &stop);
    assert!(
        matches!(run.end, VmEnd::StoppedAt(CONFIG_READ)),
        "GRUB for arm64 did not read its host config from Kickstand: {:?}",
        run.end
    );
    let log = bed.daemon_log();
    let shim = "os/standin-9-arm/EFI/BOOT/BOOTAA64.EFI";
    assert!(
        log_has(&log, &["dhcp: reply", ARM_MAC, "UefiArm64", shim]),
        "Kickstand's log shows no offer of the arm64 shim to {ARM_MAC}"
    );
    let host_cfg = format!("grub.cfg-01-{}", ARM_MAC.replace(':', "-"));
    for file in [
        shim,
        "os/standin-9-arm/EFI/BOOT/grubaa64.efi",
        "grub/grub.cfg",
        &host_cfg,
    ] {
        assert!(
            tftp_sent_by_kickstand(&log, file),
            "Kickstand's log shows no whole TFTP transfer of {file}"
        );
    }
    assert!(run.serial.contains("(arm64, prefix") || run.serial.contains(CONFIG_READ));
}

/// UEFI HTTP boot as the firmware's first choice (the NIC's HTTPv4 option
/// moved ahead of PXE, TFTP untouched): OVMF sends `HTTPClient:Arch:00016`,
/// Kickstand's ProxyDHCP echoes `HTTPClient` with a URL, OVMF loads
/// ipxe.efi over HTTP from Kickstand, and iPXE installs as on every path.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, virt-firmware; run by tests/run"]
fn uefi_http_boot_loads_its_loader_over_http_from_kickstand() {
    let bed = Bed::up(&[(HTTP_MAC, "http01")]);
    let opts = VmOpts {
        http_first: true,
        ..VmOpts::default()
    };
    let run = bed.boot_with(Firmware::Uefi, HTTP_MAC, "httpboot", GAVE_UP, opts);
    let http = run
        .serial
        .find(">>Start HTTP Boot over IPv4")
        .expect("OVMF never started HTTP boot");
    assert!(
        !run.serial[..http].contains(">>Start PXE over IPv4"),
        "OVMF tried PXE before HTTP boot: the boot order was not changed"
    );
    assert!(
        run.serial
            .contains("URI: http://10.77.0.1:8080/boot/ipxe.efi"),
        "OVMF did not take Kickstand's URL from the proxy offer"
    );
    let log = bed.daemon_log();
    assert!(
        log_has(
            &log,
            &[
                "dhcp: reply",
                HTTP_MAC,
                "UefiHttpX64",
                "http://10.77.0.1:8080/boot/ipxe.efi"
            ]
        ),
        "Kickstand's log shows no HTTP boot offer to {HTTP_MAC}"
    );
    assert!(
        log.lines().any(|l| l.contains("path=\"/boot/ipxe.efi\"")
            && l.contains("status=200")
            && l.contains("peer=10.77.0.1")
            && !l.contains("peer=10.77.0.1:")),
        "Kickstand never served ipxe.efi over HTTP to the VM"
    );
    assert!(
        !tftp_sent_by_kickstand(&log, "ipxe.efi"),
        "ipxe.efi went over TFTP: HTTP boot was not what loaded it"
    );
    bed.assert_installed_by_kickstand(HTTP_MAC, &run);
}

const OFFLINE_BIOS_MAC: &str = "52:54:00:12:36:16";
const OFFLINE_UEFI_MAC: &str = "52:54:00:12:36:17";

/// `kickstand cache warm <os>` and then the mirror gone: a BIOS machine
/// installs through iPXE (kernel and initrd over HTTP from the cache) and
/// a UEFI machine through shim → GRUB (every boot file over TFTP from the
/// cache), with nothing left to answer upstream. The tree's `.treeinfo`
/// names the images and their checksums, as an EL tree's does.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn after_cache_warm_machines_install_with_the_mirror_gone() {
    let bed = Bed::up_with(
        &[(OFFLINE_BIOS_MAC, "off01"), (OFFLINE_UEFI_MAC, "off02")],
        &Site {
            extra: &[(OFFLINE_UEFI_MAC, "    boot_loader: grub\n")],
            ..Site::default()
        },
    );
    bed.host(OFFLINE_UEFI_MAC, &["next-server"], None, None);
    let (status, events) = bed.operator_post("/api/cache/warm/standin-9", "");
    assert_eq!(status, 200, "cache warm: {events}");
    for file in [
        ".treeinfo",
        "images/pxeboot/vmlinuz",
        "images/pxeboot/initrd.img",
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/grubx64.efi",
    ] {
        assert!(
            events.lines().any(|l| l.contains(file)),
            "cache warm did not fetch {file}:\n{events}"
        );
    }
    let warmed: serde_json::Value = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "warmed")
        .unwrap_or_else(|| panic!("cache warm did not finish:\n{events}"));
    assert_eq!(
        warmed["report"]["failed"],
        serde_json::json!([]),
        "cache warm reported failures:\n{events}"
    );
    // The mirror goes away.
    let pid = bed.read("mirror.pid");
    let status = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .expect("kill the mirror");
    assert!(status.success(), "could not stop the mirror");
    sleep(Duration::from_millis(300));
    let mirror_after_warm = bed.read("mirror.log").len();

    let bios = bed.boot(Firmware::Bios, OFFLINE_BIOS_MAC, "offline-bios", GAVE_UP);
    assert!(
        bios.serial.contains(&format!(
            "KS-STANDIN: reported installed for {OFFLINE_BIOS_MAC}"
        )),
        "the BIOS machine did not install from the cache: {:?}",
        bios.end
    );
    let uefi = bed.boot(Firmware::Uefi, OFFLINE_UEFI_MAC, "offline-uefi", GAVE_UP);
    assert!(
        uefi.serial.contains(&format!(
            "KS-STANDIN: reported installed for {OFFLINE_UEFI_MAC}"
        )),
        "the UEFI machine did not install through GRUB from the cache: {:?}",
        uefi.end
    );
    let log = bed.daemon_log();
    for file in [
        os_file("EFI/BOOT/BOOTX64.EFI"),
        os_file("EFI/BOOT/grubx64.efi"),
        os_file("images/pxeboot/vmlinuz"),
        os_file("images/pxeboot/initrd.img"),
    ] {
        assert!(
            tftp_sent_by_kickstand(&log, &file),
            "no whole TFTP transfer of {file} from the cache"
        );
    }
    assert_eq!(
        bed.read("mirror.log").len(),
        mirror_after_warm,
        "something reached the stopped mirror"
    );
    assert_eq!(bed.phase(OFFLINE_BIOS_MAC), "installed");
    assert_eq!(bed.phase(OFFLINE_UEFI_MAC), "installed");
}

/// MACs of the stand-in self-checks, one per path so the bed's per-host
/// files of one test never meet another's.
const SB_MAC: &str = "52:54:00:12:35:01";
const SB_IPXE_MAC: &str = "52:54:00:12:35:02";
const HTTPBOOT_MAC: &str = "52:54:00:12:35:03";
const DISK_BIOS_MAC: &str = "52:54:00:12:35:04";
const DISK_UEFI_MAC: &str = "52:54:00:12:35:05";
const DISK_SB_MAC: &str = "52:54:00:12:35:06";
const DISK_IPXE_MAC: &str = "52:54:00:12:35:07";

/// The install entry for Debian's signed network GRUB: `linux`/`initrd`
/// (no `linuxefi` needed), kernel and initrd over TFTP relative to the
/// TFTP server GRUB booted from, because that GRUB has no http module.
fn grub_install_cfg() -> String {
    format!(
        "echo \"KS-GRUB: host config for $net_default_mac\"\n\
         linux /{TREE}/images/pxeboot/vmlinuz console=ttyS0 inst.ks=http://10.77.0.1:8080/ks/$net_default_mac\n\
         initrd /{TREE}/images/pxeboot/initrd.img\n\
         boot\n"
    )
}

/// The local-boot entry for an installed UEFI host on the GRUB path: find
/// the disk's own loader (each distribution's shim, then the fallback
/// path) and chainload it. `set root` matters: Debian's GRUB 2.06 gives the
/// chainloaded image the device of `$root`, not the one in its path, and
/// shim then looks for its GRUB on the network.
const GRUB_CHAINLOAD_DISK: &str = r#"echo "KS-GRUB: local boot for $net_default_mac"
for f in /EFI/redhat/shimx64.efi /EFI/centos/shimx64.efi /EFI/rocky/shimx64.efi /EFI/almalinux/shimx64.efi /EFI/fedora/shimx64.efi /EFI/debian/shimx64.efi /EFI/ubuntu/shimx64.efi /EFI/BOOT/BOOTX64.EFI; do
  if search --no-floppy --file --set=esp $f; then
    set root=$esp
    chainloader $f
    boot
  fi
done
echo "KS-GRUB: no loader on any disk"
exit 1
"#;

/// Lines of the stand-in dnsmasq's log saying it sent a TFTP file.
fn tftp_sent(bed: &Bed) -> Vec<String> {
    bed.read("standin-proxy.log")
        .lines()
        .filter(|l| l.contains("dnsmasq-tftp") && l.contains(" sent "))
        .map(str::to_owned)
        .collect()
}

fn assert_standin_installed(bed: &Bed, mac: &str, run: &VmRun) {
    assert!(
        run.powered_off(),
        "the VM did not power off after installing: {:?}",
        run.end
    );
    for marker in [
        format!("KS-STANDIN: fetched kickstart for {mac}"),
        format!("KS-STANDIN: reported installed for {mac}"),
    ] {
        assert!(
            run.serial.contains(&marker),
            "serial console lacks `{marker}`"
        );
    }
    assert!(
        bed.path(&format!("standin-http/{mac}.installed")).exists(),
        "no installed report arrived from {mac}"
    );
}

/// Secure Boot enforced, Microsoft's keys: Debian's signed shim (offered by
/// ProxyDHCP as the tree's EFI/BOOT/BOOTX64.EFI) loads grubx64.efi from the
/// same TFTP directory, GRUB reads the generic grub.cfg under its fixed
/// prefix /grub, which chains to this host's grub.cfg-01-<mac>, and the
/// signed kernel boots the stand-in installer.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn bed_selfcheck_secure_boot_shim_grub_kernel_installs() {
    let bed = Bed::standin();
    bed.host(SB_MAC, &["grub"], None, Some(&grub_install_cfg()));
    let run = bed.boot(Firmware::UefiSecureBoot, SB_MAC, "sb-install", GAVE_UP);
    assert_standin_installed(&bed, SB_MAC, &run);
    for marker in [
        "KS-GRUB: generic grub.cfg for",
        &format!("KS-GRUB: host config for {SB_MAC}"),
        // The kernel's EFI stub and the kernel itself saw Secure Boot on.
        "EFI stub: UEFI Secure Boot is enabled.",
        "secureboot: Secure boot enabled",
    ] {
        assert!(
            run.serial.contains(marker),
            "serial console lacks `{marker}`"
        );
    }
    let sent = tftp_sent(&bed);
    // dnsmasq logs `sent <root>/<path> to <client>`.
    let host_cfg = format!("grub/grub.cfg-01-{}", SB_MAC.replace(':', "-"));
    for file in [
        format!("{TREE}/EFI/BOOT/BOOTX64.EFI"),
        format!("{TREE}/EFI/BOOT/grubx64.efi"),
        "grub/grub.cfg".to_owned(),
        host_cfg,
        format!("{TREE}/images/pxeboot/vmlinuz"),
        format!("{TREE}/images/pxeboot/initrd.img"),
    ] {
        assert!(
            sent.iter().any(|l| l.contains(&format!("/{file} to "))),
            "the stand-in never sent {file} over TFTP: {sent:#?}"
        );
    }
}

/// UEFI HTTP boot as the firmware's first choice (the NIC's HTTPv4 option
/// moved ahead of PXE in BootOrder, TFTP left working): OVMF's DISCOVER
/// carries `HTTPClient:Arch:00016`, the stand-in ProxyDHCP answers with
/// option 60 `HTTPClient` and a URL, OVMF loads ipxe.efi over HTTP, and
/// iPXE goes on to install as on every other path.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, virt-firmware; run by tests/run"]
fn bed_selfcheck_uefi_http_boot_first_loads_loader_over_http() {
    let bed = Bed::standin();
    bed.host(HTTPBOOT_MAC, &["httpboot"], None, None);
    let opts = VmOpts {
        http_first: true,
        ..VmOpts::default()
    };
    let run = bed.boot_with(Firmware::Uefi, HTTPBOOT_MAC, "httpboot", GAVE_UP, opts);
    assert_standin_installed(&bed, HTTPBOOT_MAC, &run);
    let http = run
        .serial
        .find(">>Start HTTP Boot over IPv4")
        .expect("OVMF never started HTTP boot");
    assert!(
        !run.serial[..http].contains(">>Start PXE over IPv4"),
        "OVMF tried PXE before HTTP boot: the boot order was not changed"
    );
    assert!(
        run.serial
            .contains("URI: http://10.77.0.1:8081/loaders/ipxe.efi"),
        "OVMF did not take the URL from the proxy offer"
    );
    let offers = bed.read("standin-httpboot.log");
    assert!(
        log_has(&offers, &[HTTPBOOT_MAC, "arch 16", "HTTPClient:Arch:00016"]),
        "no HTTPClient DISCOVER with client arch 16 from {HTTPBOOT_MAC}: {offers}"
    );
    assert!(
        log_has(&offers, &[HTTPBOOT_MAC, "offered http://"]),
        "the stand-in sent {HTTPBOOT_MAC} no HTTP boot offer: {offers}"
    );
    // The loader came over HTTP from the VM itself, never over TFTP.
    let mirror = bed.read("mirror.log");
    assert!(
        mirror
            .lines()
            .any(|l| l.starts_with("10.77.0.") && l.contains("\"GET /loaders/ipxe.efi ")),
        "the mirror never served ipxe.efi to the VM: {mirror}"
    );
    assert!(
        !tftp_sent(&bed).iter().any(|l| l.contains("ipxe.efi")),
        "ipxe.efi went over TFTP: HTTP boot was not what loaded it"
    );
}

/// The office DHCP named only itself as next server (dnsmasq's default),
/// never Kickstand: what reached Kickstand did so without the office's
/// help.
fn assert_office_names_no_next_server(bed: &Bed) {
    let office = bed.read("office.log");
    assert!(
        office.contains("next server: 10.77.0.254") && !office.contains("next server: 10.77.0.1"),
        "the office DHCP named Kickstand as next server"
    );
}

/// Boots an "installed" machine with the bed's disk attached (network
/// first, disk second) and asserts it reached the disk, not the installer.
/// `via` is what the disk's GRUB reports as `$cmdpath`: which loader ran.
fn assert_reaches_disk(bed: &Bed, fw: Firmware, mac: &str, name: &str, disk: Disk, via: &str) {
    let opts = VmOpts {
        disk: Some(disk),
        ..VmOpts::default()
    };
    let run = bed.boot_with(fw, mac, name, DISK_OR_STUCK, opts);
    // The disk's GRUB powers the VM off right after the marker, often
    // before the serial log is looked at again.
    assert!(
        matches!(run.end, VmEnd::StoppedAt(DISK_MARKER))
            || run.powered_off() && run.serial.contains(DISK_MARKER),
        "{name}: the machine did not reach its disk: {:?}",
        run.end
    );
    let marker = format!("{DISK_MARKER} ({via})");
    assert!(
        run.serial.contains(&marker),
        "{name}: the disk was booted, but not through {via}"
    );
    assert!(
        !run.serial.contains("KS-STANDIN"),
        "{name}: the installer started"
    );
    eprintln!(
        "netboot: {name}: power-on → disk in {:.1} s",
        run.elapsed.as_secs_f64()
    );
}

/// BIOS, installed host: iPXE (the NIC's ROM) runs `exit`, SeaBIOS moves
/// on to the disk.
#[test]
#[ignore = "peer: needs root, netns, qemu, grub-pc-bin, xorriso; run by tests/run"]
fn bed_selfcheck_bios_ipxe_exit_reaches_disk() {
    let bed = Bed::standin();
    bed.host(DISK_BIOS_MAC, &[], Some("#!ipxe\nexit\n"), None);
    assert_reaches_disk(
        &bed,
        Firmware::Bios,
        DISK_BIOS_MAC,
        "bios-disk",
        Disk::Bios,
        "pc, (hd0)",
    );
}

/// UEFI without Secure Boot, installed host on the GRUB path: GRUB finds
/// the disk's shim and chainloads it; the disk's own GRUB prints the marker.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn bed_selfcheck_uefi_grub_chainloads_disk_loader() {
    let bed = Bed::standin();
    bed.host(DISK_UEFI_MAC, &["grub"], None, Some(GRUB_CHAINLOAD_DISK));
    assert_reaches_disk(
        &bed,
        Firmware::Uefi,
        DISK_UEFI_MAC,
        "uefi-disk",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
}

/// The same with Secure Boot enforced: the firmware verifies the disk's
/// shim (Microsoft's signature), shim the disk's GRUB (Debian's).
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, shim-signed, grub-efi-amd64-signed; run by tests/run"]
fn bed_selfcheck_secure_boot_grub_chainloads_disk_loader() {
    let bed = Bed::standin();
    bed.host(DISK_SB_MAC, &["grub"], None, Some(GRUB_CHAINLOAD_DISK));
    assert_reaches_disk(
        &bed,
        Firmware::UefiSecureBoot,
        DISK_SB_MAC,
        "sb-disk",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
}

/// How OVMF reports an image that fails Secure Boot verification:
/// `BdsDxe: failed to load Boot0001 "UEFI PXEv4 (MAC:…)" from …: Access Denied`
/// (EFI_SECURITY_VIOLATION from LoadImage).
const SECURE_BOOT_REFUSED: &str = ": Access Denied";

/// The negative check that makes the Secure Boot tests mean something: the
/// same firmware, offered Debian's unsigned ipxe.efi, downloads it and
/// refuses to run it.
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf; run by tests/run"]
fn bed_selfcheck_secure_boot_refuses_unsigned_ipxe() {
    let bed = Bed::standin();
    let stop: Vec<&'static str> = std::iter::once(SECURE_BOOT_REFUSED)
        .chain(GAVE_UP.iter().copied())
        .collect();
    let run = bed.boot(
        Firmware::UefiSecureBoot,
        SB_IPXE_MAC,
        "sb-refuses-ipxe",
        &stop,
    );
    assert!(
        matches!(run.end, VmEnd::StoppedAt(SECURE_BOOT_REFUSED)),
        "OVMF did not refuse ipxe.efi: {:?}",
        run.end
    );
    // The file arrived whole: the refusal is the signature check, not TFTP.
    for marker in [
        "NBP filename is ipxe.efi",
        "NBP file downloaded successfully",
    ] {
        assert!(
            run.serial.contains(marker),
            "serial console lacks `{marker}`"
        );
    }
    assert!(
        run.serial
            .lines()
            .any(|l| l.contains("BdsDxe: failed to load")
                && l.contains("UEFI PXEv4")
                && l.trim_end().ends_with(SECURE_BOOT_REFUSED)),
        "no `BdsDxe: failed to load … UEFI PXEv4 …: Access Denied` line"
    );
    assert!(
        !run.serial.contains("iPXE initialising"),
        "ipxe.efi ran under Secure Boot"
    );
    assert!(
        tftp_sent(&bed).iter().any(|l| l.contains("/ipxe.efi to ")),
        "the stand-in never sent ipxe.efi"
    );
}

/// UEFI on the iPXE path, installed host: `exit` from ipxe.efi hangs at
/// "No more network devices" and no DHCP answer at all costs ~270 s of PXEv6
/// and HTTP boot timeouts, so iPXE chains the tree's GRUB over HTTP instead,
/// and GRUB (configured through iPXE's PXE base code: TFTP server, MAC)
/// chainloads the disk's loader. Debian's GRUB reads the TFTP server from
/// the address server's ACK that iPXE's PXE base code hands on, so the
/// office DHCP must name 10.77.0.1 as next server (role `next-server`).
#[test]
#[ignore = "peer: needs root, netns, qemu, ovmf, grub-efi-amd64-signed; run by tests/run"]
fn bed_selfcheck_uefi_ipxe_chains_grub_to_disk() {
    let bed = Bed::standin();
    let script = format!("#!ipxe\nchain http://10.77.0.1:8081/{TREE}/EFI/BOOT/grubx64.efi\n");
    bed.host(
        DISK_IPXE_MAC,
        &["next-server"],
        Some(&script),
        Some(GRUB_CHAINLOAD_DISK),
    );
    assert_reaches_disk(
        &bed,
        Firmware::Uefi,
        DISK_IPXE_MAC,
        "uefi-ipxe-disk",
        Disk::Uefi,
        "efi, (hd0,gpt1)/EFI/debian",
    );
}

const AARCH64_MAC: &str = "52:54:00:12:35:08";

/// ARM64: AAVMF's native PXE (client arch 11) gets the arm64 tree's shim
/// (EFI/BOOT/BOOTAA64.EFI) from ProxyDHCP, shim loads grubaa64.efi from the
/// same TFTP directory and GRUB reads its config under /grub (from the
/// office ACK's next server, as on x86_64).
#[test]
#[ignore = "peer: needs root, netns, qemu-system-arm, qemu-efi-aarch64, apt for Debian's arm64 loaders; run by tests/run"]
fn bed_selfcheck_aarch64_pxe_loads_shim_grub_and_config() {
    let bed = Bed::bring_up_with(
        BedMode::Standin,
        &Site {
            aarch64: true,
            ..Site::default()
        },
    );
    bed.host(AARCH64_MAC, &["next-server"], None, None);
    const CONFIG_READ: &str = "KS-GRUB: no host config, nothing to install on arm64";
    let stop: Vec<&'static str> = std::iter::once(CONFIG_READ)
        .chain(GAVE_UP.iter().copied())
        .chain(["grub> "])
        .collect();
    let run = bed.boot(Firmware::Aarch64, AARCH64_MAC, "aarch64", &stop);
    // The config halts the VM right after printing, often before the
    // serial log is looked at again.
    assert!(
        matches!(run.end, VmEnd::StoppedAt(CONFIG_READ))
            || run.powered_off() && run.serial.contains(CONFIG_READ),
        "GRUB for arm64 did not read its config: {:?}",
        run.end
    );
    let tree = read_env(&bed.path("bed.env"), "MIRROR_TREE_AA64");
    for marker in [
        format!("NBP filename is {tree}/EFI/BOOT/BOOTAA64.EFI"),
        format!("Fetching Netboot Image {tree}/EFI/BOOT/grubaa64.efi"),
        "(arm64, prefix".to_owned(),
    ] {
        assert!(
            run.serial.contains(&marker),
            "serial console lacks `{marker}`"
        );
    }
    assert!(
        bed.read("standin-proxy.log")
            .contains("vendor class: PXEClient:Arch:00011"),
        "no DHCP packet with client arch 11 reached the ProxyDHCP"
    );
    let sent = tftp_sent(&bed);
    for file in [
        format!("{tree}/EFI/BOOT/BOOTAA64.EFI"),
        format!("{tree}/EFI/BOOT/grubaa64.efi"),
        "grub/grub.cfg".to_owned(),
    ] {
        assert!(
            sent.iter().any(|l| l.contains(&format!("/{file} to "))),
            "the stand-in never sent {file} over TFTP: {sent:#?}"
        );
    }
}

/// The bed of `ipmi_sim` as an IPMI BMC (`tests/beds/bmc`).
const BMC_BED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/beds/bmc");
/// The machine behind the BMC.
const IPMI_MAC: &str = "52:54:00:12:37:01";
/// What the stand-in installer prints last, installed or failed, before
/// it powers the machine off.
const INSTALLER_DONE: &str = "KS-STANDIN: powering off";

/// A machine of the bed whose power is its IPMI BMC's: `ipmi_sim`
/// (`tests/beds/bmc/start.sh`) in the bed's namespace, beside Kickstand,
/// with vm.sh's QEMU command line (`--print`) as the machine it starts and
/// kills. Every power-on is a new QEMU process appending to one serial
/// log. Stopped on drop (declare it after the [`Bed`], so it goes first).
#[derive(Debug)]
struct BmcMachine {
    /// start.sh's WORK: `bmc.env`, `power.log`, `ipmi_sim.log`, `machine.log`.
    dir: PathBuf,
    ns: String,
    serial: PathBuf,
}

impl Bed {
    /// The machine `mac` with `disk`, behind a BMC that has not powered it on.
    fn bmc_machine(&self, fw: Firmware, mac: &str, disk: Disk, name: &str) -> BmcMachine {
        let serial = self.path(&format!("{name}.log"));
        let out = Command::new(format!("{BED}/vm.sh"))
            .arg("--print")
            .arg("--disk")
            .arg(disk.image(self))
            .arg(self.work.path())
            .args([fw.arg(), mac])
            .arg(&serial)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/beds/netboot/vm.sh --print");
        assert!(out.status.success(), "vm.sh --print: {}", out.status);
        let qemu = String::from_utf8(out.stdout).expect("vm.sh prints text");
        let machine = BmcMachine {
            dir: self.path("bmc"),
            ns: self.ns.clone(),
            serial,
        };
        let status = Command::new("ip")
            .args(["netns", "exec", &self.ns, &format!("{BMC_BED}/start.sh")])
            .arg(&machine.dir)
            .args(qemu.lines())
            .stdin(Stdio::null())
            .status()
            .expect("run tests/beds/bmc/start.sh");
        assert!(
            status.success(),
            "start.sh failed: {status} (needs openipmi, ipmitool)"
        );
        machine
    }
}

impl BmcMachine {
    fn env(&self, key: &str) -> String {
        read_env(&self.dir.join("bmc.env"), key)
    }

    /// The `bmc:` of the machine's host profile.
    fn profile(&self) -> String {
        format!(
            "    bmc:
      driver: ipmi
      address: {}:{}
      username: {}
      password_file: {}
      # ipmi_sim does not answer Get Channel Cipher Suites.
      cipher_suite: 3
",
            self.env("BMC_HOST"),
            self.env("BMC_PORT"),
            self.env("BMC_USER"),
            self.env("BMC_PASSWORD_FILE"),
        )
    }

    /// `ipmitool`, the reference client, from the namespace: its output.
    fn ipmitool(&self, args: &[&str]) -> String {
        let password = fs::read_to_string(self.env("BMC_PASSWORD_FILE")).expect("bmc.pass");
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "ipmitool", "-I", "lanplus", "-C", "3",
            ])
            .args(["-H", &self.env("BMC_HOST"), "-p", &self.env("BMC_PORT")])
            .args(["-U", &self.env("BMC_USER"), "-E"])
            .args(args)
            .env("IPMI_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("run ipmitool in the bed's namespace");
        assert!(out.status.success(), "ipmitool {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn is_on(&self) -> bool {
        self.ipmitool(&["chassis", "power", "status"])
            .contains("Chassis Power is on")
    }

    /// The BMC's power changes as its chassis control made them: (`on` or
    /// `off`, the machine's pid). A machine that powered itself off is not
    /// one.
    fn power_log(&self) -> Vec<(String, u32)> {
        read_lossy(&self.dir.join("power.log"))
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace().skip(1);
                Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
            })
            .collect()
    }

    /// The data of every Set System Boot Options request the BMC received,
    /// as ipmi_sim's message log shows them (`05 …`: the boot flags).
    fn boot_option_requests(&self) -> Vec<String> {
        let log = read_lossy(&self.dir.join("ipmi_sim.log"));
        let lines: Vec<&str> = log.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("netfn=0x0 cmd=0x8 "))
            .filter_map(|(i, _)| lines.get(i + 2).map(|d| d.trim().to_owned()))
            .collect()
    }

    /// Bytes on the serial console so far: where the next boot starts.
    fn serial_len(&self) -> usize {
        fs::metadata(&self.serial).map_or(0, |m| m.len() as usize)
    }

    fn serial_since(&self, from: usize) -> String {
        let bytes = fs::read(&self.serial).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console past `from` shows one of `texts`;
    /// which one, or `None` after [`VM_LIMIT`].
    fn wait_serial(&self, from: usize, texts: &[&'static str]) -> Option<&'static str> {
        let deadline = Instant::now() + VM_LIMIT;
        while Instant::now() < deadline {
            let seen = self.serial_since(from);
            if let Some(text) = texts.iter().find(|t| seen.contains(**t)) {
                return Some(text);
            }
            sleep(Duration::from_millis(250));
        }
        None
    }

    /// Waits until the BMC says the machine is off.
    fn wait_off(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !self.is_on() {
                return true;
            }
            sleep(Duration::from_millis(500));
        }
        false
    }

    /// From a power-on at `from` on the serial console: the install runs
    /// to its end, reports installed and the machine powers off.
    fn assert_installs(&self, from: usize, mac: &str, what: &str) {
        let mut stop = vec![INSTALLER_DONE];
        stop.extend_from_slice(GAVE_UP);
        let end = self.wait_serial(from, &stop);
        let serial = self.serial_since(from);
        assert_eq!(
            end,
            Some(INSTALLER_DONE),
            "{what}: no install ran to its end"
        );
        for marker in [
            format!("{KICKSTART_FETCHED}{mac}"),
            format!("KS-STANDIN: reported installed for {mac}"),
        ] {
            assert!(
                serial.contains(&marker),
                "{what}: serial console lacks `{marker}`"
            );
        }
        assert!(
            self.wait_off(),
            "{what}: the BMC never saw the machine power off"
        );
    }

    /// From a power-on at `from`: the machine boots its disk (network
    /// first: Kickstand sends it there), never the installer.
    fn assert_boots_disk(&self, from: usize, what: &str) {
        let end = self.wait_serial(from, DISK_OR_STUCK);
        assert_eq!(
            end,
            Some(DISK_MARKER),
            "{what}: the machine did not reach its disk"
        );
        assert!(
            self.serial_since(from)
                .contains(&format!("{DISK_MARKER} (pc, (hd0))")),
            "{what}: not the BIOS disk"
        );
    }
}

impl Drop for BmcMachine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["power.log", "machine.log", "ipmi_sim.log"] {
                let text = read_lossy(&self.dir.join(name));
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "===== bmc/{name} (last {} lines) =====\n{}",
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
        let _ = Command::new(format!("{BMC_BED}/stop.sh"))
            .arg(&self.dir)
            .status();
    }
}

/// When Kickstand's log first shows `mac`'s kickstart served.
fn kickstart_served_at(log: &str, mac: &str) -> Option<SystemTime> {
    let line = log.lines().find(|l| {
        l.contains("status=200")
            && mac_forms(mac)
                .iter()
                .any(|m| l.contains(&format!("/ks/{m}")))
    })?;
    humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()
}

fn secs_between(from: SystemTime, to: Option<SystemTime>) -> f64 {
    to.and_then(|t| t.duration_since(from).ok())
        .map_or(f64::NAN, |d| d.as_secs_f64())
}

/// The IPMI end to end: `ipmi_sim` is the BMC of a SeaBIOS + iPXE machine
/// with its disk, in the bed's namespace where Kickstand reaches it on
/// loopback. Powered on by hand (ipmitool) the machine installs and powers
/// off; powered on through Kickstand it boots its disk and keeps running.
/// Then `kickstand rearm node07 --reboot`: the BMC power cycles it (a new
/// QEMU process), it PXE-boots into the installer, fetches its kickstart
/// with a new build token and reinstalls; its next power-on through
/// Kickstand boots its disk again. Then the same reinstall by hand (off,
/// `rearm`, `ipmitool chassis power on`), for the figures it prints: each
/// way's seconds to the kickstart fetched, as Kickstand's log says.
#[test]
#[ignore = "peer: needs root, netns, qemu, openipmi, ipmitool; run by tests/run"]
fn rearm_reboot_power_cycles_an_ipmi_machine_that_reinstalls_then_boots_its_disk() {
    let mut bed = Bed::bring_up(BedMode::Kickstand);
    let machine = bed.bmc_machine(Firmware::Bios, IPMI_MAC, Disk::BiosStaysUp, "ipmi");
    let bmc = machine.profile();
    bed.write_site(
        &[(IPMI_MAC, "node07")],
        &Site {
            extra: &[(IPMI_MAC, &bmc)],
            ..Site::default()
        },
    );
    bed.start_daemon();

    // Powered on with ipmitool, it installs (and meets the office DHCP,
    // which pings a new address for 3 s, and Kickstand's empty cache).
    machine.ipmitool(&["chassis", "power", "on"]);
    machine.assert_installs(0, IPMI_MAC, "first install");
    assert_eq!(bed.phase(IPMI_MAC), "installed");
    let first_token = bed.stored_token(IPMI_MAC).expect("the install's token");

    // Through Kickstand: it boots its disk and stays up, a running system.
    let from = machine.serial_len();
    let (ok, out, err) = bed.cli(&["power", "node07", "on"]);
    assert!(ok && out.contains("powered on"), "{out}{err}");
    machine.assert_boots_disk(from, "boot after the install");
    assert!(machine.is_on(), "the installed system is not running");
    let running = machine.power_log();

    // The operator reinstalls it.
    let from = machine.serial_len();
    let log_from = bed.daemon_log().len();
    let rearmed = SystemTime::now();
    let (ok, out, err) = bed.cli(&["rearm", "node07", "--reboot"]);
    let answered = rearmed.elapsed().unwrap_or_default();
    assert!(ok, "rearm --reboot failed: {out}{err}");
    assert!(
        out.contains("re-armed; power cycled, next boot from the network (legacy)"),
        "{out}"
    );
    machine.assert_installs(from, IPMI_MAC, "reinstall");
    let rearm_fetched = kickstart_served_at(&bed.daemon_log()[log_from..], IPMI_MAC);
    // Power cycled, not just powered on: the running machine went off and
    // a new one came up.
    let cycle = &machine.power_log()[running.len()..];
    let (_, was) = running
        .last()
        .cloned()
        .expect("the running machine's power-on");
    assert!(
        matches!(cycle, [(off, p), (on, q)] if off == "off" && *p == was && on == "on" && *q != was),
        "the BMC did not power cycle machine {was}: {cycle:?}"
    );
    // The one-time network boot reached the BMC in the machine's own mode:
    // boot flags valid, next boot only, legacy (0x80; 0xa0 would be EFI:
    // SeaBIOS under its iPXE ROM reports client architecture 0); PXE (0x04).
    let flags = machine.boot_option_requests();
    let pxe_once = flags
        .iter()
        .find(|f| *f == "05 80 04 00 00 00")
        .unwrap_or_else(|| panic!("the BMC got no one-time legacy PXE boot: {flags:?}"));
    assert_eq!(bed.phase(IPMI_MAC), "installed");
    let second_token = bed.stored_token(IPMI_MAC).expect("the reinstall's token");
    assert_ne!(second_token, first_token, "the reinstall gets a new token");
    let (status, _) = bed.http("GET", &format!("/ks/{IPMI_MAC}?token={first_token}"));
    assert_eq!(status, 403, "the first install's token still works");

    // Boot once: the next power-on through Kickstand reaches the disk.
    let from = machine.serial_len();
    let (ok, out, err) = bed.cli(&["power", "node07", "on"]);
    assert!(ok, "{out}{err}");
    machine.assert_boots_disk(from, "boot after the reinstall");

    // The same reinstall by hand, for the figures: off, re-armed, and
    // powered on with ipmitool.
    machine.ipmitool(&["chassis", "power", "off"]);
    assert!(machine.wait_off(), "ipmitool did not power the machine off");
    let (ok, out, err) = bed.cli(&["rearm", "node07"]);
    assert!(ok, "{out}{err}");
    let from = machine.serial_len();
    let log_from = bed.daemon_log().len();
    let by_hand = SystemTime::now();
    machine.ipmitool(&["chassis", "power", "on"]);
    machine.assert_installs(from, IPMI_MAC, "reinstall by hand");
    let by_hand_fetched = kickstart_served_at(&bed.daemon_log()[log_from..], IPMI_MAC);

    let timeline = bed.json(&format!("/api/hosts/{IPMI_MAC}/timeline"));
    let power: Vec<&serde_json::Value> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "power")
        .map(|e| &e["detail"])
        .collect();
    let actions: Vec<(&str, bool)> = power
        .iter()
        .map(|d| (d["action"].as_str().unwrap_or_default(), d["pxe"] == true))
        .collect();
    assert_eq!(
        actions,
        [("on", false), ("cycle", true), ("on", false)],
        "{power:?}"
    );
    assert!(power.iter().all(|d| d.get("error").is_none()), "{power:?}");
    let (ok, audit, err) = bed.cli(&["audit"]);
    assert!(ok, "{err}");
    for action in ["power-on", "power-cycle"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(action) && l.contains(IPMI_MAC)),
            "no {action} of {IPMI_MAC} in the audit log:\n{audit}"
        );
    }

    eprintln!(
        "netboot: ipmi: power-on by hand (ipmitool) → kickstart fetched in {:.1} s",
        secs_between(by_hand, by_hand_fetched)
    );
    eprintln!(
        "netboot: ipmi: `kickstand rearm --reboot` → kickstart fetched in {:.1} s (the command answered in {:.2} s; boot flags sent: {pxe_once})",
        secs_between(rearmed, rearm_fetched),
        answered.as_secs_f64()
    );
}

#[path = "support/postgres.rs"]
mod postgres;

/// The segment's address in [`Pair`]: whichever appliance is active holds it.
const SEGMENT_ADDRESS: &str = "10.77.0.5";

/// Two appliances serving the bed's segment together (`server.segment`),
/// each `kickstand serve` in a namespace of its own on `ksbr0` at
/// 10.77.0.1`<i>`, with its own state and cache, one PostgreSQL for both:
/// the active one holds [`SEGMENT_ADDRESS`]. The namespaces go on drop.
struct Pair<'a> {
    bed: &'a Bed,
    namespaces: Vec<String>,
    daemons: Vec<Option<Child>>,
    _pg: postgres::Postgres,
}

impl Drop for Pair<'_> {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut().filter_map(Option::take) {
            let mut daemon = daemon;
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl<'a> Pair<'a> {
    /// Both appliances, from the bed's `site/` (which [`Bed::write_site`]
    /// wrote), started and settled: one active.
    fn up(bed: &'a Bed) -> Pair<'a> {
        let pg = postgres::Postgres::start();
        let mut pair = Pair {
            bed,
            namespaces: Vec::new(),
            daemons: Vec::new(),
            _pg: pg,
        };
        let site = fs::read_to_string(bed.path("site/kickstand.yaml")).expect("kickstand.yaml");
        for i in 1..=2 {
            let ns = format!("{}-a{i}", bed.ns);
            let port = format!("ksa{i}");
            let own = format!("10.77.0.1{i}/24");
            let run = |args: &[&str]| {
                let status = Command::new("ip").args(args).status().expect("ip");
                assert!(status.success(), "ip {args:?}");
            };
            run(&["netns", "add", &ns]);
            pair.namespaces.push(ns.clone());
            run(&["-n", &ns, "link", "set", "lo", "up"]);
            run(&[
                "-n", &bed.ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            run(&["-n", &bed.ns, "link", "set", &port, "master", "ksbr0", "up"]);
            run(&["-n", &ns, "addr", "add", &own, "dev", "eth0"]);
            run(&["-n", &ns, "link", "set", "eth0", "up"]);
            let config = site
                .replacen(
                    "address: 10.77.0.1",
                    &format!("address: {SEGMENT_ADDRESS}"),
                    1,
                )
                .replacen(
                    "interfaces: [ksbr0]",
                    "interfaces: [eth0]\n  segment: bed",
                    1,
                )
                .replacen("http://127.0.0.1:8081/", "http://10.77.0.1:8081/", 1)
                .replacen("dir: ../cache", &format!("dir: ../cache-a{i}"), 1)
                .replacen("state: ../state", &format!("state: ../state-a{i}"), 1)
                + &format!(
                    "state:\n  url: \"{}\"\n  appliance: kick-{i}\n",
                    pair._pg.url
                );
            // A config directory of its own: every other YAML file in one
            // is a profile document.
            let dir = bed.path(&format!("site-a{i}"));
            fs::create_dir_all(&dir).expect("site dir");
            fs::copy(bed.path("site/bed.yaml"), dir.join("bed.yaml")).expect("profiles");
            let path = dir.join("kickstand.yaml");
            fs::write(&path, config).expect("write kickstand.yaml");
            let log = fs::File::create(bed.path(&format!("a{i}.log"))).expect("log");
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    env!("CARGO_BIN_EXE_kickstand"),
                    "serve",
                ])
                .arg("--config")
                .arg(&path)
                .env("KICKSTAND_LOG", "info,kickstand_dhcp=debug")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("kickstand serve");
            // bed-down.sh stops it too, should the test not get to.
            fs::write(bed.path(&format!("a{i}.pid")), child.id().to_string()).expect("pid");
            pair.daemons.push(Some(child));
        }
        pair.active();
        pair
    }

    /// `path` asked of appliance `i`'s own address, from its namespace.
    fn http(&self, i: usize, path: &str) -> (u16, String) {
        let url = format!("http://10.77.0.1{}:8080{path}", i + 1);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespaces[i],
                "curl",
                "-sS",
                "-m",
                "5",
            ])
            .args(["-w", "\n%{http_code}", &url])
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn role(&self, i: usize) -> Option<String> {
        self.daemons[i].as_ref()?;
        let (code, body) = self.http(i, "/api/status");
        let doc: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        Some(doc["appliance"]["segment"]["role"].as_str()?.to_owned())
    }

    /// The one running appliance that says it is active, once it does.
    fn active(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let roles: Vec<Option<String>> =
                (0..self.daemons.len()).map(|i| self.role(i)).collect();
            let active: Vec<usize> = (0..roles.len())
                .filter(|i| roles[*i].as_deref() == Some("active"))
                .collect();
            if let [one] = active[..] {
                return one;
            }
            assert!(
                Instant::now() < deadline,
                "no single active appliance: {roles:?}"
            );
            sleep(Duration::from_millis(300));
        }
    }

    fn log(&self, i: usize) -> String {
        self.bed.read(&format!("a{}.log", i + 1))
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut daemon) = self.daemons[i].take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// Two appliances on one segment: a BIOS machine installs through the
/// active one, which is SIGKILLed while the installer runs (after its
/// `installing` report, before `installed`); the standby takes over the
/// segment's address, and the installer's `installed` report — same
/// address, same build token — lands on it. The machine's next boot goes
/// to its disk, through the new active appliance.
#[test]
#[ignore = "peer: needs root, netns, qemu, postgresql; run by .ci/run"]
fn the_standby_finishes_an_install_when_the_active_appliance_is_killed() {
    let site = Site {
        // The stand-in stays `installing` this long: the kill falls inside.
        extra: &[(
            BIOS_MAC,
            "    kickstart:\n      pre: \"# KS-STANDIN-INSTALL-SECS: 25\"\n",
        )],
        ..Site::default()
    };
    let bed = Bed::bring_up_with(BedMode::Kickstand, &site);
    bed.write_site(&[(BIOS_MAC, "bios01")], &site);
    let mut pair = Pair::up(&bed);
    let first = pair.active();
    let installing = format!("path=\"/api/hosts/{BIOS_MAC}/installing\"");
    let run = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + VM_LIMIT;
            while !pair.log(first).contains(&installing) {
                assert!(
                    Instant::now() < deadline,
                    "no installing report reached the active appliance"
                );
                sleep(Duration::from_millis(200));
            }
            let pid = pair.daemons[first]
                .as_ref()
                .expect("running")
                .id()
                .to_string();
            let killed = Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .expect("kill");
            assert!(killed.success());
            eprintln!(
                "netboot: the active appliance kick-{} killed mid-install",
                first + 1
            );
        });
        let run = bed.boot(Firmware::Bios, BIOS_MAC, "standby", GAVE_UP);
        watcher.join().expect("the watcher");
        run
    });
    pair.kill(first);
    let second = 1 - first;
    assert_eq!(pair.active(), second, "the standby took over");
    // The repo proxy goes on at the segment's address too (the new active
    // one's own cache, filled from the mirror).
    let kernel = format!("http://{SEGMENT_ADDRESS}:8080/repo/bed/{TREE}/images/pxeboot/vmlinuz");
    let fetched = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.ns,
            "curl",
            "-sSf",
            "-m",
            "30",
            "-o",
            "/dev/null",
            &kernel,
        ])
        .status()
        .expect("curl");
    assert!(fetched.success(), "{kernel}");
    assert!(
        pair.log(second).contains("path=\"/repo/bed/"),
        "the kernel did not come from the new active appliance"
    );
    assert!(run.powered_off(), "{:?}", run.end);
    assert!(
        run.serial
            .contains(&format!("KS-STANDIN: reported installed for {BIOS_MAC}")),
        "the installer's report did not land:\n{}",
        run.serial
    );
    let report = format!("path=\"/api/hosts/{BIOS_MAC}/installed\"");
    let installed = |i: usize| {
        pair.log(i)
            .lines()
            .any(|l| l.contains(&report) && l.contains("status=200"))
    };
    assert!(
        installed(second),
        "the standby did not take the installed report"
    );
    assert!(!installed(first));
    let (_, hosts) = pair.http(second, "/api/hosts");
    let hosts: serde_json::Value = serde_json::from_str(&hosts).expect("hosts JSON");
    let phase = hosts
        .as_array()
        .and_then(|h| h.iter().find(|h| h["mac"] == BIOS_MAC))
        .map(|h| h["phase"].clone());
    assert_eq!(phase, Some(serde_json::json!("installed")));
    // Its next boot goes to its disk, through the new active appliance.
    assert_reaches_disk(
        &bed,
        Firmware::Bios,
        BIOS_MAC,
        "standby-disk",
        Disk::Bios,
        "pc, (hd0)",
    );
    assert!(
        script_fetches(&pair.log(second), BIOS_MAC) > 0,
        "the disk boot's script did not come from the new active appliance"
    );
}
