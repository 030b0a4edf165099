//! Real TFTP clients against the server: tftp-hpa, atftp and curl. They are
//! peers CI installs; a missing one fails the test rather than skipping it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Server, content};
use kickstand_tftp::Config;
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs a client off the runtime, so the server keeps running meanwhile.
async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    })
    .await
    .expect("join")
}

fn assert_same(fetched: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(fetched).unwrap_or_else(|e| panic!("{what}: no output file: {e}"));
    assert_eq!(
        sha256(&got),
        sha256(want),
        "{what}: content differs ({} of {} bytes)",
        got.len(),
        want.len()
    );
}

async fn start_with(name: &str, file: &[u8]) -> (Server, tempfile::TempDir) {
    let server = Server::start(Config::default()).await;
    server.write(name, file);
    (server, tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn tftp_hpa_fetches_in_lockstep() {
    let file = content(3 * 1024 * 1024 + 17, 11);
    let (server, out) = start_with("boot/undionly.kpxe", &file).await;
    let dest = out.path().join("hpa");
    let port = server.addr.port().to_string();
    let output = run(
        "tftp",
        vec![
            "-m".into(),
            "octet".into(),
            "127.0.0.1".into(),
            port,
            "-c".into(),
            "get".into(),
            "/boot/undionly.kpxe".into(),
            dest.display().to_string(),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_same(&dest, &file, "tftp-hpa");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn tftp_hpa_netascii_round_trips() {
    // tftp-hpa asks for netascii unless given `-m octet`; its reverse
    // conversion must give back the exact bytes, CRs and all.
    let text = b"#!ipxe\r\nchain http://10.0.0.1/boot.ipxe\nbare\rcr\n".repeat(200);
    let (server, out) = start_with("boot.ipxe", &text).await;
    let dest = out.path().join("ascii");
    let output = run(
        "tftp",
        vec![
            "127.0.0.1".into(),
            server.addr.port().to_string(),
            "-c".into(),
            "get".into(),
            "boot.ipxe".into(),
            dest.display().to_string(),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_same(&dest, &text, "tftp-hpa netascii");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn atftp_fetches_with_blksize_and_windowsize() {
    let file = content(2 * 1024 * 1024 + 5, 12);
    let (server, out) = start_with("ipxe.efi", &file).await;
    for blksize in [512, 1468, 8192] {
        for windowsize in [1, 16, 64] {
            let what = format!("atftp blksize {blksize} windowsize {windowsize}");
            let dest = out.path().join(format!("a-{blksize}-{windowsize}"));
            let output = run(
                "atftp",
                vec![
                    "--option".into(),
                    format!("blksize {blksize}"),
                    "--option".into(),
                    format!("windowsize {windowsize}"),
                    "--option".into(),
                    "tsize 0".into(),
                    "-g".into(),
                    "-r".into(),
                    "ipxe.efi".into(),
                    "-l".into(),
                    dest.display().to_string(),
                    "127.0.0.1".into(),
                    server.addr.port().to_string(),
                ],
            )
            .await;
            assert!(output.status.success(), "{what}: {output:?}");
            assert_same(&dest, &file, &what);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn curl_fetches_with_blksize() {
    let file = content(2 * 1024 * 1024 + 9, 13);
    let (server, out) = start_with("snponly.efi", &file).await;
    for blksize in [512, 1468, 8192] {
        let dest = out.path().join(format!("c-{blksize}"));
        let output = run(
            "curl",
            vec![
                "-sS".into(),
                "--tftp-blksize".into(),
                blksize.to_string(),
                "-o".into(),
                dest.display().to_string(),
                format!("tftp://127.0.0.1:{}/snponly.efi", server.addr.port()),
            ],
        )
        .await;
        assert!(
            output.status.success(),
            "curl blksize {blksize}: {output:?}"
        );
        assert_same(&dest, &file, &format!("curl blksize {blksize}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn real_clients_cross_the_block_number_rollover() {
    // 70_000 blocks of 512 bytes: the wire number wraps once.
    let file = content(512 * 70_000 + 100, 14);
    let (server, out) = start_with("big.img", &file).await;
    let url = format!("tftp://127.0.0.1:{}/big.img", server.addr.port());
    let dest = out.path().join("curl");
    let output = run(
        "curl",
        vec![
            "-sS".into(),
            "--tftp-blksize".into(),
            "512".into(),
            "-o".into(),
            dest.display().to_string(),
            url,
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_same(&dest, &file, "curl across rollover");
    let dest = out.path().join("atftp");
    let output = run(
        "atftp",
        vec![
            "--option".into(),
            "blksize 512".into(),
            "--option".into(),
            "windowsize 16".into(),
            "-g".into(),
            "-r".into(),
            "big.img".into(),
            "-l".into(),
            dest.display().to_string(),
            "127.0.0.1".into(),
            server.addr.port().to_string(),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_same(&dest, &file, "atftp across rollover");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn real_clients_get_hostile_names_refused() {
    let (server, out) = start_with("ok.bin", b"ok").await;
    std::os::unix::fs::symlink("/etc/passwd", server.source.root.path().join("passwd"))
        .expect("symlink");
    let port = server.addr.port().to_string();
    // tftp-hpa sends names verbatim and exits 0 even on an ERROR.
    for name in [
        "../etc/passwd",
        "/../../../etc/passwd",
        "..\\..\\etc\\passwd",
        "passwd",
        "%2e%2e/etc/passwd",
    ] {
        let dest = out.path().join("hpa-out");
        let output = run(
            "tftp",
            vec![
                "-m".into(),
                "octet".into(),
                "127.0.0.1".into(),
                port.clone(),
                "-c".into(),
                "get".into(),
                name.into(),
                dest.display().to_string(),
            ],
        )
        .await;
        let said = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("Error code 2"), "{name}: {said}");
        assert!(
            std::fs::read(&dest).unwrap_or_default().is_empty(),
            "{name}: something was written"
        );
    }
    // curl decodes the percent escapes and, with --path-as-is, sends `..`.
    for path in ["..%2f..%2fetc%2fpasswd", "../../etc/passwd", "passwd"] {
        let output = run(
            "curl",
            vec![
                "-sS".into(),
                "--path-as-is".into(),
                "-o".into(),
                "/dev/null".into(),
                format!("tftp://127.0.0.1:{port}/{path}"),
            ],
        )
        .await;
        // 69: CURLE_TFTP_PERM, the server's "access violation".
        assert_eq!(output.status.code(), Some(69), "curl {path}: {output:?}");
    }
    let output = run(
        "atftp",
        vec![
            "-g".into(),
            "-r".into(),
            "../../etc/passwd".into(),
            "-l".into(),
            out.path().join("atftp-out").display().to_string(),
            "127.0.0.1".into(),
            port,
        ],
    )
    .await;
    assert!(!output.status.success(), "{output:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "peer: needs tftp-hpa, atftp and curl; run by .ci/run"]
async fn real_clients_get_write_requests_refused() {
    let (server, out) = start_with("ok.bin", b"ok").await;
    let local = out.path().join("upload.bin");
    std::fs::write(&local, b"payload").expect("write");
    let port = server.addr.port().to_string();
    let output = run(
        "tftp",
        vec![
            "-m".into(),
            "octet".into(),
            "127.0.0.1".into(),
            port.clone(),
            "-c".into(),
            "put".into(),
            local.display().to_string(),
            "upload.bin".into(),
        ],
    )
    .await;
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("Error code 2: read-only server"), "{said}");
    let output = run(
        "atftp",
        vec![
            "-p".into(),
            "-r".into(),
            "upload.bin".into(),
            "-l".into(),
            local.display().to_string(),
            "127.0.0.1".into(),
            port,
        ],
    )
    .await;
    assert!(!output.status.success(), "{output:?}");
    assert!(!server.source.root.path().join("upload.bin").exists());
    server.stop().await;
}
