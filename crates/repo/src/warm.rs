//! `kickstand cache warm` and `verify`. Warming a repository fetches every
//! record its `repomd.xml` lists (primary, filelists, other, comps,
//! modules, updateinfo, in whatever compression) and every package primary
//! lists; warming an install tree also fetches `.treeinfo` and every image
//! it names. Every file is checked against the checksum its metadata gives
//! before it is committed, so after a warm a rack installs with the mirror
//! unreachable. `warm_files` fetches a given list instead: what one install
//! actually pulled (`cache warm <os> --like <host>`).

use std::collections::HashSet;
use std::io::BufRead;

use tokio::task::JoinSet;

use crate::fetch::{self, Ensured};
use crate::known;
use crate::metadata::{self, Listed};
use crate::path::{RepoPath, normalize};
use crate::store::CachedFile;
use crate::{Error, Inner, RepoProxy};

/// What to warm: the repository whose `repodata/` is in `repo_path` inside
/// the mirror (e.g. `9-stream/BaseOS/x86_64/os/`), and with `tree` also
/// the install tree there (`.treeinfo` and its images).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WarmTarget {
    pub mirror: String,
    pub repo_path: String,
    pub tree: bool,
    /// Files downloaded at once; a few keep the office link busy
    /// without starving installers that are running meanwhile.
    pub concurrency: usize,
}

impl WarmTarget {
    /// A repository only.
    pub fn new(mirror: impl Into<String>, repo_path: impl Into<String>) -> Self {
        WarmTarget {
            mirror: mirror.into(),
            repo_path: repo_path.into(),
            tree: false,
            concurrency: 4,
        }
    }

    /// An install tree: its repository, `.treeinfo` and every image it names.
    pub fn tree(mirror: impl Into<String>, repo_path: impl Into<String>) -> Self {
        WarmTarget {
            tree: true,
            ..WarmTarget::new(mirror, repo_path)
        }
    }
}

/// A warm's progress, in the order it happens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WarmProgress {
    /// The files to fetch are known (sizes from the metadata; images have
    /// none, so `bytes` is a lower bound).
    Planned {
        files: usize,
        bytes: u64,
    },
    File(WarmEvent),
}

/// One file done, for a progress bar or line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct WarmEvent {
    pub done: usize,
    pub total: usize,
    /// Bytes of the files done so far (fetched or already cached), and of
    /// all the files planned, as far as the metadata tells.
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
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
    /// Files planned: metadata, images and packages.
    pub files: usize,
    /// Of those, packages.
    pub packages: usize,
    pub already_cached: usize,
    pub fetched: usize,
    pub fetched_bytes: u64,
    /// (path, error) for every file that could not be cached.
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

/// A reader over the body of a cached file.
fn body_reader(f: &CachedFile) -> Result<impl BufRead + Send + use<>, Error> {
    Ok(fetch::body_reader(&f.file, f.offset, f.len)?)
}

