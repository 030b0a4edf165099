//! The server driven by a hand-rolled client over loopback UDP: the PXE
//! firmware patterns real clients do not reproduce on demand.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{GENERATED, Server, TRICKLE_LEN, TRICKLE_SEED, content};
use kickstand_tftp::Config;
use kickstand_tftp::packet::{
    self, Direction, ErrorCode, Mode, Packet, Request, encode_ack, encode_error,
};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(5);

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

/// What one download saw.
#[derive(Debug, Default)]
struct Download {
    data: Vec<u8>,
    oack: Vec<(String, String)>,
    tid: Option<SocketAddr>,
    /// DATA packets that were not the next expected block.
    out_of_order: usize,
    wires: Vec<u16>,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            server,
        }
    }

    async fn request(&self, direction: Direction, name: &[u8], options: &[(&str, &str)]) {
        let request = Request {
            direction,
            filename: name.to_vec(),
            mode: Mode::Octet,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.socket
            .send_to(&packet::encode_request(&request), self.server)
            .await
            .expect("send");
    }

    async fn recv_within(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 70_000];
        let (len, from) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        buf.truncate(len);
        Some((buf, from))
    }

    async fn recv(&self) -> (Vec<u8>, SocketAddr) {
        self.recv_within(WAIT)
            .await
            .expect("server answered in time")
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        self.socket.send_to(bytes, to).await.expect("send");
    }

    /// Reads `name` to the end, acking the end of every window.
    async fn download(&self, name: &str, options: &[(&str, &str)]) -> Download {
        self.request(Direction::Read, name.as_bytes(), options)
            .await;
        let mut got = Download::default();
        let (mut blksize, mut window) = (512usize, 1usize);
        let mut received = 0u64;
        let mut pending = None;
        if !options.is_empty() {
            let (buf, from) = self.recv().await;
            match Packet::parse(&buf).expect("parse") {
                Packet::Oack { options } => {
                    for (k, v) in &options {
                        match k.as_str() {
                            "blksize" => blksize = v.parse().expect("blksize"),
                            "windowsize" => window = v.parse().expect("windowsize"),
                            _ => {}
                        }
                    }
                    got.oack = options;
                    self.send(&encode_ack(0), from).await;
                }
                Packet::Data { .. } => pending = Some((buf, from)),
                other => panic!("expected OACK, got {other:?}"),
            }
            got.tid = Some(from);
        }
        loop {
            let (buf, from) = match pending.take() {
                Some(p) => p,
                None => self.recv().await,
            };
            if *got.tid.get_or_insert(from) != from {
                // An older transfer to this port; a real client answers
                // ERROR 5, which ends it.
                self.send(
                    &encode_error(ErrorCode::UnknownTransferId, "unknown TID"),
                    from,
                )
                .await;
                continue;
            }
            let Packet::Data { block, data } = Packet::parse(&buf).expect("parse") else {
                panic!("expected DATA, got {:?}", Packet::parse(&buf));
            };
            if block != (received + 1) as u16 {
                got.out_of_order += 1;
                continue;
            }
            received += 1;
            got.wires.push(block);
            got.data.extend_from_slice(data);
            let last = data.len() < blksize;
            if last || received.is_multiple_of(window as u64) {
                self.send(&encode_ack(block), from).await;
            }
            if last {
                return got;
            }
        }
    }
}

fn error_of(buf: &[u8]) -> (ErrorCode, String) {
    match Packet::parse(buf) {
        Ok(Packet::Error { code, message }) => (code, message),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn pxe_tsize_abort_then_retry_from_the_same_port() {
    let server = Server::start(Config::default()).await;
    let file = content(1_000_000, 1);
    server.write("undionly.kpxe", &file);
    let client = Client::new(server.addr).await;

    // Firmware asks for the size, learns it, aborts with ERROR 8 ...
    client
        .request(
            Direction::Read,
            b"undionly.kpxe",
            &[("tsize", "0"), ("blksize", "1456")],
        )
        .await;
    let (buf, first_tid) = client.recv().await;
    let Ok(Packet::Oack { options }) = Packet::parse(&buf) else {
        panic!("expected OACK")
    };
    assert!(
        options.contains(&("tsize".into(), file.len().to_string())),
        "{options:?}"
    );
    client
        .send(
            &encode_error(ErrorCode::OptionRefused, "tsize only"),
            first_tid,
        )
        .await;

    // ... then asks again from the same port; the second transfer must
    // start at once and never be disturbed by the first.
    let started = Instant::now();
    let got = client
        .download("undionly.kpxe", &[("blksize", "1456")])
        .await;
    let elapsed = started.elapsed();
    assert_ne!(got.tid, Some(first_tid), "a new transfer ID");
    assert_eq!(got.data, file);
    assert_eq!(got.out_of_order, 0, "no retransmission was needed");
    assert!(
        client
            .recv_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "the aborted transfer stays silent"
    );
    eprintln!("second transfer took {elapsed:?}");
    // The source heard of both ends: the abort (code 8, nothing sent) and
    // the whole file.
    let reports = server.source.reports.lock().expect("reports").clone();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0].file, "undionly.kpxe");
    assert_eq!(
        reports[0].outcome,
        kickstand_tftp::TransferOutcome::ClientAborted {
            code: 8,
            message: "tsize only".into()
        }
    );
    assert_eq!(reports[0].bytes, 0);
    assert_eq!(
        reports[1].outcome,
        kickstand_tftp::TransferOutcome::Complete
    );
    assert_eq!(reports[1].bytes, file.len() as u64);
    server.stop().await;
}

