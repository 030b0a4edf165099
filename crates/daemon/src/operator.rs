//! What only the operator may do, and how the daemon knows it is the
//! operator: re-arm a host, adopt a discovered machine (a new profile
//! file, put in force at once), warm and verify the cache. Every such
//! request comes over HTTPS and presents the operator token as
//! `Authorization: Bearer …`: made at first start, 32 random bytes in a
//! file only the daemon's user can read (mode 0600); the CLI reads the
//! same file. Plain HTTP takes no operator token at all: anyone on the
//! rack LAN could read it there. Every action asked for, done or refused,
//! goes to the audit log.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use kickstand_http::route::CacheOp;
use kickstand_http::{ApiError, Channel, OperatorAct, Reply};
use kickstand_profiles::Mac;
use kickstand_repo::RepoProxy;
use kickstand_state::{AuditEntry, OperatorAction, Outcome, Stamp, StateStore, Transition};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cache;
use crate::generation::Generation;
use crate::hosts;
use crate::live::{Live, NotAdded};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

/// The operator's side of the daemon.
#[derive(Debug)]
pub(crate) struct Operator {
    pub(crate) live: Arc<Live>,
    pub(crate) store: StateStore,
    pub(crate) repo: RepoProxy,
    /// Cache operations run on it: shutdown drains it.
    pub(crate) tasks: TaskTracker,
    pub(crate) token: String,
}

