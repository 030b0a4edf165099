//! The real mirror bed (`tests/beds/mirror/start.sh`): nginx serving an EL
//! tree (repodata, `.treeinfo` with checksums, packages, images) from files
//! a test may rewrite, as a mirror's files are rewritten on a respin. Each
//! test starts its own under `/tmp` (squid comes along and stays unused);
//! `KS_KEEP_BED=1` keeps it for a post-mortem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The install tree under the mirror's base URL.
pub const OS: &str = "9-stream/BaseOS/x86_64/os";

pub struct Bed {
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/beds/mirror")
}

impl Bed {
    pub fn start(name: &str) -> Bed {
        let dir = PathBuf::from(format!("/tmp/ks-repo-{name}-{}", std::process::id()));
        if dir.exists() {
            let _ = Command::new(scripts().join("stop.sh")).arg(&dir).status();
            std::fs::remove_dir_all(&dir).expect("remove a stale bed");
        }
        std::fs::create_dir_all(&dir).expect("bed dir");
        let out = Command::new(scripts().join("start.sh"))
            .arg(&dir)
            .output()
            .expect("run tests/beds/mirror/start.sh");
        let mut bed = Bed {
            dir,
            env: HashMap::new(),
        };
        assert!(
            out.status.success(),
            "start.sh failed (missing peer? tests/setup-peers installs them): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(bed.dir.join("env")).expect("start.sh writes env");
        bed.env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        bed
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the bed's env"))
    }

    /// The mirror's base URL, `http://127.0.0.1:P/centos/`.
    pub fn url(&self) -> String {
        self.var("KS_MIRROR_HTTP_URL").to_string()
    }

    /// The mirror's copy of `rel` in the install tree.
    pub fn file(&self, rel: &str) -> PathBuf {
        Path::new(self.var("KS_MIRROR_ROOT")).join(OS).join(rel)
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.file(rel)).expect("mirror file")
    }

    /// GETs nginx answered for `rel` of the install tree.
    pub fn gets(&self, rel: &str) -> usize {
        let uri = format!("/centos/{OS}/{rel}");
        std::fs::read_to_string(self.var("KS_NGINX_ACCESS_LOG"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                f.get(1) == Some(&"GET") && f.get(2) == Some(&uri.as_str())
            })
            .count()
    }

    /// Replaces `rel` by rename, as rsync does, dated `age` ago.
    pub fn replace(&self, rel: &str, body: &[u8], age: Duration) {
        let path = self.file(rel);
        let tmp = path.with_extension("ks-new");
        std::fs::write(&tmp, body).expect("write");
        date_back(&tmp, age);
        std::fs::rename(&tmp, &path).expect("rename");
    }

    /// `.treeinfo` with the checksum of `rel` set to `sum`, by rename,
    /// dated `age` ago.
    pub fn set_treeinfo_sum(&self, rel: &str, sum: &str, age: Duration) {
        let text = String::from_utf8(self.read(".treeinfo")).expect("text");
        let out: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{rel} = sha256:")) {
                    format!("{rel} = sha256:{sum}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        self.replace(".treeinfo", out.as_bytes(), age);
    }
}

/// Sets a file's mtime `age` ago: what nginx sends as its Last-Modified.
pub fn date_back(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open to date")
        .set_modified(SystemTime::now() - age)
        .expect("set mtime");
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("stop.sh"))
            .arg(&self.dir)
            .status();
        if std::env::var_os("KS_KEEP_BED").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