/// On a wildcard address, a transfer answers from the address its request
/// was sent to (127.0.0.2 here, beside the kernel's choice 127.0.0.1), as
/// firmware drops packets from any other server address; an IPv4 client
/// of a dual-stack socket included.
#[tokio::test]
async fn a_transfer_answers_from_the_address_its_request_came_to() {
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let server = Server::start_on(bind, Config::default()).await;
        let file = content(3000, 3);
        server.write("grubx64.efi", &file);
        let asked: SocketAddr = format!("127.0.0.2:{}", server.addr.port())
            .parse()
            .expect("address");
        let client = Client::new(asked).await;
        let got = client.download("grubx64.efi", &[("blksize", "1024")]).await;
        assert_eq!(got.data, file, "{bind}");
        let tid = got.tid.expect("a transfer ID");
        assert_eq!(
            tid.ip().to_canonical(),
            asked.ip(),
            "{bind}: answered from {tid}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_new_request_from_the_same_port_is_served_even_without_an_error() {
    let server = Server::start(Config::default()).await;
    let file = content(5000, 2);
    server.write("ipxe.efi", &file);
    let client = Client::new(server.addr).await;
    client
        .request(Direction::Read, b"ipxe.efi", &[("tsize", "0")])
        .await;
    let (_oack, first_tid) = client.recv().await;
    // The firmware forgets the first transfer entirely and asks again.
    let got = client.download("ipxe.efi", &[("blksize", "1024")]).await;
    assert_eq!(got.data, file);
    assert_ne!(got.tid, Some(first_tid));
    server.stop().await;
}

#[tokio::test]
async fn windowed_transfer_rolls_over_past_block_65535() {
    let server = Server::start(Config::default()).await;
    // 70_000 eight-byte blocks and a three-byte last one.
    let file = content(8 * 70_000 + 3, 3);
    server.write("big.bin", &file);
    let client = Client::new(server.addr).await;
    let got = client
        .download(
            "big.bin",
            &[("blksize", "8"), ("windowsize", "16"), ("tsize", "0")],
        )
        .await;
    assert_eq!(
        got.oack,
        vec![
            ("blksize".to_string(), "8".to_string()),
            ("windowsize".to_string(), "16".to_string()),
            ("tsize".to_string(), file.len().to_string()),
        ]
    );
    assert_eq!(got.data.len(), file.len());
    assert!(got.data == file, "content differs");
    assert_eq!(got.wires.len(), 70_001);
    assert_eq!(
        (got.wires[65_534], got.wires[65_535], got.wires[65_536]),
        (65_535, 0, 1)
    );
    server.stop().await;
}

#[tokio::test]
async fn lockstep_without_options_and_exact_multiple_of_blksize() {
    let server = Server::start(Config::default()).await;
    let file = content(512 * 4, 4);
    server.write("four.bin", &file);
    let client = Client::new(server.addr).await;
    let got = client.download("/four.bin", &[]).await;
    assert_eq!(got.data, file);
    assert_eq!(
        got.wires,
        vec![1, 2, 3, 4, 5],
        "an empty fifth block ends the transfer"
    );
    server.stop().await;
}

#[tokio::test]
async fn partial_window_ack_resumes_after_the_acked_block() {
    let server = Server::start(Config::default()).await;
    let file = content(512 * 8 + 10, 5);
    server.write("w.bin", &file);
    let client = Client::new(server.addr).await;
    client
        .request(Direction::Read, b"w.bin", &[("windowsize", "4")])
        .await;
    let (_, tid) = client.recv().await;
    client.send(&encode_ack(0), tid).await;
    let mut blocks = Vec::new();
    for _ in 0..4 {
        let (buf, _) = client.recv().await;
        let Ok(Packet::Data { block, .. }) = Packet::parse(&buf) else {
            panic!("DATA")
        };
        blocks.push(block);
    }
    assert_eq!(blocks, [1, 2, 3, 4]);
    // Pretend block 3 was lost: ack 2, the server goes back to 3.
    client.send(&encode_ack(2), tid).await;
    let mut resent = Vec::new();
    for _ in 0..4 {
        let (buf, _) = client.recv().await;
        let Ok(Packet::Data { block, .. }) = Packet::parse(&buf) else {
            panic!("DATA")
        };
        resent.push(block);
    }
    assert_eq!(resent, [3, 4, 5, 6]);
    // A duplicate of an old ACK gets no answer (no Sorcerer's Apprentice).
    client.send(&encode_ack(2), tid).await;
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    client
        .send(&encode_error(ErrorCode::NotDefined, "bye"), tid)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn unacknowledged_data_is_retransmitted_after_the_timeout() {
    let server = Server::start(Config::default()).await;
    server.write("r.bin", b"short");
    let client = Client::new(server.addr).await;
    client
        .request(Direction::Read, b"r.bin", &[("timeout", "1")])
        .await;
    let (oack, tid) = client.recv().await;
    assert!(matches!(Packet::parse(&oack), Ok(Packet::Oack { .. })));
    client.send(&encode_ack(0), tid).await;
    let (first, _) = client.recv().await;
    let started = Instant::now();
    let (again, from) = client.recv().await;
    assert_eq!(first, again);
    assert_eq!(from, tid);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "resent only after the timeout"
    );
    client.send(&encode_ack(1), tid).await;
    server.stop().await;
}

#[tokio::test]
async fn write_requests_are_refused() {
    let server = Server::start(Config::default()).await;
    let client = Client::new(server.addr).await;
    client.request(Direction::Write, b"upload.bin", &[]).await;
    let (buf, from) = client.recv().await;
    assert_ne!(from, server.addr, "answered from a transfer port");
    assert_eq!(error_of(&buf).0, ErrorCode::AccessViolation);
    assert!(!server.source.root.path().join("upload.bin").exists());
    server.stop().await;
}

#[tokio::test]
async fn hostile_and_missing_names_are_refused() {
    let server = Server::start(Config::default()).await;
    server.write("ok.bin", b"ok");
    std::fs::create_dir_all(server.source.root.path().join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("/etc/passwd", server.source.root.path().join("passwd"))
        .expect("symlink");
    std::os::unix::fs::symlink("/etc", server.source.root.path().join("sub/etc")).expect("symlink");
    let client = Client::new(server.addr).await;
    let hostile: &[&[u8]] = &[
        b"../etc/passwd",
        b"/../../etc/passwd",
        b"..\\..\\etc\\passwd",
        b"%2e%2e/etc/passwd",
        b"C:/Windows/win.ini",
        b"sub//../../etc/passwd",
        b"./ok.bin",
        b"passwd",
        b"sub/etc/passwd",
        b"\xc0\xae\xc0\xae/etc/passwd",
        &[b'a'; 300],
    ];
    for name in hostile {
        client.request(Direction::Read, name, &[]).await;
        let (buf, _) = client.recv().await;
        assert_eq!(
            error_of(&buf).0,
            ErrorCode::AccessViolation,
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    for name in [&b"missing.bin"[..], b"sub"] {
        client.request(Direction::Read, name, &[]).await;
        let (buf, _) = client.recv().await;
        assert_eq!(
            error_of(&buf).0,
            ErrorCode::FileNotFound,
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    // A request that does not even parse gets "illegal operation".
    client.send(b"\x00\x01no-mode\x00", server.addr).await;
    let (buf, _) = client.recv().await;
    assert_eq!(error_of(&buf).0, ErrorCode::IllegalOperation);
    // The server is still serving.
    assert_eq!(client.download("ok.bin", &[]).await.data, b"ok");
    server.stop().await;
}

#[tokio::test]
async fn generated_files_shadow_the_root() {
    let server = Server::start(Config::default()).await;
    server.write("generated/hello.ipxe", b"from disk");
    let client = Client::new(server.addr).await;
    let got = client
        .download("/generated/hello.ipxe", &[("tsize", "0")])
        .await;
    assert_eq!(got.data, GENERATED.as_bytes());
    assert_eq!(
        got.oack,
        vec![("tsize".to_string(), GENERATED.len().to_string())]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_file_still_arriving_is_sent_whole_with_its_final_size() {
    let server = Server::start(Config::default()).await;
    let client = Client::new(server.addr).await;
    let got = client
        .download("growing/whole.bin", &[("tsize", "0"), ("blksize", "1468")])
        .await;
    assert!(
        got.oack
            .contains(&("tsize".to_string(), TRICKLE_LEN.to_string())),
        "tsize is the final size: {:?}",
        got.oack
    );
    assert_eq!(got.data, content(TRICKLE_LEN, TRICKLE_SEED));
    server.stop().await;
}

#[tokio::test]
async fn a_file_that_fails_while_arriving_ends_in_an_error_never_a_short_file() {
    let server = Server::start(Config::default()).await;
    let client = Client::new(server.addr).await;
    client
        .request(
            Direction::Read,
            b"growing/fails.bin",
            &[("blksize", "1468")],
        )
        .await;
    let (_, tid) = client.recv().await;
    client.send(&encode_ack(0), tid).await;
    // Lockstep until the server stops sending DATA.
    let mut received = 0usize;
    let error = loop {
        let (buf, _) = client.recv().await;
        match Packet::parse(&buf).expect("parse") {
            Packet::Data { block, data } => {
                assert_eq!(data.len(), 1468, "a short block would end the file");
                received += data.len();
                client.send(&encode_ack(block), tid).await;
            }
            Packet::Error { code, message } => break (code, message),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(error.0, ErrorCode::NotDefined, "{error:?}");
    assert!(received < TRICKLE_LEN / 2 + 1468, "{received}");
    let reports = server.source.reports.lock().expect("reports").clone();
    assert!(
        matches!(
            reports.last().map(|r| &r.outcome),
            Some(kickstand_tftp::TransferOutcome::Failed { .. })
        ),
        "{reports:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn options_are_clamped_to_the_limits() {
    let mut config = Config::default();
    config.limits.max_blksize = 1024;
    config.limits.max_windowsize = 2;
    let server = Server::start(config).await;
    let file = content(10_000, 6);
    server.write("c.bin", &file);
    let client = Client::new(server.addr).await;
    let got = client
        .download(
            "c.bin",
            &[("blksize", "65464"), ("windowsize", "64"), ("bogus", "1")],
        )
        .await;
    assert_eq!(
        got.oack,
        vec![
            ("blksize".into(), "1024".into()),
            ("windowsize".into(), "2".into())
        ]
    );
    assert_eq!(got.data, file);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_transfers_with_an_error() {
    let server = Server::start(Config::default()).await;
    server.write("s.bin", &content(100_000, 7));
    let client = Client::new(server.addr).await;
    client.request(Direction::Read, b"s.bin", &[]).await;
    let (_first, _) = client.recv().await;
    // Never ack; shut the server down instead.
    server.shutdown.cancel();
    let (buf, _) = client.recv().await;
    let (code, message) = error_of(&buf);
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::NotDefined, "server shutting down")
    );
    tokio::time::timeout(WAIT, server.task)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("serve");
}

#[tokio::test]
async fn requests_beyond_max_transfers_are_dropped() {
    let mut config = Config::default();
    config.max_transfers = 1;
    let server = Server::start(config).await;
    server.write("m.bin", &content(4096, 8));
    let first = Client::new(server.addr).await;
    first.request(Direction::Read, b"m.bin", &[]).await;
    let (_, tid) = first.recv().await;
    let second = Client::new(server.addr).await;
    second.request(Direction::Read, b"m.bin", &[]).await;
    assert!(
        second
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "dropped while busy"
    );
    first
        .send(&encode_error(ErrorCode::NotDefined, "done"), tid)
        .await;
    // The slot frees as soon as the first transfer sees the ERROR.
    let mut served = None;
    for _ in 0..50 {
        second
            .request(Direction::Read, b"m.bin", &[("tsize", "0")])
            .await;
        if let Some((buf, _)) = second.recv_within(Duration::from_millis(100)).await {
            served = Some(buf);
            break;
        }
    }
    let buf = served.expect("served once the first transfer ended");
    assert!(matches!(Packet::parse(&buf), Ok(Packet::Oack { .. })));
    server.stop().await;
}

#[tokio::test]
async fn netascii_requests_get_converted_text() {
    let server = Server::start(Config::default()).await;
    server.write("pxelinux.cfg/default", b"default menu\r\nlabel local\n");
    let client = Client::new(server.addr).await;
    let request = Request {
        direction: Direction::Read,
        filename: b"pxelinux.cfg/default".to_vec(),
        mode: Mode::NetAscii,
        options: vec![("tsize".into(), "0".into())],
    };
    client
        .send(&packet::encode_request(&request), server.addr)
        .await;
    let (buf, tid) = client.recv().await;
    let want = packet::to_netascii(b"default menu\r\nlabel local\n");
    assert_eq!(
        Packet::parse(&buf),
        Ok(Packet::Oack {
            options: vec![("tsize".into(), want.len().to_string())]
        })
    );
    client.send(&encode_ack(0), tid).await;
    let (buf, _) = client.recv().await;
    assert_eq!(
        Packet::parse(&buf),
        Ok(Packet::Data {
            block: 1,
            data: &want[..]
        })
    );
    client.send(&encode_ack(1), tid).await;
    server.stop().await;
}
