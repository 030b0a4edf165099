//! Shared by the test binaries: a server on 127.0.0.1:0 over a temporary
//! root, plus files with known content.
#![allow(dead_code, unreachable_pub)]

pub mod relay;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kickstand_tftp::{Config, Content, Growing, OpenError, Source};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A root directory plus supplied files: `generated/hello.ipxe`, and
/// `growing/whole.bin` and `growing/fails.bin`, which arrive while they are
/// sent (the second stops halfway with an error).
#[derive(Debug)]
pub struct TestSource {
    pub root: tempfile::TempDir,
    /// Every request's end, as the server reported it.
    pub reports: std::sync::Mutex<Vec<kickstand_tftp::TransferReport>>,
}

pub const GENERATED: &str = "#!ipxe\necho generated\n";

impl Source for TestSource {
    fn open<'a>(
        &'a self,
        path: &'a str,
        _peer: std::net::SocketAddr,
    ) -> kickstand_tftp::BoxFuture<'a, Result<Content, OpenError>> {
        let found = match path {
            "generated/hello.ipxe" => Content::Bytes(Bytes::from_static(GENERATED.as_bytes())),
            "growing/whole.bin" => Content::Growing(Box::new(Trickle::new(None))),
            "growing/fails.bin" => {
                Content::Growing(Box::new(Trickle::new(Some(TRICKLE_LEN as u64 / 2))))
            }
            _ => Content::UnderRoot(self.root.path().to_owned()),
        };
        Box::pin(std::future::ready(Ok(found)))
    }

    fn transfer_ended(&self, _peer: std::net::SocketAddr, report: &kickstand_tftp::TransferReport) {
        self.reports.lock().expect("reports").push(report.clone());
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub source: Arc<TestSource>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        Server::start_on("127.0.0.1:0", config).await
    }

    /// A server listening on `bind` (a wildcard address, say).
    pub async fn start_on(bind: &str, config: Config) -> Server {
        let root = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(TestSource {
            root,
            reports: std::sync::Mutex::default(),
        });
        let socket = tokio::net::UdpSocket::bind(bind).await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kickstand_tftp::serve_with(
            socket,
            source.clone(),
            config,
            shutdown.clone(),
        ));
        Server {
            addr,
            source,
            shutdown,
            task,
        }
    }

    pub fn write(&self, name: &str, content: &[u8]) {
        let path = self.source.root.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, content).expect("write");
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("serve");
    }
}

/// Deterministic pseudo-random bytes (xorshift), so content errors show.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Length and seed of the growing files' content.
pub const TRICKLE_LEN: usize = 300_000;
pub const TRICKLE_SEED: u64 = 41;

/// A file that arrives 64 KiB every 20 ms, like a download in progress:
/// reads past what has arrived wait for it.
#[derive(Debug)]
pub struct Trickle {
    data: Vec<u8>,
    started: std::time::Instant,
    fail_at: Option<u64>,
}

impl Trickle {
    fn new(fail_at: Option<u64>) -> Self {
        Self {
            data: content(TRICKLE_LEN, TRICKLE_SEED),
            started: std::time::Instant::now(),
            fail_at,
        }
    }

    fn arrived(&self) -> u64 {
        let steps = self.started.elapsed().as_millis() as u64 / 20 + 1;
        (steps * 65_536).min(TRICKLE_LEN as u64)
    }
}

impl Growing for Trickle {
    fn size(&self) -> u64 {
        TRICKLE_LEN as u64
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if let Some(fail_at) = self.fail_at
            && end > fail_at
        {
            return Err(std::io::Error::other("the download failed"));
        }
        while self.arrived() < end {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        buf.copy_from_slice(&self.data[offset as usize..end as usize]);
        Ok(())
    }
}
