//! `kickstand cache warm` and `verify`: read a repo's `repomd.xml`, then its
//! primary metadata, and fetch (or check) every package it lists against the
//! sha256 the metadata gives.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use quick_xml::events::{BytesStart, Event};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::fetch::{self, Ensured};
use crate::path::{RepoPath, normalize};
use crate::store::CachedFile;
use crate::{Error, Inner, RepoProxy};

/// A repository to warm: `repo_path` is the directory holding `repodata/`
/// inside the mirror, e.g. `9-stream/BaseOS/x86_64/os/`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WarmTarget {
    pub mirror: String,
    pub repo_path: String,
    /// Packages downloaded at once; a few keep the office link busy
    /// without starving installers that are running meanwhile.
    pub concurrency: usize,
}

impl WarmTarget {
    pub fn new(mirror: impl Into<String>, repo_path: impl Into<String>) -> Self {
        WarmTarget {
            mirror: mirror.into(),
            repo_path: repo_path.into(),
            concurrency: 4,
        }
    }
}

/// One package done, for a progress line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct WarmEvent {
    pub done: usize,
    pub total: usize,
    pub path: String,
    pub outcome: WarmOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WarmOutcome {
    AlreadyCached,
    Fetched { bytes: u64 },
    Failed(String),
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct WarmReport {
    pub packages: usize,
    pub already_cached: usize,
    pub fetched: usize,
    pub fetched_bytes: u64,
    /// (path, error) for every package that could not be cached.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Repositories whose `repomd.xml` is cached.
    pub repos: usize,
    /// Cached files checked against a sha256 from repodata.
    pub checked: usize,
    pub ok: usize,
    /// Keys (`mirror/path`) whose bytes did not match; they were removed
    /// from the cache so the next request fetches them again.
    pub corrupt: Vec<String>,
    /// Repositories that could not be checked, and why.
    pub skipped: Vec<(String, String)>,
}

/// A file listed in repodata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) href: String,
    pub(crate) sha256: Option<[u8; 32]>,
}

fn parse_sha256(kind: &str, hex: &str) -> Option<[u8; 32]> {
    if kind != "sha256" || hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An attribute's value with its entities (`&amp;`, `&#43;`, …) resolved.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Walks `<…><checksum type=…>hex</checksum><location href=…/></…>` records
/// of element `record` (with an optional `type` filter) — the shape shared
/// by `repomd.xml` (`data`) and primary (`package`).
fn parse_records(
    input: impl BufRead,
    record: &[u8],
    type_filter: Option<&str>,
) -> Result<Vec<Listed>, Error> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut cur: Option<(Option<String>, Option<[u8; 32]>, bool)> = None; // (href, sha, wanted)
    let mut checksum_kind: Option<String> = None;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| Error::Repodata(format!("XML: {e}")))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = e.local_name();
                if name.as_ref() == record {
                    let wanted = type_filter.is_none_or(|t| attr(e, b"type").as_deref() == Some(t));
                    cur = Some((None, None, wanted));
                    if matches!(ev, Event::Empty(_)) {
                        cur = None;
                    }
                } else if let Some(c) = cur.as_mut() {
                    match name.as_ref() {
                        b"checksum" if matches!(ev, Event::Start(_)) => {
                            checksum_kind = attr(e, b"type")
                        }
                        // A package stored elsewhere (`xml:base`) is not ours to fetch.
                        b"location" if attr(e, b"xml:base").is_none() => c.0 = attr(e, b"href"),
                        _ => {}
                    }
                }
            }
            Event::Text(t) => {
                if let (Some(kind), Some(c)) = (checksum_kind.as_deref(), cur.as_mut()) {
                    c.1 = parse_sha256(kind, String::from_utf8_lossy(&t).trim());
                }
            }
            Event::End(ref e) => {
                let name = e.local_name();
                if name.as_ref() == b"checksum" {
                    checksum_kind = None;
                } else if name.as_ref() == record {
                    if let Some((Some(href), sha256, true)) = cur.take() {
                        out.push(Listed { href, sha256 });
                    }
                    cur = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

pub(crate) fn parse_repomd_primary(input: impl BufRead) -> Result<Listed, Error> {
    parse_records(input, b"data", Some("primary"))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Repodata("repomd.xml lists no primary metadata".into()))
}

pub(crate) fn parse_primary(input: impl BufRead, href: &str) -> Result<Vec<Listed>, Error> {
    if href.ends_with(".gz") {
        parse_records(
            BufReader::new(flate2::bufread::MultiGzDecoder::new(input)),
            b"package",
            None,
        )
    } else if href.ends_with(".zst") {
        // createrepo_c ≥ 1.0 (Fedora, newer EL) compresses with zstd.
        let zst = ruzstd::decoding::StreamingDecoder::new(input)
            .map_err(|e| Error::Repodata(format!("{href}: zstd: {e}")))?;
        parse_records(BufReader::new(zst), b"package", None)
    } else if href.ends_with(".xml") {
        parse_records(input, b"package", None)
    } else {
        Err(Error::Repodata(format!(
            "{href}: only gzip, zstd or plain primary metadata is supported"
        )))
    }
}

/// A reader over the body of a cached file.
fn body_reader(f: &CachedFile) -> Result<impl BufRead, Error> {
    let mut file = f.file.try_clone()?;
    file.seek(SeekFrom::Start(f.offset))?;
    Ok(BufReader::with_capacity(64 * 1024, file.take(f.len)))
}

fn sha256_of(f: &CachedFile) -> Result<[u8; 32], Error> {
    let mut r = body_reader(f)?;
    let mut h = Sha256::new();
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        h.update(chunk);
        let n = chunk.len();
        r.consume(n);
    }
    Ok(h.finalize().into())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Repodata(format!("task: {e}"))))
}

