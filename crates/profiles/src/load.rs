//! Reading the profile set: the directory walk and every file read. What
//! is read is handed, parsed but unchecked, to [`crate::validate`], which
//! does no I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, LoadError};
use crate::model::{Appliance, Snapshot};
use crate::netif::Interfaces;
use crate::parse::{BmcTlsSetting, ServerAddress, server_address};
use crate::validate::{self, Inputs};
use crate::wire;

/// Loads the appliance config at `config`, every profile document in its
/// directory (recursively), the templates and the CA bundle it points at,
/// and validates them into one snapshot. Every problem is reported at
/// once, each with its file and, where it has one, line and column.
pub fn load(config: &Path) -> Result<Snapshot, LoadError> {
    load_with(config, None)
}

/// A profile file not written yet, loaded as if it were: a file Kickstand
/// writes (an adopted machine's) is validated with the whole profile set,
/// by the same code as every load, before it exists.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    /// Where it will be written: a `.yaml` path under the config's directory.
    pub path: &'a Path,
    pub text: &'a str,
}

/// [`load`], with `draft` among the profile files (in place of the file
/// at its path, if there is one).
pub fn load_with(config: &Path, draft: Option<Draft<'_>>) -> Result<Snapshot, LoadError> {
    let mut diags = Vec::new();
    let base = base_dir(config);
    let appliance = parse::<wire::ApplianceFile>(config, None, &mut diags);

    let mut paths = yaml_files(&base, config, &mut diags);
    if let Some(d) = draft
        && !paths.iter().any(|p| p == d.path)
    {
        paths.push(d.path.to_path_buf());
        paths.sort();
    }
    let mut docs = Vec::new();
    let mut files = vec![config.to_path_buf()];
    for path in paths {
        let text = draft.filter(|d| d.path == path).map(|d| d.text);
        if let Some(doc) = parse::<wire::ProfileFile>(&path, text, &mut diags) {
            docs.push((path.clone(), doc));
        }
        files.push(path);
    }

    for (path, doc) in &docs {
        check_bmc_files(path, doc, &mut diags);
    }

    let Some(appliance) = appliance else {
        return Err(LoadError(diags));
    };
    let named = Named::read(config, &base, &appliance, &mut diags);
    let templates = read_templates(&named.templates_dir, &mut diags);
    validate::validate(Inputs {
        diags,
        config: config.to_path_buf(),
        base,
        appliance,
        docs,
        files,
        templates,
        ca_pem: named.ca_pem,
        state_ca_pem: named.state_ca_pem,
        interfaces: named.interfaces,
    })
}

/// The appliance config alone (`kickstand.yaml` and the files it names),
/// checked as a whole load checks it, without the profile documents: for
/// the commands that talk to the running daemon, which must keep working
/// while an edit to a profile file is broken (the daemon serves its last
/// good set meanwhile).
pub fn load_appliance(config: &Path) -> Result<Appliance, LoadError> {
    let mut diags = Vec::new();
    let base = base_dir(config);
    let Some(appliance) = parse::<wire::ApplianceFile>(config, None, &mut diags) else {
        return Err(LoadError(diags));
    };
    let named = Named::read(config, &base, &appliance, &mut diags);
    validate::appliance_alone(
        diags,
        config,
        &base,
        &appliance,
        named.ca_pem.as_deref(),
        named.state_ca_pem.as_deref(),
        named.interfaces.as_ref(),
    )
}

fn base_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What the appliance config names besides the profiles: the templates'
/// directory, the CA bundles (read), the state password file (checked
/// as the state store will read it, so `check` refuses what `serve`
/// would; the password itself is dropped at once), and for
/// `server.address: auto` the machine's interface addresses.
struct Named {
    templates_dir: PathBuf,
    ca_pem: Option<Vec<u8>>,
    state_ca_pem: Option<Vec<u8>>,
    interfaces: Option<Interfaces>,
}

impl Named {
    fn read(
        config: &Path,
        base: &Path,
        appliance: &wire::ApplianceFile,
        diags: &mut Vec<Diagnostic>,
    ) -> Named {
        let paths = validate::paths(base, appliance);
        let ca_pem = paths.mirror_ca_file.as_deref().and_then(|path| {
            std::fs::read(path)
                .map_err(|e| {
                    diags.push(Diagnostic::whole_file(
                        path,
                        format!("mirror_ca_file cannot be read: {e}"),
                    ))
                })
                .ok()
        });
        let state_ca_pem = paths.state_ca_file.as_ref().and_then(|ca| {
            std::fs::read(&ca.path)
                .map_err(|e| {
                    diags.push(Diagnostic::at(
                        config,
                        ca.at,
                        format!("{} {} cannot be read: {e}", ca.key, ca.path.display()),
                    ))
                })
                .ok()
        });
        if let Some(f) = &paths.password_file
            && let Err(e) = read_secret(&f.path)
        {
            diags.push(Diagnostic::at(config, f.at, format!("{} {e}", f.key)));
        }
        let address = &appliance.server.address;
        let auto = server_address(&address.value.0).map(|a| a.v4);
        let interfaces = match auto {
            Ok(Some(ServerAddress::Auto)) => match Interfaces::read() {
                Ok(interfaces) => Some(interfaces),
                Err(e) => {
                    let e = format!("server.address auto: {e}");
                    diags.push(Diagnostic::at(config, address.referenced, e));
                    None
                }
            },
            _ => None,
        };
        Named {
            templates_dir: paths.templates_dir,
            ca_pem,
            state_ca_pem,
            interfaces,
        }
    }
}