fn sha256_of(f: &CachedFile) -> Result<[u8; 32], Error> {
    Ok(fetch::body_sha256(f)?)
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

/// One file of a warm's plan.
#[derive(Debug, Clone)]
struct Planned {
    mirror: String,
    path: RepoPath,
    size: Option<u64>,
    package: bool,
}

/// Runs `plan` with `concurrency` downloads at once, reporting each file.
async fn execute(
    inner: &std::sync::Arc<Inner>,
    up: &std::sync::Arc<crate::Upstream>,
    plan: Vec<Planned>,
    concurrency: usize,
    progress: &mut (impl FnMut(WarmProgress) + Send),
) -> WarmReport {
    let total = plan.len();
    let bytes_total = plan.iter().filter_map(|p| p.size).sum();
    progress(WarmProgress::Planned {
        files: total,
        bytes: bytes_total,
    });
    let mut report = WarmReport {
        files: total,
        packages: plan.iter().filter(|p| p.package).count(),
        ..WarmReport::default()
    };
    let mut todo = plan.into_iter();
    let mut running = JoinSet::new();
    let (mut done, mut bytes_done) = (0, 0u64);
    loop {
        while running.len() < concurrency.max(1) {
            let Some(file) = todo.next() else { break };
            let (inner, up) = (inner.clone(), up.clone());
            running.spawn(async move {
                let mut outcome = fetch::ensure(&inner, &up, &file.mirror, &file.path).await;
                // Served but not committed (the mirror is still writing it):
                // an offline install could not have it.
                if outcome.is_ok()
                    && fetch::read_cached(&inner, &file.mirror, &file.path)
                        .await
                        .is_none()
                {
                    outcome = Err(Error::Repodata(
                        "fetched but not cached: the mirror changed it during the download or is still writing it; warm again".into(),
                    ));
                }
                (file, outcome)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        done += 1;
        let (file, outcome) = match joined {
            Ok(r) => r,
            Err(e) => {
                report.failed.push(("?".into(), format!("task: {e}")));
                continue;
            }
        };
        let name = format!("{}/{}", file.mirror, file.path);
        let outcome = match outcome {
            Ok(Ensured::Present) => {
                report.already_cached += 1;
                bytes_done += file.size.unwrap_or(0);
                WarmOutcome::AlreadyCached
            }
            Ok(Ensured::Fetched(bytes)) => {
                report.fetched += 1;
                report.fetched_bytes += bytes;
                bytes_done += file.size.unwrap_or(bytes);
                WarmOutcome::Fetched { bytes }
            }
            Err(e) => {
                report.failed.push((name.clone(), e.to_string()));
                bytes_done += file.size.unwrap_or(0);
                WarmOutcome::Failed(e.to_string())
            }
        };
        progress(WarmProgress::File(WarmEvent {
            done,
            total,
            bytes_done,
            bytes_total,
            path: name,
            outcome,
        }));
    }
    report
}

impl RepoProxy {
    /// Downloads a repository (and with [`WarmTarget::tree`] its install
    /// tree) into the cache, every file checked against its metadata's
    /// checksum before it is committed. `progress` sees the plan, then
    /// each file as it is done. Fails as a whole only when the metadata
    /// itself cannot be had.
    pub async fn warm(
        &self,
        target: &WarmTarget,
        mut progress: impl FnMut(WarmProgress) + Send,
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
        // Reading the plan fetches metadata (and a new `repomd.xml` brings
        // its records along): counted as fetched, not as found cached.
        let (files_before, bytes_before, _) = inner.store.usage();
        let mut plan = Vec::new();
        let planned = |path: RepoPath, size: Option<u64>, package: bool| Planned {
            mirror: mirror.to_string(),
            path,
            size,
            package,
        };
        if target.tree {
            let treeinfo = join(&prefix, ".treeinfo")?;
            let images = self.tree_images(mirror, &prefix, &treeinfo).await?;
            plan.push(planned(treeinfo, None, false));
            for image in images {
                plan.push(planned(join(&prefix, &image.href)?, image.size, false));
            }
        }
        let (records, packages) = self.repo_files(mirror, &prefix, true).await?;
        plan.push(planned(join(&prefix, "repodata/repomd.xml")?, None, false));
        for r in records {
            plan.push(planned(join(&prefix, &r.href)?, r.size, false));
        }
        for p in packages {
            plan.push(planned(join(&prefix, &p.href)?, p.size, true));
        }
        let (files_after, bytes_after, _) = inner.store.usage();
        let mut report = execute(inner, &up, plan, target.concurrency, &mut progress).await;
        let early = (files_after.saturating_sub(files_before) as usize).min(report.already_cached);
        report.already_cached -= early;
        report.fetched += early;
        report.fetched_bytes += bytes_after.saturating_sub(bytes_before);
        Ok(report)
    }

    /// Fetches exactly `files` (`(mirror, path)`, e.g. what one install
    /// pulled): metadata first, so every other file is checked against it.
    pub async fn warm_files(
        &self,
        files: &[(String, String)],
        concurrency: usize,
        mut progress: impl FnMut(WarmProgress) + Send,
    ) -> Result<WarmReport, Error> {
        let up = self.upstream();
        let mut plan = Vec::new();
        for (mirror, path) in files {
            if !up.has_mirror(mirror) {
                return Err(Error::UnknownMirror(mirror.clone()));
            }
            let path = normalize(path)?;
            let package = path.as_str().ends_with(".rpm");
            plan.push(Planned {
                mirror: mirror.clone(),
                path,
                size: None,
                package,
            });
        }
        // repomd.xml, then .treeinfo, then the rest: each teaches the cache
        // the checksums of what follows.
        let rank = |p: &Planned| {
            let s = p.path.as_str();
            if s.ends_with("repomd.xml") {
                0
            } else if s.ends_with(".treeinfo") {
                1
            } else if s.contains("repodata/") {
                2
            } else {
                3
            }
        };
        plan.sort_by_key(|p| rank(p));
        let (metadata, rest): (Vec<_>, Vec<_>) = plan.into_iter().partition(|p| rank(p) < 2);
        let mut report = execute(&self.inner, &up, metadata, 1, &mut |p| match p {
            WarmProgress::File(mut e) => {
                e.total = files.len();
                progress(WarmProgress::File(e))
            }
            WarmProgress::Planned { .. } => progress(WarmProgress::Planned {
                files: files.len(),
                bytes: 0,
            }),
        })
        .await;
        let offset = report.files;
        let rest_report = execute(&self.inner, &up, rest, concurrency, &mut |p| {
            if let WarmProgress::File(mut e) = p {
                e.done += offset;
                e.total = files.len();
                progress(WarmProgress::File(e));
            }
        })
        .await;
        report.files += rest_report.files;
        report.packages += rest_report.packages;
        report.already_cached += rest_report.already_cached;
        report.fetched += rest_report.fetched;
        report.fetched_bytes += rest_report.fetched_bytes;
        report.failed.extend(rest_report.failed);
        Ok(report)
    }

    /// The client's pulls: see [`RepoProxy::note_pull`].
    pub fn learned_install(&self, os: &str, client: &str) -> Result<Vec<(String, String)>, Error> {
        self.inner.pulls.load(os, client).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let known = self.inner.pulls.clients(os);
                Error::Repodata(if known.is_empty() {
                    format!("no install of {os} has completed through this appliance yet")
                } else {
                    format!(
                        "{client} has no completed install of {os}; these have: {}",
                        known.join(", ")
                    )
                })
            } else {
                Error::Io(e)
            }
        })
    }

    /// Notes that `client` (the daemon passes a host's MAC) was served
    /// `mirror/path` (the raw request path).
    pub fn note_pull(&self, client: &str, mirror: &str, path: &str) {
        if let Ok(path) = normalize(path) {
            self.inner.pulls.note(client, mirror, &path);
        }
    }

    /// `client` starts an install afresh: what it pulled before is dropped.
    pub fn forget_pulls(&self, client: &str) {
        self.inner.pulls.forget(client);
    }

    /// `client` finished installing `os`: what it pulled becomes the list
    /// `cache warm <os> --like <client>` fetches. Returns how many files.
    pub fn install_completed(&self, client: &str, os: &str) -> Result<usize, Error> {
        Ok(self.inner.pulls.complete(client, os)?)
    }

    /// `.treeinfo` of the tree at `prefix`, fetched (revalidated) and read:
    /// the images it names, whose checksums are then known.
    async fn tree_images(
        &self,
        mirror: &str,
        prefix: &str,
        treeinfo: &RepoPath,
    ) -> Result<Vec<Listed>, Error> {
        let inner = &self.inner;
        let up = self.upstream();
        fetch::ensure(inner, &up, mirror, treeinfo).await?;
        let f = fetch::read_cached(inner, mirror, treeinfo)
            .await
            .ok_or_else(|| Error::Repodata(format!("{mirror}/{treeinfo} could not be cached")))?;
        let files = blocking(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut body_reader(&f)?, &mut text)?;
            metadata::parse_treeinfo(&text)
        })
        .await?;
        inner.known.learn_treeinfo(mirror, treeinfo, prefix, &files);
        Ok(files)
    }

    /// The records and packages of the repo at `prefix`, from cached
    /// repodata; with `fetch`, missing or stale repodata is fetched first.
    async fn repo_files(
        &self,
        mirror: &str,
        prefix: &str,
        fetch: bool,
    ) -> Result<(Vec<Listed>, Vec<Listed>), Error> {
        let inner = &self.inner;
        let up = self.upstream();
        let repomd = join(prefix, "repodata/repomd.xml")?;
        if fetch {
            fetch::ensure(inner, &up, mirror, &repomd).await?;
        }
        let f = fetch::read_cached(inner, mirror, &repomd)
            .await
            .ok_or_else(|| Error::Repodata(format!("{mirror}/{repomd} is not cached")))?;
        let records = blocking(move || metadata::parse_repomd(body_reader(&f)?)).await?;
        inner.known.learn_repomd(mirror, prefix, &records);
        let Some(primary) = records.iter().find(|r| r.kind == "primary").cloned() else {
            return Err(Error::Repodata(
                "repomd.xml lists no primary metadata".into(),
            ));
        };
        let primary_path = join(prefix, &primary.file.href)?;
        if fetch {
            fetch::ensure(inner, &up, mirror, &primary_path).await?;
        }
        let f = fetch::read_cached(inner, mirror, &primary_path)
            .await
            .ok_or_else(|| Error::Repodata(format!("{mirror}/{primary_path} is not cached")))?;
        let href = primary.file.href.clone();
        let want = primary.file.sha256;
        let packages = blocking(move || {
            if let Some(want) = want
                && sha256_of(&f)? != want
            {
                return Err(Error::Checksum(href));
            }
            metadata::parse_primary(body_reader(&f)?, &href)
        })
        .await?;
        inner.known.learn_packages(mirror, prefix, &packages);
        Ok((records.into_iter().map(|r| r.file).collect(), packages))
    }

    /// Checks every cached file of every cached repository and tree — the
    /// repodata records, the packages, the images — against the sha256 its
    /// metadata gives; mismatching files are removed.
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        let inner = self.inner.clone();
        let hashes = inner.store.hashes();
        let store_inner = inner.clone();
        let keys: Vec<String> = blocking(move || {
            Ok(hashes
                .iter()
                .filter_map(|h| store_inner.store.open_entry(h))
                .map(|f| f.meta.key.clone())
                .collect())
        })
        .await?;
        let repos: Vec<(String, String)> = keys
            .iter()
            .filter_map(|k| {
                let rest = k.strip_suffix("repodata/repomd.xml")?;
                let (mirror, prefix) = rest.split_once('/')?;
                Some((mirror.to_string(), prefix.to_string()))
            })
            .collect();
        let trees: HashSet<(String, String)> = keys
            .iter()
            .filter_map(|k| {
                let rest = k.strip_suffix(".treeinfo")?;
                let (mirror, prefix) = rest.split_once('/')?;
                Some((mirror.to_string(), prefix.to_string()))
            })
            .collect();
        let mut report = VerifyReport {
            repos: repos.len(),
            ..VerifyReport::default()
        };
        let mut check: Vec<(String, RepoPath, [u8; 32])> = Vec::new();
        for (mirror, prefix) in repos {
            match self.repo_files(&mirror, &prefix, false).await {
                Ok((records, packages)) => {
                    for l in records.iter().chain(&packages) {
                        if let (Ok(path), Some(sha)) = (join(&prefix, &l.href), l.sha256) {
                            check.push((mirror.clone(), path, sha));
                        }
                    }
                }
                Err(e) => report
                    .skipped
                    .push((format!("{mirror}/{prefix}"), e.to_string())),
            }
        }
        for (mirror, prefix) in trees {
            let Ok(treeinfo) = join(&prefix, ".treeinfo") else {
                continue;
            };
            let Some(f) = fetch::read_cached(&inner, &mirror, &treeinfo).await else {
                continue;
            };
            let files = blocking(move || {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut body_reader(&f)?, &mut text)?;
                metadata::parse_treeinfo(&text)
            })
            .await;
            match files {
                Ok(files) => {
                    for l in files {
                        if let (Ok(path), Some(sha)) = (join(&prefix, &l.href), l.sha256) {
                            check.push((mirror.clone(), path, sha));
                        }
                    }
                }
                Err(e) => report
                    .skipped
                    .push((format!("{mirror}/{treeinfo}"), e.to_string())),
            }
        }
        for (mirror, path, want) in check {
            let hash = known::object_hash(&mirror, &path);
            let Some(f) = fetch::read_cached(&inner, &mirror, &path).await else {
                continue;
            };
            report.checked += 1;
            let got = blocking(move || sha256_of(&f)).await?;
            if got == want {
                report.ok += 1;
            } else {
                tracing::warn!(mirror, path = %path, "cached file fails sha256, removing");
                inner.store.remove(&hash);
                report.corrupt.push(format!("{mirror}/{path}"));
            }
        }
        Ok(report)
    }
}