impl Operator {
    pub(crate) fn authorize(
        &self,
        generation: &Generation,
        presented: Option<&str>,
        channel: Channel,
    ) -> Result<(), ApiError> {
        if channel == Channel::Http {
            return Err(ApiError::Forbidden(format!(
                "operator actions need HTTPS: {} (plain HTTP is for installers; anyone on the LAN can read it); `kickstand` uses it for you",
                generation.https_url()
            )));
        }
        match presented {
            Some(p) if matches(&self.token, p) => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "this action needs the operator token (Authorization: Bearer …, from {}); `kickstand` reads it for you",
                generation.appliance().state.operator_token_file.display()
            ))),
        }
    }

    /// Puts an operator action in the audit log (and the log): queued, never
    /// waited for.
    pub(crate) fn record(&self, act: OperatorAct) {
        match &act.error {
            None => {
                info!(action = act.action, target = act.target, operator = %act.peer, token_id = act.token_id, "audit: done")
            }
            Some(error) => {
                warn!(action = act.action, target = act.target, from = %act.peer, token_id = act.token_id, error, "audit: refused or failed")
            }
        }
        let action = OperatorAction {
            peer: act.peer,
            token_id: act.token_id,
            action: act.action.to_owned(),
            target: act.target,
            error: act.error,
        };
        let _ = self.store.record_audit(action, SystemTime::now());
    }

    /// The newest rows of the audit log, newest first.
    pub(crate) async fn audit(&self) -> Result<Vec<AuditRow>, ApiError> {
        let entries = self
            .store
            .audit(AUDIT_SHOWN)
            .await
            .map_err(hosts::state_error)?;
        Ok(entries.into_iter().map(AuditRow::from).collect())
    }

    /// An operator sends a host back to the installer: a new build token
    /// is made at its next boot, the old one is dead. Answered once on
    /// disk.
    pub(crate) async fn rearm(
        &self,
        generation: &Generation,
        mac: Mac,
        peer: std::net::IpAddr,
    ) -> Result<Reply, ApiError> {
        let Some(host) = generation.snapshot().host(&mac) else {
            return Err(ApiError::NoProfile(mac));
        };
        let outcome = hosts::transition_durably(&self.store, mac, Transition::Rearm, None).await?;
        info!(%mac, hostname = host.hostname, operator = %peer, "re-armed: its next boot installs");
        let phase = match outcome {
            Outcome::Changed { to, .. } | Outcome::Unchanged(to) => to,
            Outcome::Refused { phase, .. } => phase,
        };
        self.repo.forget_pulls(&mac.to_string());
        Ok(Reply::Json(
            json!({"mac": mac.to_string(), "hostname": host.hostname, "phase": phase}),
        ))
    }

    /// Adopts a discovered machine: a host profile for it in a new file
    /// beside the operator's (never in one of theirs), in force at once so
    /// its next boot installs. The file is data the YAML serializer wrote
    /// from the operator's request — nothing the machine reported goes in
    /// it — and it is written only if the whole profile set loads with it,
    /// checked as every reload is: a refused adoption leaves nothing on
    /// disk.
    pub(crate) async fn adopt(&self, mac: Mac, body: &[u8]) -> Result<Reply, ApiError> {
        let req: AdoptRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "adopt wants {{\"hostname\": …, \"group\": …, \"os\": …}}: {e}"
            ))
        })?;
        let path = adopted_path(self.live.config(), mac);
        let text = adopted_profile(mac, &req).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (live, file) = (self.live.clone(), path.clone());
        tokio::task::spawn_blocking(move || live.add_profile(&file, &text))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| not_adopted(mac, &path, e))?;
        info!(%mac, hostname = req.hostname, file = %path.display(), "adopted a discovered machine");
        self.store.forget_discovered(mac).value();
        Ok(Reply::Json(
            json!({"mac": mac.to_string(), "hostname": req.hostname, "file": path.display().to_string()}),
        ))
    }

    /// Forgets one discovered machine (an operator does not want it), or
    /// every one; answered once on disk.
    pub(crate) async fn forget(&self, mac: Option<Mac>) -> Result<Reply, ApiError> {
        let forgotten = match mac {
            Some(mac) => {
                let listed = self
                    .store
                    .forget_discovered(mac)
                    .await
                    .map_err(hosts::state_error)?;
                if !listed {
                    return Err(ApiError::NotFound(format!(
                        "{mac} is not among the discovered machines"
                    )));
                }
                1
            }
            None => self
                .store
                .clear_discovered()
                .await
                .map_err(hosts::state_error)?,
        };
        info!(?mac, forgotten, "discovered machines forgotten");
        Ok(Reply::Json(json!({"forgotten": forgotten})))
    }

    pub(crate) fn cache(
        &self,
        generation: &Generation,
        op: CacheOp<'_>,
    ) -> Result<Reply, ApiError> {
        let repo = self.repo.clone();
        match op {
            CacheOp::Stats => serde_json::to_value(repo.stats())
                .map(Reply::Json)
                .map_err(|e| ApiError::Internal(e.to_string())),
            CacheOp::Verify => Ok(cache::lines(cache::verify(repo, &self.tasks))),
            CacheOp::Warm(target) => {
                let plan =
                    cache::warm_plan(generation.snapshot(), target).map_err(ApiError::NotFound)?;
                Ok(cache::lines(cache::warm(repo, plan, &self.tasks)))
            }
        }
    }
}

/// Audit rows an operator is shown (the store keeps more).
const AUDIT_SHOWN: u64 = 500;

/// One row of `GET /api/audit` and `kickstand audit`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AuditRow {
    pub(crate) time: String,
    pub(crate) appliance: String,
    pub(crate) peer: String,
    /// The first 8 hex digits of the SHA-256 of the token presented.
    pub(crate) token_id: Option<String>,
    pub(crate) action: String,
    pub(crate) target: String,
    /// `ok`, or the error the request got.
    pub(crate) result: String,
}

impl From<AuditEntry> for AuditRow {
    fn from(e: AuditEntry) -> AuditRow {
        AuditRow {
            time: Stamp(e.time).to_string(),
            appliance: e.appliance,
            peer: e.action.peer.to_string(),
            token_id: e.action.token_id,
            action: e.action.action,
            target: e.action.target,
            result: e.action.error.unwrap_or_else(|| "ok".to_owned()),
        }
    }
}