fn join(prefix: &str, href: &str) -> Result<RepoPath, Error> {
    Ok(normalize(&format!("{prefix}{href}"))?)
}

impl Inner {
    fn remember_sha(&self, hash: String, sha: Option<[u8; 32]>) {
        if let Some(sha) = sha {
            self.known_sha
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash, sha);
        }
    }
}

impl RepoProxy {
    /// Downloads every package of a repository into the cache, checking
    /// each against the sha256 from primary metadata before it is committed.
    /// `progress` is called once per package.
    pub async fn warm(
        &self,
        target: &WarmTarget,
        mut progress: impl FnMut(&WarmEvent) + Send,
    ) -> Result<WarmReport, Error> {
        let up = self.upstream();
        let mirror = target.mirror.as_str();
        if !up.has_mirror(mirror) {
            return Err(Error::UnknownMirror(mirror.to_string()));
        }
        let mut prefix = normalize(&target.repo_path)?.as_str().to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let inner = &self.inner;
        let packages = self.repo_packages(mirror, &prefix, true).await?;
        let total = packages.len();
        let mut report = WarmReport {
            packages: total,
            ..WarmReport::default()
        };
        let mut todo = packages.into_iter();
        let mut running = JoinSet::new();
        let mut done = 0;
        loop {
            while running.len() < target.concurrency.max(1) {
                let Some(pkg) = todo.next() else { break };
                let (inner, up, mirror, prefix) = (
                    inner.clone(),
                    up.clone(),
                    mirror.to_string(),
                    prefix.clone(),
                );
                running.spawn(async move {
                    let outcome = match join(&prefix, &pkg.href) {
                        Err(e) => Err(e),
                        Ok(path) => {
                            inner.remember_sha(fetch::object_hash(&mirror, &path), pkg.sha256);
                            fetch::ensure(&inner, &up, &mirror, &path).await
                        }
                    };
                    (format!("{prefix}{}", pkg.href), outcome)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            done += 1;
            let (path, outcome) = joined.map_err(|e| Error::Repodata(format!("task: {e}")))?;
            let outcome = match outcome {
                Ok(Ensured::Present) => {
                    report.already_cached += 1;
                    WarmOutcome::AlreadyCached
                }
                Ok(Ensured::Fetched(bytes)) => {
                    report.fetched += 1;
                    report.fetched_bytes += bytes;
                    WarmOutcome::Fetched { bytes }
                }
                Err(e) => {
                    report.failed.push((path.clone(), e.to_string()));
                    WarmOutcome::Failed(e.to_string())
                }
            };
            progress(&WarmEvent {
                done,
                total,
                path,
                outcome,
            });
        }
        Ok(report)
    }

    /// The packages of the repo at `prefix`, from cached repodata; with
    /// `fetch`, missing or stale repodata is fetched first.
    async fn repo_packages(
        &self,
        mirror: &str,
        prefix: &str,
        fetch: bool,
    ) -> Result<Vec<Listed>, Error> {
        let inner = &self.inner;
        let up = self.upstream();
        let repomd = join(prefix, "repodata/repomd.xml")?;
        if fetch {
            fetch::ensure(inner, &up, mirror, &repomd).await?;
        }
        let f = fetch::read_cached(inner, mirror, &repomd)
            .await
            .ok_or_else(|| Error::Repodata(format!("{mirror}/{repomd} is not cached")))?;
        let primary = blocking(move || parse_repomd_primary(body_reader(&f)?)).await?;
        let primary_path = join(prefix, &primary.href)?;
        let primary_hash = fetch::object_hash(mirror, &primary_path);
        inner.remember_sha(primary_hash, primary.sha256);
        if fetch {
            fetch::ensure(inner, &up, mirror, &primary_path).await?;
        }
        let f = fetch::read_cached(inner, mirror, &primary_path)
            .await
            .ok_or_else(|| Error::Repodata(format!("{mirror}/{primary_path} is not cached")))?;
        let href = primary.href.clone();
        blocking(move || {
            if let Some(want) = primary.sha256
                && sha256_of(&f)? != want
            {
                return Err(Error::Checksum(href));
            }
            parse_primary(body_reader(&f)?, &href)
        })
        .await
    }

    /// Checks every cached package of every cached repository against the
    /// sha256 in its repodata; mismatching files are removed.
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        let inner = self.inner.clone();
        let hashes = inner.store.hashes();
        let store_inner = inner.clone();
        let repos: Vec<(String, String)> = blocking(move || {
            Ok(hashes
                .iter()
                .filter_map(|h| store_inner.store.open_entry(h))
                .filter_map(|f| {
                    let key = f.meta.key;
                    let rest = key.strip_suffix("repodata/repomd.xml")?;
                    let (mirror, prefix) = rest.split_once('/')?;
                    Some((mirror.to_string(), prefix.to_string()))
                })
                .collect())
        })
        .await?;
        let mut report = VerifyReport {
            repos: repos.len(),
            ..VerifyReport::default()
        };
        for (mirror, prefix) in repos {
            let packages = match self.repo_packages(&mirror, &prefix, false).await {
                Ok(p) => p,
                Err(e) => {
                    report
                        .skipped
                        .push((format!("{mirror}/{prefix}"), e.to_string()));
                    continue;
                }
            };
            for pkg in packages {
                let (Ok(path), Some(want)) = (join(&prefix, &pkg.href), pkg.sha256) else {
                    continue;
                };
                let hash = fetch::object_hash(&mirror, &path);
                inner.remember_sha(hash.clone(), Some(want));
                let Some(f) = fetch::read_cached(&inner, &mirror, &path).await else {
                    continue;
                };
                report.checked += 1;
                let got = blocking(move || sha256_of(&f)).await?;
                if got == want {
                    report.ok += 1;
                } else {
                    tracing::warn!(mirror, path = %path, "cached package fails sha256, removing");
                    inner.store.remove(&hash);
                    report.corrupt.push(format!("{mirror}/{path}"));
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="filelists">
    <checksum type="sha256">1111111111111111111111111111111111111111111111111111111111111111</checksum>
    <location href="repodata/11-filelists.xml.gz"/>
  </data>
  <data type="primary">
    <checksum type="sha256">abababababababababababababababababababababababababababababababab</checksum>
    <open-checksum type="sha256">2222222222222222222222222222222222222222222222222222222222222222</open-checksum>
    <location href="repodata/ab-primary.xml.gz"/>
    <size>100</size>
  </data>
</repomd>"#;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm">
  <name>a</name>
  <checksum type="sha256" pkgid="YES">0101010101010101010101010101010101010101010101010101010101010101</checksum>
  <location href="Packages/a-1.0-1.x86_64.rpm"/>
  <format><rpm:license>MIT</rpm:license><file>/usr/bin/a</file></format>
</package>
<package type="rpm">
  <name>b</name>
  <checksum type="sha1" pkgid="YES">0101010101010101010101010101010101010101</checksum>
  <location href="Packages/libstdc&#43;&#x2B;-1&amp;2.rpm"/>
</package>
<package type="rpm">
  <name>c</name>
  <checksum type="sha256" pkgid="YES">0202020202020202020202020202020202020202020202020202020202020202</checksum>
  <location xml:base="http://elsewhere/" href="Packages/c.rpm"/>
</package>
</metadata>"#;

    #[test]
    fn repomd_primary() {
        let p = parse_repomd_primary(REPOMD.as_bytes()).expect("parses");
        assert_eq!(p.href, "repodata/ab-primary.xml.gz");
        assert_eq!(p.sha256, Some([0xab; 32]));
        assert!(parse_repomd_primary("<repomd/>".as_bytes()).is_err());
        assert!(parse_repomd_primary("<repomd><data".as_bytes()).is_err());
    }

    #[test]
    fn primary_packages() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, PRIMARY.as_bytes()).expect("gz");
        let gz = gz.finish().expect("gz");
        let pkgs = parse_primary(&gz[..], "repodata/x-primary.xml.gz").expect("parses");
        assert_eq!(
            pkgs,
            vec![
                Listed {
                    href: "Packages/a-1.0-1.x86_64.rpm".into(),
                    sha256: Some([1; 32])
                },
                Listed {
                    href: "Packages/libstdc++-1&2.rpm".into(),
                    sha256: None
                },
            ]
        );
        let zst = ruzstd::encoding::compress_to_vec(
            PRIMARY.as_bytes(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(
            parse_primary(&zst[..], "repodata/x-primary.xml.zst").expect("zstd"),
            pkgs
        );
        assert_eq!(
            parse_primary(PRIMARY.as_bytes(), "repodata/primary.xml").expect("plain"),
            pkgs
        );
        assert!(parse_primary(&b"not zstd"[..], "x.xml.zst").is_err());
        assert!(parse_primary(&b"not gzip"[..], "x.xml.gz").is_err());
        assert!(parse_primary(&b""[..], "x.xml.xz").is_err());
    }
}
