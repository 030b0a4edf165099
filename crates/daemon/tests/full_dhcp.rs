//! `dhcp.mode: full` against the real daemon: the lease made here is the
//! one address a host's build token goes to; a stranger's DECLINEs of
//! every address in the pool change nothing, the holder's DECLINE takes its
//! address out, and that survives a restart. (When the address comes back
//! is the lease table's clock: `crates/dhcp/tests/full_mode.rs`.)
//!
//! ```text
//!  ns ks-fd-0: ksbr0 10.79.0.1 ── kickstand serve, mode: full, pool .100-.102
//!  ns ks-fd-1: 10.79.0.50      ── DHCP clients (any MAC), a python script
//! ```

mod support;

use std::time::Duration;

use support::segment::Segment;
use support::{Bed, eventually};

const HOLDER: &str = "52:54:00:00:00:0a";
const NEWCOMER: &str = "52:54:00:00:00:0b";
const THIRD: &str = "52:54:00:00:00:0c";
const STRANGER: &str = "52:54:00:66:66:66";

/// Runs DHCP client steps from the client namespace, each `discover MAC`,
/// `request MAC ADDR` or `decline MAC ADDR`: what each was answered
/// (`offer ADDR`, `ack ADDR`, `nak`, `none`; a DECLINE has no answer:
/// `sent`).
fn client(net: &Segment, steps: &[&str]) -> Vec<String> {
    net.python(1, CLIENT, steps)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A DHCP client that speaks for any MAC: broadcast requests (broadcast
/// flag set), replies matched by transaction id.
const CLIENT: &str = r#"
import socket, struct, sys, time, random
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 68))
s.settimeout(0.2)
KIND = {"discover": 1, "request": 3, "decline": 4}
ANSWER = {2: "offer", 5: "ack", 6: "nak"}
def packet(xid, mac, kind, addr):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
        bytes(4), bytes(4), bytes(4), bytes(4), bytes.fromhex(mac.replace(":", "")), b"", b"")
    opts = bytes([53, 1, KIND[kind]])
    if addr:
        opts += bytes([50, 4]) + socket.inet_aton(addr)
    if kind != "discover":
        opts += bytes([54, 4]) + socket.inet_aton("10.79.0.1")
    return head + bytes.fromhex("63825363") + opts + bytes([255])
def answer(xid, deadline):
    while time.time() < deadline:
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        if len(data) < 244 or struct.unpack("!I", data[4:8])[0] != xid:
            continue
        opts, kind = data[240:], None
        while opts and opts[0] != 255:
            if opts[0] == 0:
                opts = opts[1:]
                continue
            if opts[0] == 53:
                kind = opts[2]
            opts = opts[2 + opts[1]:]
        yiaddr = socket.inet_ntoa(data[16:20])
        return ANSWER.get(kind, "?") + ("" if kind == 6 else " " + yiaddr)
    return "none"
args = sys.argv[1:]
while args:
    kind, mac = args[0], args[1]
    addr = args[2] if kind != "discover" else None
    args = args[3:] if addr else args[2:]
    xid = random.getrandbits(32)
    s.sendto(packet(xid, mac, kind, addr), ("255.255.255.255", 67))
    print("sent" if kind == "decline" else answer(xid, time.time() + 3), flush=True)
"#;

#[test]
#[ignore = "peer: needs root/netns, python3; run by .ci/run"]
fn only_the_holder_declines_its_address() {
    let bed = Bed::new();
    let mut net = Segment::up("fd", "10.79.0", &[Some(50)], &bed);
    net.configure(
        &bed,
        "full\n  pool:\n    start: 10.79.0.100\n    end: 10.79.0.102\n    prefix_len: 24\n    router: 10.79.0.1",
    );
    let leases = bed.path("var/state/leases.json");
    // The holder has a profile: the lease made here is where its build
    // token may go.
    bed.write(
        "profiles/hosts/holder.yaml",
        &format!("hosts:\n  \"{HOLDER}\":\n    hostname: holder10\n"),
    );
    net.serve(&bed.config());

    let bound = client(
        &net,
        &["discover", HOLDER, "request", HOLDER, "10.79.0.100"],
    );
    assert_eq!(
        bound,
        ["offer 10.79.0.100", "ack 10.79.0.100"],
        "{}",
        net.log()
    );
    // Asked from the client namespace's own address, not the leased one:
    // the script comes without the token, and says where it would go.
    let (code, script) = net.curl(1, &net.url(&format!("/boot/{HOLDER}.ipxe")), &[]);
    assert_eq!(code, 200, "{script}");
    assert!(!script.contains("token="), "{script}");
    assert!(
        script.contains("gave it 10.79.0.100, not this address"),
        "{script}"
    );

    // Eleven DECLINEs from a stranger: every address of the pool, the held
    // one among them. Then a newcomer still gets an address.
    let mut steps = Vec::new();
    for i in 0..11 {
        steps.extend([
            "decline",
            STRANGER,
            ["10.79.0.100", "10.79.0.101", "10.79.0.102"][i % 3],
        ]);
    }
    steps.extend(["discover", NEWCOMER, "request", NEWCOMER, "10.79.0.101"]);
    let answers = client(&net, &steps);
    assert_eq!(
        answers[11..],
        ["offer 10.79.0.101", "ack 10.79.0.101"],
        "{}",
        net.log()
    );
    let saved = std::fs::read_to_string(&leases).expect("lease file");
    let file: serde_json::Value = serde_json::from_str(&saved).expect("lease JSON");
    assert_eq!(file["declined"], serde_json::json!([]), "{saved}");

    // The holder's DECLINE takes its address out, with when.
    client(&net, &["decline", HOLDER, "10.79.0.100"]);
    let declined = eventually(Duration::from_secs(10), || {
        let saved = std::fs::read_to_string(&leases).ok()?;
        let file: serde_json::Value = serde_json::from_str(&saved).ok()?;
        let declined = file["declined"].as_array()?.clone();
        (!declined.is_empty()).then_some(declined)
    })
    .unwrap_or_else(|| panic!("the holder's DECLINE was not kept:\n{}", net.log()));
    assert_eq!(declined.len(), 1, "{declined:?}");
    assert_eq!(declined[0]["addr"], "10.79.0.100", "{declined:?}");
    assert!(declined[0]["at"].as_u64().is_some(), "{declined:?}");

    // After a restart the declined address is still out: the holder gets
    // the last free one, and a third machine finds the pool full.
    net.stop();
    net.serve(&bed.config());
    let answers = client(&net, &["discover", HOLDER, "discover", THIRD]);
    assert_eq!(answers, ["offer 10.79.0.102", "none"], "{}", net.log());
}
