//! The operator token: what every state-changing action (rearm, adopt,
//! cache warm and verify) must present as `Authorization: Bearer …`. It is
//! made at first start, 32 random bytes in a file only the daemon's user
//! can read (mode 0600); the CLI reads the same file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

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
