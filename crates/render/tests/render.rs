//! Rendering the shipped samples: every host's kickstart and boot scripts,
//! the unknown-machine script, URLs that the URL scheme reads back, and
//! template errors located in their file.

use std::path::{Path, PathBuf};

use std::net::{IpAddr, Ipv4Addr};

use kickstand_profiles::{Mac, load, urls};
use kickstand_render::{BootAction, RenderError, Site, UnknownAction};

const TOKEN: &str = "Zm9vYmFy-token_1";

/// A client on the samples' IPv4 address (their appliance is 127.0.0.1).
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/kickstand.yaml")
}

fn site() -> Site {
    let snapshot = load(&samples()).unwrap_or_else(|e| panic!("{e}"));
    Site::new(snapshot).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_sample_host_renders_its_kickstart_and_both_boot_scripts() {
    let site = site();
    assert!(site.snapshot.hosts.len() >= 4);
    for (mac, host) in &site.snapshot.hosts {
        let ks = site.to(V4).kickstart(mac, TOKEN).expect("kickstart");
        assert!(
            ks.contains(&format!("--hostname={}", host.hostname)),
            "{ks}"
        );
        let os = &site.snapshot.oses[&host.os];
        let tree = site.urls().repo(&os.mirror, &os.tree);
        assert!(ks.contains(&format!("url --url={tree}")), "{ks}");
        // Every callback carries the build token, quoted for the shell.
        for report in ["installing", "installed", "failed"] {
            let url = site.urls().callback(*mac, report, TOKEN);
            assert!(url.ends_with(&format!("?token={TOKEN}")), "{url}");
            assert!(
                ks.contains(&format!("'{url}'")),
                "{report} callback missing:\n{ks}"
            );
        }
        assert!(ks.contains("%onerror"), "{ks}");
        // The installed system's VLAN is on its network line, which then
        // leaves the installer on the untagged network it booted on.
        let network = ks
            .lines()
            .find(|l| l.starts_with("network "))
            .unwrap_or_else(|| panic!("no network line:\n{ks}"));
        let tail = match host.network.vlan {
            Some(vlan) => format!(" --vlanid={} --no-activate", vlan.get()),
            None => " --activate".to_owned(),
        };
        assert!(network.ends_with(&tail), "{network}");

        let install = site
            .to(V4)
            .ipxe(mac, BootAction::Install, TOKEN)
            .expect("install script");
        assert!(install.starts_with("#!ipxe\n"), "{install}");
        let ks_url = site.urls().kickstart(*mac, TOKEN);
        assert!(install.contains(&format!("inst.ks={ks_url}")), "{install}");
        let server = &site.snapshot.appliance.server;
        let syslog = format!(
            "inst.syslog={}:{}",
            server.address.primary(),
            server.syslog_port
        );
        assert!(install.contains(&syslog), "{install}");
        assert!(install.contains("\nboot\n"), "{install}");
        // The secrets are in the kickstart only.
        if let Some(hash) = &host.root_password_hash {
            assert!(ks.contains(hash.as_str()));
            assert!(
                !install.contains(hash.as_str()),
                "a secret in the boot script"
            );
        }

        let disk = site
            .to(V4)
            .ipxe(mac, BootAction::LocalDisk, TOKEN)
            .expect("local disk script");
        assert!(disk.contains("\nexit\n"), "{disk}");
        assert!(
            !disk.contains("kernel"),
            "an installed host got the installer: {disk}"
        );
        assert!(!disk.contains("inst.ks"), "{disk}");
        assert!(
            !disk.contains(TOKEN),
            "a local-disk script carries no token: {disk}"
        );
    }
}

#[test]
fn urls_in_scripts_are_the_ones_the_scheme_reads_back() {
    let site = site();
    let (mac, _) = site.snapshot.hosts.iter().next().expect("a host");
    let url = site.urls().boot_script(*mac);
    let name = url
        .strip_prefix(site.urls().base())
        .and_then(|p| p.strip_prefix('/'))
        .expect("under the base URL");
    assert_eq!(urls::parse_boot_script_name(name), Some(Ok(*mac)));
}

#[test]
fn unknown_machines_get_a_script_that_never_installs() {
    let site = site();
    let stranger = Mac([0x52, 0x54, 0, 0x99, 0x99, 1]);
    let script = site
        .to(V4)
        .unknown_ipxe(&stranger, UnknownAction::LocalDisk)
        .expect("script");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(script.contains("52:54:00:99:99:01"), "{script}");
    assert!(script.contains("\nexit\n"), "{script}");
    for never in ["kernel", "inst.ks", "initrd"] {
        assert!(!script.contains(never), "{never} in {script}");
    }
    assert!(matches!(
        site.to(V4).kickstart(&stranger, TOKEN),
        Err(RenderError::UnknownHost(m)) if m == stranger
    ));
    assert!(matches!(
        site.to(V4).ipxe(&stranger, BootAction::Install, TOKEN),
        Err(RenderError::UnknownHost(_))
    ));
    // Discovery: a report of what iPXE knows, then the disk; no installer.
    let discover = site
        .to(V4)
        .unknown_ipxe(&stranger, UnknownAction::Discover)
        .expect("discovery script");
    let report = site.urls().discovery_report(stranger);
    assert!(
        discover.contains(&format!(
            "imgfetch {report}?uuid=${{uuid}}&serial=${{serial}}"
        )),
        "{discover}"
    );
    assert!(discover.contains("\nexit\n"), "{discover}");
    for never in ["kernel", "inst.ks", "initrd"] {
        assert!(!discover.contains(never), "{never} in {discover}");
    }
    // UEFI, where `exit` hangs: an OS tree's GRUB of the machine's own
    // architecture (the first OS by name), told where Kickstand is.
    let urls = site.urls();
    let base = urls.base();
    for (buildarch, grub) in [
        ("x86_64", "os/alma-9/EFI/BOOT/grubx64.efi"),
        ("arm64", "os/centos-stream-9-aarch64/EFI/BOOT/grubaa64.efi"),
    ] {
        let line = format!(
            "iseq ${{platform}} efi && iseq ${{buildarch}} {buildarch} && set netX/next-server {} && chain --autofree {base}/{grub} ||\n",
            site.snapshot.appliance.server.address
        );
        for script in [&script, &discover] {
            assert!(script.contains(&line), "{line} not in {script}");
        }
    }
}

#[test]
fn a_template_that_names_a_missing_value_is_located() {
    let mut snapshot = load(&samples()).unwrap_or_else(|e| panic!("{e}"));
    let source = snapshot
        .templates
        .get_mut("el9-base.ks.j2")
        .expect("base template");
    *source = source.replacen("timezone {{ host.timezone }}", "timezone {{ host.tz }}", 1);
    let line = source
        .lines()
        .position(|l| l.contains("host.tz"))
        .expect("edited line") as u64
        + 1;
    let err = Site::new(snapshot).expect_err("an undefined value must not render");
    let d = err.0.first().expect("a diagnostic");
    assert!(d.file.ends_with("el9-base.ks.j2"), "{d}");
    assert_eq!(d.position.map(|(l, _)| l), Some(line), "{d}");
    assert!(d.message.contains("undefined"), "{d}");
}

#[test]
fn the_shipped_unknown_template_is_used_when_a_directory_lacks_it() {
    let mut snapshot = load(&samples()).unwrap_or_else(|e| panic!("{e}"));
    snapshot
        .templates
        .remove(kickstand_render::UNKNOWN_IPXE_TEMPLATE);
    let site = Site::new(snapshot).unwrap_or_else(|e| panic!("{e}"));
    let script = site
        .to(V4)
        .unknown_ipxe(
            &Mac([0x52, 0x54, 0, 0x99, 0x99, 2]),
            UnknownAction::LocalDisk,
        )
        .expect("built-in template");
    assert!(script.contains("\nexit\n"), "{script}");
}

/// GRUB's own parser (`grub-script-check`, Debian's grub-common) accepts
/// `script`. Without the peer installed, the test says so and fails.
fn grub_script_check(name: &str, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("grub-script-check")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("grub-script-check (grub-common) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "grub-script-check rejected {name}:\n{}{}\n---\n{script}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "peer: needs grub-script-check (grub-common); run by tests/run"]
fn every_sample_host_renders_grub_configs_grub_parses() {
    let site = site();
    let chain = site.to(V4).grub_chain().expect("generic grub.cfg");
    assert!(
        chain.contains("configfile \"$prefix/grub.cfg-01-"),
        "{chain}"
    );
    assert!(
        chain.contains("chainloader"),
        "no config → the disk: {chain}"
    );
    grub_script_check("grub.cfg", &chain);
    for (mac, host) in &site.snapshot.hosts {
        let os = &site.snapshot.oses[&host.os];
        let install = site
            .to(V4)
            .grub(mac, BootAction::Install, TOKEN)
            .expect("install config");
        let kernel = format!("linux /{} ", urls::os_file_name(&os.name, &os.kernel));
        assert!(install.contains(&kernel), "{install}");
        let initrd = format!("initrd /{}\n", urls::os_file_name(&os.name, &os.initrd));
        assert!(install.contains(&initrd), "{install}");
        let ks = site.urls().kickstart(*mac, TOKEN);
        assert!(install.contains(&format!("'inst.ks={ks}'")), "{install}");
        assert!(install.contains("\nboot\n"), "{install}");
        if let Some(hash) = &host.root_password_hash {
            assert!(
                !install.contains(hash.as_str()),
                "a secret in GRUB's config"
            );
        }
        grub_script_check(&format!("{mac} install"), &install);

        let disk = site
            .to(V4)
            .grub(mac, BootAction::LocalDisk, TOKEN)
            .expect("local-disk config");
        assert!(disk.contains("chainloader $ks_loader"), "{disk}");
        for never in ["\nlinux ", "\ninitrd ", "inst.ks", TOKEN, "\nexit"] {
            assert!(!disk.contains(never), "{never:?} in {disk}");
        }
        grub_script_check(&format!("{mac} local disk"), &disk);
    }
}

/// A dual-stack appliance tells each client the address of the family it
/// came in on, in brackets where it is IPv6; an IPv6-only one also keeps
/// IPv4 off the installed systems.
#[test]
fn each_client_is_sent_urls_of_its_own_address_family() {
    use kickstand_profiles::model::Addresses;
    use std::net::Ipv6Addr;
    let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
    let mut snapshot = load(&samples()).unwrap_or_else(|e| panic!("{e}"));
    snapshot.appliance.server.address = Addresses::Both(Ipv4Addr::new(10, 0, 0, 5), v6);
    let mut ipv6_only = snapshot.clone();
    ipv6_only.appliance.server.address = Addresses::V6(v6);
    let site = Site::new(snapshot).unwrap_or_else(|e| panic!("{e}"));
    let (mac, host) = site
        .snapshot
        .hosts
        .iter()
        .find(|(_, h)| h.network.static_ip.is_none())
        .expect("a host on DHCP");

    let over_v6 = site.to(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99)));
    let script = over_v6
        .ipxe(mac, BootAction::Install, TOKEN)
        .expect("script");
    for want in [
        format!(" inst.ks=http://[fd00::5]:8080/ks/{mac}?token={TOKEN} "),
        " inst.syslog=[fd00::5]:5514 ".to_owned(),
        " ip=auto6".to_owned(),
    ] {
        assert!(script.contains(&want), "{want} not in {script}");
    }
    let ks = over_v6.kickstart(mac, TOKEN).expect("kickstart");
    assert!(ks.contains("url --url=http://[fd00::5]:8080/repo/"), "{ks}");
    assert!(!ks.contains("10.0.0.5"), "{ks}");
    // Dual-stack: the installed system keeps IPv4.
    assert!(!ks.contains("--noipv4"), "{ks}");

    // An IPv4 client, however it reached a dual-stack socket.
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 99).to_ipv6_mapped());
    let script = site
        .to(mapped)
        .ipxe(mac, BootAction::Install, TOKEN)
        .expect("script");
    assert!(
        script.contains(" inst.ks=http://10.0.0.5:8080/ks/"),
        "{script}"
    );
    assert!(script.contains(" ip=dhcp"), "{script}");
    assert!(!script.contains("fd00::5"), "{script}");

    let site = Site::new(ipv6_only).unwrap_or_else(|e| panic!("{e}"));
    let ks = site.to(V4).kickstart(&host.mac, TOKEN).expect("kickstart");
    assert!(ks.contains("url --url=http://[fd00::5]:8080/repo/"), "{ks}");
    assert!(
        ks.contains(&format!(
            "network --bootproto=dhcp --device={} --noipv4 --ipv6=auto --hostname={}",
            host.network.device, host.hostname
        )),
        "{ks}"
    );
}

