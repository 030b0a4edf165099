//! Several appliances on one segment sharing one PostgreSQL (Debian's,
//! started by the test), each `kickstand serve` in a network namespace of
//! its own on one bridge, with a PXE client beside them: exactly one
//! answers; when it dies or freezes a standby takes over the segment, its
//! address and the install in progress; a frozen one that wakes answers
//! nothing. Nothing leaves the machine.
//!
//! Root and the peers (postgresql, python3, curl) are needed: ignored by
//! default, run by `.ci/run`.

mod support;

use std::time::{Duration, Instant};

use support::rack::{NODE01, Rack, SEGMENT_ADDRESS, SEGMENT_ADDRESS6, WAIT, segment_url};
use support::{eventually, promtool_complaints, token_in};

/// Three appliances on one segment: one answers, holding the segment's
/// address; SIGKILL it, and another takes over the segment, its address
/// and the install under way (same build token); Ctrl-C that one, and the
/// third takes over at once (the lease given up, not run out).
#[test]
#[ignore = "peers: postgresql, network namespaces (root); run by .ci/run"]
fn one_of_three_answers_and_a_standby_takes_over_the_install_when_it_dies() {
    let mut rack = Rack::up("sb1", 3);
    rack.start_all();
    let first = rack.active();
    rack.only_answer_is_from(first, &Rack::answers(rack.discover(Duration::from_secs(2))));
    // Over DHCPv6 too: one Advertise, from the active one.
    let advertised = rack.solicit(Duration::from_secs(2));
    assert_eq!(
        advertised,
        [rack.appliances[first].link_local()],
        "{}",
        rack.logs()
    );
    for (i, a) in rack.appliances.iter().enumerate() {
        assert_eq!(
            a.holds_address(),
            i == first,
            "{} and the segment's address",
            a.name
        );
    }
    // The status text and /metrics say who answers, and since when.
    for (i, a) in rack.appliances.iter().enumerate() {
        let (_, text) = a.get("/status");
        let (_, metrics) = a.get("/metrics");
        let active = &rack.appliances[first].name;
        let (said, gauge) = if i == first {
            (
                "segment      rack-a: ACTIVE: this appliance answers it (term ".to_owned(),
                1,
            )
        } else {
            (
                format!("segment      rack-a: standby: {active} answers it (term "),
                0,
            )
        };
        assert!(text.contains(&said), "{}: {text}", a.name);
        let line = format!("kickstand_segment_active{{segment=\"rack-a\"}} {gauge}");
        assert!(metrics.lines().any(|l| l == line), "{}: {metrics}", a.name);
        assert!(
            metrics.contains("kickstand_segment_active_since_seconds{segment=\"rack-a\"} 1"),
            "{}: a tenure's start, in seconds since the epoch",
            a.name
        );
        assert_eq!(promtool_complaints(&metrics), None);
    }
    // And the page, in Chromium.
    let active = &rack.appliances[first];
    let card = active.segment_card();
    assert!(
        card.starts_with("rack-a — ACTIVE: this appliance answers it (term "),
        "{card}"
    );
    let card = rack.appliances[(first + 1) % 3].segment_card();
    let standing_by = format!("rack-a — standby: {} answers it (term ", active.name);
    assert!(card.starts_with(&standing_by), "{card}");
    // Neither flags the other as a rogue server.
    for a in &rack.appliances {
        let (_, status) = a.get("/api/status");
        let doc: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        assert_eq!(
            doc["appliance"]["rogue_dhcp"],
            serde_json::json!([]),
            "{}",
            a.name
        );
    }

    // The install begins on the first: token, kickstart, a callback.
    rack.request_lease();
    let (code, script) = rack.curl("GET", &segment_url(&format!("/boot/{NODE01}.ipxe")));
    assert_eq!(code, 200, "{script}");
    let token = token_in(&script)
        .unwrap_or_else(|| panic!("no build token in:\n{script}\n{}", rack.logs()));
    let ks = format!("/ks/{NODE01}?token={token}");
    let (code, kickstart) = rack.curl("GET", &segment_url(&ks));
    assert_eq!(code, 200, "{kickstart}");
    // The kickstart's own report that the install is done, as `%post`
    // runs it (without `|| true`, to see how it ended).
    let report = kickstart
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/installed?token="))
        .and_then(|l| l.strip_suffix(" || true"))
        .unwrap_or_else(|| panic!("no installed report in the kickstart:\n{kickstart}"))
        .to_owned();
    let installing = format!("/api/hosts/{NODE01}/installing?token={token}");
    assert_eq!(rack.curl("POST", &segment_url(&installing)).0, 200);
    // A standby honours no build token, on its own address or any.
    let standby = (first + 1) % 3;
    let (code, body) = rack.appliances[standby].get(&ks);
    assert_eq!(code, 503, "a standby's kickstart: {body}");
    // Nor any TFTP request: the active one says it has no such file, the
    // standby says nothing at all.
    let (active_own, standby_own) = (&rack.appliances[first].own, &rack.appliances[standby].own);
    assert_eq!(rack.tftp(SEGMENT_ADDRESS, "no-such-file"), Some(68));
    assert_eq!(rack.tftp(active_own, "no-such-file"), Some(68));
    assert_eq!(rack.tftp(standby_own, "no-such-file"), Some(28));

    // The client knows the segment's IPv6 address at the first's MAC.
    let v6 = format!("http://[{SEGMENT_ADDRESS6}]:8080/status");
    assert_eq!(rack.curl("GET", &v6).0, 200);
    assert_eq!(
        rack.neighbour(SEGMENT_ADDRESS6),
        Some(rack.appliances[first].mac())
    );

    // The active dies just as the install ends: the report finds no one
    // at the segment's address, and tries again until someone is.
    let killed = Instant::now();
    rack.appliances[first].signal("KILL");
    rack.appliances[first].daemon.take().map(|mut d| d.wait());
    let reporting = rack.run_on_client(&report);
    let second = rack.active();
    eprintln!("takeover after SIGKILL: {:?}", killed.elapsed());
    assert_ne!(second, first);
    assert!(rack.appliances[second].holds_address());
    // Told by an unsolicited neighbour advertisement, the client moved
    // the IPv6 address to the new active appliance's MAC without asking.
    let moved = eventually(Duration::from_secs(5), || {
        (rack.neighbour(SEGMENT_ADDRESS6) == Some(rack.appliances[second].mac())).then_some(())
    });
    assert!(moved.is_some(), "{:?}", rack.neighbour(SEGMENT_ADDRESS6));
    assert_eq!(rack.curl("GET", &v6).0, 200);
    // The dead one's keeper removed the address: its kernel answers no
    // ARP for it.
    assert!(!rack.appliances[first].holds_address(), "{}", rack.logs());
    rack.only_answer_is_from(
        second,
        &Rack::answers(rack.discover(Duration::from_secs(2))),
    );
    // The install ends on the new active appliance, same address, same
    // token.
    let reported = reporting.wait_with_output().expect("the report");
    assert!(
        reported.status.success(),
        "the kickstart's report gave up: {}\n{}",
        String::from_utf8_lossy(&reported.stderr),
        rack.logs()
    );
    assert!(
        rack.appliances[second]
            .log_text()
            .contains(&format!("path=\"/api/hosts/{NODE01}/installed\"")),
        "the report landed on the new active appliance"
    );
    // The build token ended with the install, there too.
    assert_eq!(rack.curl("GET", &segment_url(&ks)).0, 403);
    let (_, hosts) = rack.appliances[second].get("/api/hosts");
    let hosts: serde_json::Value = serde_json::from_str(&hosts).expect("hosts JSON");
    let node = hosts
        .as_array()
        .and_then(|h| h.iter().find(|h| h["mac"] == NODE01))
        .expect("node01");
    assert_eq!(node["phase"], "installed", "{node}");

    // Ctrl-C, as at a terminal (SIGINT to `serve` and its address
    // keeper): the lease and the address are given up, the third takes
    // over at once.
    rack.appliances[second].signal_group("INT");
    rack.appliances[second].daemon.take().map(|mut d| d.wait());
    let third = rack.active();
    assert!(third != first && third != second);
    assert!(
        !rack.appliances[second].holds_address(),
        "given up at shutdown"
    );
    assert!(
        rack.appliances[second]
            .log_text()
            .contains("gave up the segment"),
        "{}",
        rack.appliances[second].log_text()
    );
    // The keeper outlived Ctrl-C and let go when told: it was not found
    // gone and replaced.
    assert!(
        !rack.appliances[second]
            .log_text()
            .contains("the segment address keeper is gone"),
        "{}",
        rack.appliances[second].log_text()
    );
    rack.only_answer_is_from(third, &Rack::answers(rack.discover(Duration::from_secs(2))));
}

