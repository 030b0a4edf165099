//! Live reload against the running binary: edits are picked up, broken
//! edits keep the last good profiles in force, and saves by rename (vim,
//! `sed -i`) are seen because directories, not files, are watched.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Bed, Daemon, eventually};

const NODE02: &str = "52:54:00:10:00:02";
const WAIT: Duration = Duration::from_secs(20);

fn hostname_in_ks(daemon: &Daemon) -> String {
    let (status, ks) = daemon.kickstart(NODE02);
    assert_eq!(status, 200, "{ks}");
    ks.split("--hostname=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("hostname in ks")
        .to_owned()
}

#[test]
fn an_edit_is_served_by_the_next_request() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    assert_eq!(hostname_in_ks(&daemon), "node02");

    bed.edit(
        "profiles/hosts/rack1.yaml",
        "hostname: node02",
        "hostname: node02b",
    );
    let seen = eventually(WAIT, || {
        (hostname_in_ks(&daemon) == "node02b").then_some(())
    });
    assert!(seen.is_some(), "edit not picked up:\n{}", daemon.log());

    // A new host file appears: its machine gets a kickstart.
    bed.write(
        "profiles/hosts/rack9.yaml",
        "hosts:\n  \"52:54:00:10:09:01\":\n    hostname: node91\n",
    );
    let served = eventually(WAIT, || {
        (daemon.kickstart("52:54:00:10:09:01").0 == 200).then_some(())
    });
    assert!(served.is_some(), "{}", daemon.log());
}

#[test]
fn a_broken_edit_keeps_the_last_good_profiles_until_fixed() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let before = daemon.log().len();

    // A syntax error, then a reference to an OS that does not exist.
    bed.edit(
        "profiles/hosts/rack1.yaml",
        "hostname: node02",
        "hostname: [node02",
    );
    let line = daemon.wait_for_log_after(before, "profile reload rejected", WAIT);
    assert!(line.is_some(), "no rejection logged:\n{}", daemon.log());
    let log = daemon.log();
    assert!(
        log[before..].contains("rack1.yaml:"),
        "the error names the file:\n{log}"
    );
    assert_eq!(
        hostname_in_ks(&daemon),
        "node02",
        "still served from the last good profiles"
    );
    let (_, status) = daemon.get("/status");
    assert!(
        status.contains("REJECTED") && status.contains("rack1.yaml"),
        "{status}"
    );

    bed.edit(
        "profiles/hosts/rack1.yaml",
        "hostname: [node02",
        "hostname: node02\n    os: centos-stream-8",
    );
    let before = daemon.log().len();
    assert!(
        daemon
            .wait_for_log_after(before, "OS `centos-stream-8` is not defined", WAIT)
            .is_some(),
        "{}",
        daemon.log()
    );
    assert_eq!(hostname_in_ks(&daemon), "node02");
    assert_eq!(
        daemon.kickstart("52:54:00:10:00:01").0,
        200,
        "other hosts keep being served"
    );

    bed.edit(
        "profiles/hosts/rack1.yaml",
        "hostname: node02\n    os: centos-stream-8",
        "hostname: node02c",
    );
    let fixed = eventually(WAIT, || {
        (hostname_in_ks(&daemon) == "node02c").then_some(())
    });
    assert!(fixed.is_some(), "{}", daemon.log());
    let (_, status) = daemon.get("/status");
    assert!(status.contains("last reload  ok"), "{status}");
}

#[test]
fn saves_by_rename_are_picked_up() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    let file = bed.path("profiles/hosts/rack1.yaml");

    // sed -i writes a temporary file and renames it over the original.
    let ok = Command::new("sed")
        .arg("-i")
        .arg("s/hostname: node02$/hostname: node02sed/")
        .arg(&file)
        .status()
        .expect("sed");
    assert!(ok.success());
    let seen = eventually(WAIT, || {
        (hostname_in_ks(&daemon) == "node02sed").then_some(())
    });
    assert!(seen.is_some(), "sed -i not picked up:\n{}", daemon.log());

    // vim's default: write a new file beside it, then rename it into place.
    let text = std::fs::read_to_string(&file)
        .expect("read")
        .replace("node02sed", "node02vim");
    let swap = bed.path("profiles/hosts/.rack1.yaml.swp");
    std::fs::write(&swap, text).expect("write");
    std::fs::rename(&swap, &file).expect("rename");
    let seen = eventually(WAIT, || {
        (hostname_in_ks(&daemon) == "node02vim").then_some(())
    });
    assert!(seen.is_some(), "rename not picked up:\n{}", daemon.log());
}

#[test]
fn template_edits_and_sighup_reload() {
    let bed = Bed::new();
    let daemon = Daemon::start(&bed.config());
    bed.edit(
        "templates/el9-base.ks.j2",
        "selinux --enforcing",
        "selinux --permissive",
    );
    let seen = eventually(WAIT, || {
        daemon
            .kickstart(NODE02)
            .1
            .contains("selinux --permissive")
            .then_some(())
    });
    assert!(seen.is_some(), "{}", daemon.log());

    let before = daemon.log().len();
    daemon.signal("HUP");
    assert!(
        daemon
            .wait_for_log_after(before, "trigger=Signal", WAIT)
            .is_some(),
        "{}",
        daemon.log()
    );
}