/// A `boot_vlan` host's installer names its boot NIC by MAC, tags it and
/// takes its address on the VLAN (dracut's `ifname=`, `vlan=`, `ip=`), in
/// the iPXE script and GRUB's config alike, of either address family; its
/// neighbours keep the plain `ip=dhcp`.
#[test]
fn a_boot_vlan_moves_the_installer_onto_the_vlan() {
    use kickstand_profiles::model::Addresses;
    use std::net::Ipv6Addr;
    let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
    let mut snapshot = load(&samples()).unwrap_or_else(|e| panic!("{e}"));
    snapshot.appliance.server.address = Addresses::Both(Ipv4Addr::new(10, 0, 0, 5), v6);
    let (mac, host) = snapshot.hosts.iter_mut().next().expect("a sample host");
    let mac = *mac;
    host.boot_vlan = Some("20".parse().expect("VLAN ID"));
    let site = Site::new(snapshot).unwrap_or_else(|e| panic!("{e}"));
    let tagged =
        |method: &str| format!(" ifname=ksboot:{mac} vlan=ksboot.20:ksboot ip=ksboot.20:{method}");
    let over_v6 = site.to(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99)));
    for (rendering, method) in [(site.to(V4), "dhcp"), (over_v6, "auto6")] {
        let ipxe = rendering
            .ipxe(&mac, BootAction::Install, TOKEN)
            .expect("script");
        let grub = rendering
            .grub(&mac, BootAction::Install, TOKEN)
            .expect("config");
        for script in [ipxe, grub] {
            let kernel = script
                .lines()
                .find(|l| l.starts_with("kernel ") || l.starts_with("linux "))
                .unwrap_or_else(|| panic!("no kernel line:\n{script}"));
            assert!(kernel.contains(&tagged(method)), "{kernel}");
            assert!(
                !kernel.contains(" ip=dhcp") && !kernel.contains(" ip=auto6"),
                "{kernel}"
            );
        }
    }
    let (other, _) = site
        .snapshot
        .hosts
        .iter()
        .find(|(_, h)| h.boot_vlan.is_none())
        .expect("an untagged host");
    let script = site
        .to(V4)
        .ipxe(other, BootAction::Install, TOKEN)
        .expect("script");
    assert!(
        script.contains(" ip=dhcp") && !script.contains("vlan="),
        "{script}"
    );
}