/// An active appliance frozen (SIGSTOP) past its lease is replaced; woken,
/// it answers nothing — not even the DISCOVER that waited in its socket
/// while it was frozen — and gives up the segment's address.
#[test]
#[ignore = "peers: postgresql, network namespaces (root); run by .ci/run"]
fn a_frozen_active_appliance_answers_nothing_when_it_wakes() {
    let mut rack = Rack::up("sb2", 2);
    rack.start_all();
    let frozen = rack.active();
    let other = 1 - frozen;
    rack.appliances[frozen].signal("STOP");
    assert_eq!(rack.active(), other, "the standby takes over");
    assert!(rack.appliances[other].holds_address());
    // Its keeper let the address go while it was frozen: no two on the
    // segment answer ARP for it.
    assert!(!rack.appliances[frozen].holds_address(), "{}", rack.logs());
    // A DISCOVER while it is frozen waits in its socket; it wakes while
    // the client still listens.
    let listening = rack.discover(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    rack.appliances[frozen].signal("CONT");
    rack.only_answer_is_from(other, &Rack::answers(listening));
    let released = eventually(WAIT, || {
        (!rack.appliances[frozen].holds_address()).then_some(())
    });
    assert!(released.is_some(), "{}", rack.logs());
    assert_eq!(rack.appliances[frozen].role().as_deref(), Some("standby"));
    let log = rack.appliances[frozen].log_text();
    assert!(
        log.contains("could not renew the segment's lease in time")
            || log.contains("lost the segment to another appliance"),
        "{log}"
    );
    rack.only_answer_is_from(other, &Rack::answers(rack.discover(Duration::from_secs(2))));
}

/// The active appliance cut off from the database (its segment link
/// still up, DISCOVERs still reaching it) stops answering and gives up
/// the address before the standby takes over; back on the database, it
/// stands by.
#[test]
#[ignore = "peers: postgresql, network namespaces (root); run by .ci/run"]
fn an_active_appliance_cut_off_from_the_database_stops_answering() {
    let mut rack = Rack::up("sb3", 2);
    rack.start_all();
    let cut = rack.active();
    let other = 1 - cut;
    let at = Instant::now();
    rack.database_link(cut, false);
    let released = eventually(WAIT, || {
        (!rack.appliances[cut].holds_address()).then_some(())
    });
    assert!(released.is_some(), "{}", rack.logs());
    assert_eq!(rack.active(), other, "the standby takes over");
    eprintln!("takeover after the cut: {:?}", at.elapsed());
    let log = rack.appliances[cut].log_text();
    assert!(
        log.contains("could not renew the segment's lease in time"),
        "{log}"
    );
    rack.only_answer_is_from(other, &Rack::answers(rack.discover(Duration::from_secs(2))));
    rack.database_link(cut, true);
    let standing_by = eventually(WAIT, || {
        (rack.appliances[cut].role().as_deref() == Some("standby")).then_some(())
    });
    assert!(standing_by.is_some(), "{}", rack.logs());
    rack.only_answer_is_from(other, &Rack::answers(rack.discover(Duration::from_secs(2))));
}

/// The segment's PostgreSQL primary dies mid-install and its streaming
/// replica is promoted: while no primary takes the lease, no appliance
/// answers (none can renew; none may answer alone); the install's
/// `installed` report is tried again meanwhile, the election goes on in
/// the promoted database, and the report lands and is written there.
#[test]
#[ignore = "peers: postgresql (streaming replication), network namespaces (root); run by .ci/run"]
fn a_segment_follows_its_database_to_the_promoted_replica() {
    let mut rack = Rack::up_replicated("sb4", 2);
    rack.start_all();
    rack.active();
    rack.request_lease();
    let (code, script) = rack.curl("GET", &segment_url(&format!("/boot/{NODE01}.ipxe")));
    assert_eq!(code, 200, "{script}");
    let token = token_in(&script).expect("a build token");
    let (code, kickstart) = rack.curl("GET", &segment_url(&format!("/ks/{NODE01}?token={token}")));
    assert_eq!(code, 200, "{kickstart}");
    let report = kickstart
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/installed?token="))
        .and_then(|l| l.strip_suffix(" || true"))
        .expect("the installed report")
        .to_owned();

    rack.pg.as_ref().expect("the primary").ctl("kill");
    let silent = eventually(WAIT, || {
        Rack::answers(rack.discover(Duration::from_secs(1)))
            .is_empty()
            .then_some(())
    });
    assert!(
        silent.is_some(),
        "still answered with no primary:\n{}",
        rack.logs()
    );
    let reporting = rack.run_on_client(&report);
    std::thread::sleep(Duration::from_secs(3));
    let replica = rack.replica.as_ref().expect("the replica");
    replica.ctl("promote");

    let active = rack.active();
    rack.only_answer_is_from(
        active,
        &Rack::answers(rack.discover(Duration::from_secs(2))),
    );
    let reported = reporting.wait_with_output().expect("the report");
    assert!(
        reported.status.success(),
        "the report gave up: {}\n{}",
        String::from_utf8_lossy(&reported.stderr),
        rack.logs()
    );
    let written = eventually(WAIT, || {
        let phase = replica.psql(&format!("SELECT phase FROM hosts WHERE mac = '{NODE01}'"));
        (phase.trim() == "installed").then_some(())
    });
    assert!(
        written.is_some(),
        "not installed in the promoted database:\n{}",
        rack.logs()
    );
    let term = replica.psql("SELECT term FROM segments WHERE segment = 'rack-a'");
    assert!(
        term.trim().parse::<u64>().is_ok_and(|t| t >= 2),
        "a new tenure: {term}"
    );
}
