//! PostgreSQL failover through the real binary: Debian's PostgreSQL as a
//! primary and a streaming-replication standby (`pg_basebackup -R`), both
//! over TLS checked with `verify-full` (each host by its own name), and two
//! appliances whose `state.url` names both hosts. The primary is killed
//! in the middle of a rack's installs; while no primary is reachable the
//! boots and callbacks are answered from memory and the status page and
//! `/metrics` say the database is unreachable; the standby is promoted and
//! what was kept is written to it, where psql finds it, and the other
//! appliance sees it. The status page is read as Chromium (headless)
//! draws it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::{Bed, Daemon, eventually, promtool_complaints};

/// Hosts of the rack, the first installed before the outage, the others
/// in the middle of their installs.
const INSTALLED: &str = "52:54:00:10:00:01";
const POSTED: &str = "52:54:00:10:00:02";
const PRE_AND_POST: &str = "52:54:00:10:00:03";
const PRE_ONLY: &str = "52:54:00:10:00:04";
/// A host that first boots during the outage.
const LATE: &str = "52:54:00:10:00:05";

/// `mac|phase` for every host `server` holds.
fn phases(server: &Postgres) -> Vec<String> {
    server
        .psql("SELECT mac || '|' || phase FROM hosts ORDER BY mac")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A bed whose `state.url` names the primary, then the standby, each by a
/// name its certificate carries, in libpq's `key=value` form.
fn failover_bed(primary: &Postgres, standby: &Postgres, name: &str) -> Bed {
    use std::os::unix::fs::PermissionsExt as _;
    let bed = Bed::new();
    bed.write(
        "profiles/pg-ca.pem",
        &std::fs::read_to_string(primary.file("tls/ca.pem")).expect("the CA"),
    );
    bed.write(
        "profiles/pg.password",
        &std::fs::read_to_string(primary.file("password")).expect("the password"),
    );
    std::fs::set_permissions(
        bed.path("profiles/pg.password"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    bed.write(
        "profiles/hosts/rack2.yaml",
        &format!(
            "hosts:\n  \"{PRE_AND_POST}\":\n    hostname: node03\n  \"{PRE_ONLY}\":\n    hostname: node04\n  \"{LATE}\":\n    hostname: node05\n"
        ),
    );
    let config = bed.config();
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "state:\n  url: \"host=127.0.0.1,localhost port={},{} user=kickstand dbname=postgres sslmode=verify-full target_session_attrs=read-write\"\n  ca_file: pg-ca.pem\n  password_file: pg.password\n  appliance: {name}\n",
        primary.port(),
        standby.port()
    ));
    std::fs::write(Path::new(&config), text).expect("write config");
    bed
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn post(daemon: &Daemon, mac: &str, token: &str, stage: &str) -> serde_json::Value {
    let (status, body) = daemon.post(&format!("/api/hosts/{mac}/{stage}?token={token}"));
    assert_eq!(status, 200, "{mac} {stage}: {body}");
    json(&body)
}

fn boot_script(daemon: &Daemon, mac: &str) -> String {
    let (status, script) = daemon.get(&format!("/boot/{mac}.ipxe"));
    assert_eq!(status, 200, "{mac}: {script}");
    script
}

fn database(daemon: &Daemon) -> serde_json::Value {
    let (status, body) = daemon.get("/api/status");
    assert_eq!(status, 200, "{body}");
    json(&body)["database"].clone()
}

/// `kickstand_state_database_up`, checked by promtool with the rest.
fn database_up(daemon: &Daemon) -> i64 {
    let (status, metrics) = daemon.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    if let Some(complaints) = promtool_complaints(&metrics) {
        panic!("promtool: {complaints}\n{metrics}");
    }
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kickstand_state_database_up "))
        .unwrap_or_else(|| panic!("no kickstand_state_database_up:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number")
}

/// The status page's warnings as Chromium draws them: the DOM once its
/// script has fetched `/api/status` and drawn it.
fn rendered_warnings(daemon: &Daemon) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("{}/", daemon.base))
        .output()
        .expect("chromium (tests/setup-peers installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    let at = dom
        .find("id=\"warnings\"")
        .unwrap_or_else(|| panic!("no warnings on the page:\n{dom}"));
    dom[at..]
        .split("</section>")
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
#[ignore = "peer: postgresql, chromium; run by .ci/run"]
fn installs_finish_across_a_primary_killed_and_a_standby_promoted() {
    let primary = Postgres::start_tls();
    let standby = Postgres::start_standby(&primary);
    let (bed_a, bed_b) = (
        failover_bed(&primary, &standby, "rack-a"),
        failover_bed(&primary, &standby, "rack-b"),
    );
    let a = Daemon::start(&bed_a.config());
    let b = Daemon::start(&bed_b.config());
    let up = database(&a);
    assert_eq!(up["up"], true, "{up}");
    assert_eq!(
        up["primary"],
        format!("127.0.0.1:{}", primary.port()),
        "{up}"
    );
    assert_eq!(database_up(&a), 1);

    // The rack before the outage: one host installed, three installing.
    let mut tokens = std::collections::HashMap::new();
    for mac in [INSTALLED, POSTED, PRE_AND_POST, PRE_ONLY] {
        let token = a.build_token(mac);
        assert_eq!(a.get(&format!("/ks/{mac}?token={token}")).0, 200, "{mac}");
        tokens.insert(mac, token);
    }
    post(&a, INSTALLED, &tokens[INSTALLED], "installing");
    post(&a, INSTALLED, &tokens[INSTALLED], "installed");
    post(&a, POSTED, &tokens[POSTED], "installing");

    primary.ctl("kill");
    let killed = Instant::now();
    let down = eventually(Duration::from_secs(10), || {
        let db = database(&a);
        (db["up"] == false).then_some(db)
    })
    .expect("the status document says the database is unreachable");
    eprintln!(
        "unreachable on the status document after {:?}",
        killed.elapsed()
    );
    assert!(
        down["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "{down}"
    );

    // No primary: the standby refuses writing sessions. Boots and
    // callbacks are answered from memory, none waits on the database
    // past the callbacks' bound.
    let script = boot_script(&a, INSTALLED);
    assert!(
        script.contains("\nexit\n") && !script.contains("kernel"),
        "{script}"
    );
    let script = boot_script(&a, POSTED);
    assert!(
        script.contains("kernel"),
        "mid-install, still installing:\n{script}"
    );
    assert_eq!(
        a.get(&format!("/ks/{POSTED}?token={}", tokens[POSTED])).0,
        200
    );
    let (mut accepted, mut slowest) = (0, Duration::ZERO);
    for (mac, stage) in [
        (POSTED, "installed"),
        (PRE_AND_POST, "installing"),
        (PRE_AND_POST, "installed"),
        (PRE_ONLY, "installing"),
    ] {
        let asked = Instant::now();
        let reply = post(&a, mac, &tokens[mac], stage);
        assert_eq!(reply["stored"], "kept", "{mac} {stage}: {reply}");
        slowest = slowest.max(asked.elapsed());
        accepted += 1;
    }
    // The callbacks' bound (5 s), and curl's reply well within it.
    assert!(slowest < Duration::from_secs(7), "{slowest:?}");
    eprintln!("callbacks accepted with no primary: {accepted}, the slowest in {slowest:?}");
    // Installed during the outage: to its disk at its next boot.
    let script = boot_script(&a, POSTED);
    assert!(script.contains("\nexit\n"), "{script}");
    // A new install is not begun: its build token would not be on disk.
    let (status, body) = a.get(&format!("/boot/{LATE}.ipxe"));
    assert_eq!(status, 503, "{body}");

    let down = database(&a);
    assert_eq!(down["up"], false, "{down}");
    assert!(down["waiting_changes"].as_u64() > Some(0), "{down}");
    assert_eq!(database_up(&a), 0);
    let (_, page) = a.get("/status");
    assert!(page.contains("database     UNREACHABLE since"), "{page}");
    let warnings = rendered_warnings(&a);
    assert!(
        warnings.contains("The state database is unreachable since"),
        "{warnings}"
    );

    standby.ctl("promote");
    let promoted = Instant::now();
    let want = |mac: &str| format!("{mac}|installed");
    let written = eventually(Duration::from_secs(20), || {
        phases(&standby)
            .contains(&want(PRE_AND_POST))
            .then(|| promoted.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "what was kept is not in the promoted database: {:?}",
            phases(&standby)
        )
    });
    eprintln!("from pg_ctl promote to the appliance writing again: {written:?}");

    // The install that had only begun finishes on the promoted primary.
    let reply = post(&a, PRE_ONLY, &tokens[PRE_ONLY], "installed");
    assert_eq!(reply["stored"], "written", "{reply}");
    let stored = phases(&standby);
    for mac in [INSTALLED, POSTED, PRE_AND_POST, PRE_ONLY] {
        assert!(stored.contains(&want(mac)), "{mac}: {stored:?}");
    }
    // Each callback once: none lost, none written twice by the retries.
    let callbacks = standby.psql(&format!(
        "SELECT count(*) FROM events WHERE kind = 'callback' AND mac = '{PRE_AND_POST}'"
    ));
    assert_eq!(callbacks.trim(), "2", "two callbacks of {PRE_AND_POST}");

    let back = eventually(Duration::from_secs(10), || {
        let db = database(&a);
        (db["up"] == true).then_some(db)
    })
    .expect("the status document says the database is back");
    assert_eq!(
        back["primary"],
        format!("127.0.0.1:{}", standby.port()),
        "{back}"
    );
    assert_eq!(database_up(&a), 1);
    let warnings = rendered_warnings(&a);
    assert!(!warnings.contains("state database"), "{warnings}");

    // The host that could not begin its install begins it now.
    assert!(boot_script(&a, LATE).contains("kernel"));

    // The other appliance sees what was kept through the outage and what
    // was written after it.
    for mac in [POSTED, PRE_AND_POST, PRE_ONLY] {
        let seen = eventually(Duration::from_secs(10), || {
            boot_script(&b, mac).contains("\nexit\n").then_some(())
        });
        assert!(seen.is_some(), "rack B never saw {mac} installed");
    }

    // One line when it went, one when it came back: not one per retry.
    for (daemon, name) in [(&a, "rack-a"), (&b, "rack-b")] {
        let log = daemon.log();
        let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(
            count("the state database is unreachable: answering from memory"),
            1,
            "{name}:\n{log}"
        );
        assert_eq!(
            count("the state database is reachable again"),
            1,
            "{name}:\n{log}"
        );
    }
}