/// The files a profile's `bmc:` settings name, checked as the daemon will
/// read them: a password file only its owner may read (the password
/// itself dropped at once; it is read again at each use, so a new one
/// needs no reload), a CA file of PEM certificates. Paths are relative to
/// the profile file.
fn check_bmc_files(path: &Path, doc: &wire::ProfileFile, diags: &mut Vec<Diagnostic>) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let layers = doc
        .defaults
        .iter()
        .chain(doc.groups.values().filter_map(|g| g.value.profile.as_ref()))
        .chain(doc.hosts.values());
    for bmc in layers.filter_map(|l| l.value.bmc.as_ref()) {
        if let Some(f) = &bmc.password_file
            && let Err(e) = read_secret(&dir.join(&f.value))
        {
            diags.push(Diagnostic::at(
                path,
                f.referenced,
                format!("bmc.password_file {e}"),
            ));
        }
        if let Some(tls) = &bmc.tls
            && let BmcTlsSetting::CaFile(file) = crate::parse::bmc_tls(&tls.value)
        {
            let ca = dir.join(file);
            let checked = std::fs::read(&ca)
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|pem| crate::parse::pem_certificates(&pem));
            if let Err(e) = checked {
                let msg = format!(
                    "bmc.tls: {} (verify, insecure, a SHA-256 fingerprint or a CA file) {e}",
                    ca.display()
                );
                diags.push(Diagnostic::at(path, tls.referenced, msg));
            }
        }
    }
}

/// Why a secret file (a password) was not read. Each message names the
/// file and never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("{} cannot be read: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is readable by group or others (mode {mode:04o}); it holds a password: `chmod 600` it (or 640, owned by root, to share it with the daemon's group)",
        .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{} is empty", .path.display())]
    Empty { path: PathBuf },
}

/// The secret in `path`, trimmed (an editor's final newline is not part
/// of a password). A file that anyone but its owner may read is refused:
/// the secret is as good as published. As libpq allows for its key files,
/// a file root owns may also be read by its group (mode 0640): root
/// keeps the secret for the daemon's group — on the appliance, the
/// KICKSTAND partition is mounted so (root, group kickstand, 0640).
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let unreadable = |source| SecretError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    // The mode of the file opened, not of the path a moment before.
    let meta = file.metadata().map_err(unreadable)?;
    let mode = meta.mode() & 0o777;
    let shared_by_root = meta.uid() == 0 && mode & 0o037 == 0;
    if mode & 0o077 != 0 && !shared_by_root {
        return Err(SecretError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(secret.to_owned())
}

/// The document at `path`, or `text` in its place when given.
fn parse<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let read;
    let text = match text {
        Some(t) => t,
        None => match std::fs::read_to_string(path) {
            Ok(t) => {
                read = t;
                &read
            }
            Err(e) => {
                diags.push(Diagnostic::whole_file(path, format!("cannot read: {e}")));
                return None;
            }
        },
    };
    match serde_saphyr::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(Diagnostic::from_yaml(path, &e));
            None
        }
    }
}

/// Every regular file below `dir`, sorted so diagnostics come out in a
/// stable order. Hidden files and editor backups (`.x.swp`, `x~`) are
/// skipped: they are not part of what the operator meant.
fn files_below(dir: &Path, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                diags.push(Diagnostic::whole_file(
                    &d,
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Every `*.yaml`/`*.yml` below `dir` except the appliance config itself.
fn yaml_files(dir: &Path, config: &Path, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let config_canon = config.canonicalize().ok();
    files_below(dir, diags)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.canonicalize().ok() != config_canon)
        .collect()
}

/// Templates by name: their path below `dir`, `/`-separated.
fn read_templates(dir: &Path, diags: &mut Vec<Diagnostic>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in files_below(dir, diags) {
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        match std::fs::read_to_string(&path) {
            Ok(src) => {
                out.insert(name, src);
            }
            Err(e) => diags.push(Diagnostic::whole_file(
                &path,
                format!("cannot read template: {e}"),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    /// Mode 0640 is a secret root shares with the daemon's group (the
    /// appliance's KICKSTAND partition); owned by anyone else, its group
    /// may not read it.
    #[test]
    fn a_secret_root_shares_with_its_group_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bmc.pass");
        std::fs::write(&file, "s3cret\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        if std::fs::metadata(&file).expect("stat").uid() == 0 {
            assert_eq!(read_secret(&file).expect("root's, 0640"), "s3cret");
            std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
        }
        let refused = read_secret(&file).expect_err("not root's, 0640");
        assert!(
            matches!(refused, SecretError::Exposed { mode: 0o640, .. }),
            "{refused}"
        );
        assert!(!refused.to_string().contains("s3cret"));
    }
}
