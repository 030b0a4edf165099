//! Shared by the test binaries: a server on 127.0.0.1:0 over a temporary
//! root, plus files with known content.
#![allow(dead_code, unreachable_pub)]

pub mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use kickstand_tftp::{Config, Source};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A root directory plus one generated file, `generated/hello.ipxe`.
#[derive(Debug)]
pub struct TestSource {
    pub root: tempfile::TempDir,
}

pub const GENERATED: &str = "#!ipxe\necho generated\n";

impl Source for TestSource {
    fn root(&self) -> PathBuf {
        self.root.path().to_owned()
    }

    fn generated(&self, path: &str) -> Option<Bytes> {
        (path == "generated/hello.ipxe").then(|| Bytes::from_static(GENERATED.as_bytes()))
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
        let root = tempfile::tempdir().expect("tempdir");
        let source = Arc::new(TestSource { root });
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
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