/// `profiles/adopted/52-54-00-…yaml`, beside the operator's files.
fn adopted_path(config: &Path, mac: Mac) -> PathBuf {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join("adopted")
        .join(format!("{}.yaml", mac.to_string().replace(':', "-")))
}

/// What an operator is told when an adoption wrote nothing.
fn not_adopted(mac: Mac, path: &Path, why: NotAdded) -> ApiError {
    match why {
        NotAdded::Invalid(e) => ApiError::Conflict(format!(
            "{mac} was not adopted and nothing was written: the profiles would not load with {}: {}",
            path.display(),
            e.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )),
        NotAdded::Exists => ApiError::Conflict(format!(
            "{} exists already; edit or remove it",
            path.display()
        )),
        NotAdded::Write(e) => ApiError::Internal(format!("writing {}: {e}", path.display())),
    }
}

/// An adopted machine's profile file: a short header of Kickstand's own
/// words, then the host as the YAML serializer writes it (every value
/// quoted and escaped as YAML needs, whatever it holds).
fn adopted_profile(mac: Mac, req: &AdoptRequest) -> Result<String, serde_saphyr::SerializeError> {
    let host = AdoptedHost {
        hostname: &req.hostname,
        groups: req.group.as_deref().into_iter().collect(),
        os: req.os.as_deref(),
    };
    let file = AdoptedFile {
        hosts: BTreeMap::from([(mac.to_string(), host)]),
    };
    Ok(format!(
        "# Adopted with `kickstand adopt` at {}.\n\
         # Kickstand never rewrites this file: edit it as any other profile.\n{}",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        serde_saphyr::to_string(&file)?
    ))
}

/// A profile file with one host, in the profile schema's shape.
#[derive(Debug, Serialize)]
struct AdoptedFile<'a> {
    hosts: BTreeMap<String, AdoptedHost<'a>>,
}

#[derive(Debug, Serialize)]
struct AdoptedHost<'a> {
    hostname: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    os: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdoptRequest {
    pub(crate) hostname: String,
    pub(crate) group: Option<String>,
    pub(crate) os: Option<String>,
}

/// The token in `path`, made first if the file does not exist.
pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => anyhow::bail!(
            "the operator token file {} is empty; remove it and restart to make a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| anyhow::anyhow!("no randomness for the operator token: {e}"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // create_new: two daemons starting at once cannot overwrite each
    // other's token; the loser reads the winner's.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return load_or_create(path),
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()?;
    tracing::info!(file = %path.display(), "created the operator token");
    Ok(token)
}

/// The token the CLI sends: read, never made (only the daemon makes it).
pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the operator token {} (it is made when `kickstand serve` first starts; run as the daemon's user or root)",
            path.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

/// Constant-time: how long a comparison takes says nothing of how much of
/// a guess was right.
pub(crate) fn matches(token: &str, presented: &str) -> bool {
    token.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever an operator types, the file says exactly that and no more.
    #[test]
    fn an_adopted_profile_is_serialized_data() -> anyhow::Result<()> {
        let mac: Mac = "52:54:00:10:00:01".parse()?;
        let hostile = "x\"\ngroups:\n  zz: {match: {mac: [\"*\"]}}\n# \u{1b}[31m";
        let req = AdoptRequest {
            hostname: hostile.into(),
            group: Some("compute".into()),
            os: None,
        };
        let text = adopted_profile(mac, &req)?;
        let read: serde_json::Value = serde_saphyr::from_str(&text)?;
        assert_eq!(
            read,
            json!({"hosts": {"52:54:00:10:00:01": {"hostname": hostile, "groups": ["compute"]}}}),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn made_once_private_and_stable() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state/operator.token");
        let first = load_or_create(&path)?;
        assert!(first.len() >= 43, "{first}");
        assert_eq!(load_or_create(&path)?, first, "read back, not made again");
        assert_eq!(read(&path)?, first);
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches(&first, &first));
        assert!(!matches(&first, ""));
        assert!(!matches(&first, &first[1..]));
        Ok(())
    }
}
