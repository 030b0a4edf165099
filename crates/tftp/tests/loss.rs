//! Real clients through a lossy relay: every transfer completes, byte for
//! byte, when 1 % or 5 % of the datagrams are dropped in each direction.
//! Lost DATA and lost ACKs are both recovered by the server's retransmission
//! timer (and the client's), so these tests take tens of seconds.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::relay::{Loss, Relay};
use common::{Server, content};
use kickstand_tftp::Config;

/// One client run: program, arguments, where it writes, what it must get.
struct Fetch {
    what: String,
    program: &'static str,
    args: Vec<String>,
    dest: PathBuf,
    want: Vec<u8>,
}

fn atftp(relay: SocketAddr, name: &str, blksize: u16, window: u16, dest: &Path) -> Vec<String> {
    vec![
        "--option".into(),
        format!("blksize {blksize}"),
        "--option".into(),
        format!("windowsize {window}"),
        "--option".into(),
        "tsize 0".into(),
        "-g".into(),
        "-r".into(),
        name.into(),
        "-l".into(),
        dest.display().to_string(),
        relay.ip().to_string(),
        relay.port().to_string(),
    ]
}

async fn run(fetch: Fetch) -> (Fetch, Output) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(fetch.program)
            .args(&fetch.args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", fetch.program));
        (fetch, output)
    })
    .await
    .expect("join")
}

/// Lockstep and windowed atftp, curl and tftp-hpa at once through a relay
/// that drops `loss` of the datagrams each way.
async fn all_clients_complete_under(loss: f64, seed: u64) {
    let server = Server::start(Config::default()).await;
    // About 150 blocks per client: enough that every client meets losses.
    let loader = content(220 * 1024 + 3, seed);
    let small = content(75 * 1024 + 1, seed + 1);
    server.write("undionly.kpxe", &loader);
    server.write("pxelinux.0", &small);
    let relay = Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        server.addr,
        Loss {
            to_server: loss,
            to_client: loss,
        },
        seed,
    )
    .await
    .expect("relay");
    let out = tempfile::tempdir().expect("tempdir");
    let dest = |name: &str| out.path().join(name);
    let mut fetches = Vec::new();
    for (i, (blksize, window)) in [(1468, 1), (1468, 1), (512, 1), (1468, 8), (8192, 4)]
        .into_iter()
        .enumerate()
    {
        let d = dest(&format!("atftp-{i}"));
        fetches.push(Fetch {
            what: format!("atftp blksize {blksize} windowsize {window}"),
            program: "atftp",
            args: atftp(relay.addr, "undionly.kpxe", blksize, window, &d),
            dest: d,
            want: loader.clone(),
        });
    }
    let d = dest("curl");
    fetches.push(Fetch {
        what: "curl blksize 1468".into(),
        program: "curl",
        args: vec![
            "-sS".into(),
            // curl's own TFTP timeout is an hour; fail instead.
            "--max-time".into(),
            "180".into(),
            "--tftp-blksize".into(),
            "1468".into(),
            "-o".into(),
            d.display().to_string(),
            format!("tftp://{}/undionly.kpxe", relay.addr),
        ],
        dest: d,
        want: loader.clone(),
    });
    let d = dest("hpa");
    fetches.push(Fetch {
        what: "tftp-hpa".into(),
        program: "tftp",
        args: vec![
            "-m".into(),
            "octet".into(),
            relay.addr.ip().to_string(),
            relay.addr.port().to_string(),
            "-c".into(),
            "get".into(),
            "pxelinux.0".into(),
            d.display().to_string(),
        ],
        dest: d,
        want: small.clone(),
    });
    let runs: Vec<_> = fetches.into_iter().map(|f| tokio::spawn(run(f))).collect();
    for run in runs {
        let (fetch, output) = run.await.expect("join");
        assert!(
            output.status.success(),
            "{} at {loss} loss: {output:?}",
            fetch.what
        );
        let got = std::fs::read(&fetch.dest).expect("output file");
        assert!(
            got == fetch.want,
            "{} at {loss} loss: content differs ({} of {} bytes)",
            fetch.what,
            got.len(),
            fetch.want.len()
        );
    }
    let [up, up_dropped, down, down_dropped] = relay.counts.snapshot();
    // The relay really dropped datagrams both ways, at about the rate asked.
    for (sent, dropped, way) in [
        (up, up_dropped, "to server"),
        (down, down_dropped, "to client"),
    ] {
        assert!(dropped > 0, "nothing dropped {way}: {sent} datagrams");
        let rate = dropped as f64 / sent as f64;
        assert!(
            rate > loss / 3.0 && rate < loss * 3.0,
            "{way}: {dropped} of {sent} dropped, asked {loss}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn all_clients_complete_under_one_percent_loss_both_ways() {
    all_clients_complete_under(0.01, 101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn all_clients_complete_under_five_percent_loss_both_ways() {
    all_clients_complete_under(0.05, 105).await;
}
