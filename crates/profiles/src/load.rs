//! Reading the profile set: the directory walk and every file read. What
//! is read is handed, parsed but unchecked, to [`crate::validate`], which
//! does no I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, LoadError};
use crate::model::Snapshot;
use crate::validate::{self, Inputs};
use crate::wire;

/// Loads the appliance config at `config`, every profile document in its
/// directory (recursively), the templates and the CA bundle it points at,
/// and validates them into one snapshot. Every problem is reported at
/// once, each with its file and, where it has one, line and column.
pub fn load(config: &Path) -> Result<Snapshot, LoadError> {
    let mut diags = Vec::new();
    let base = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let appliance = parse::<wire::ApplianceFile>(config, &mut diags);

    let mut docs = Vec::new();
    let mut files = vec![config.to_path_buf()];
    for path in yaml_files(&base, config, &mut diags) {
        if let Some(doc) = parse::<wire::ProfileFile>(&path, &mut diags) {
            docs.push((path.clone(), doc));
        }
        files.push(path);
    }

    let Some(appliance) = appliance else {
        return Err(LoadError(diags));
    };
    let paths = validate::paths(&base, &appliance);
    let templates = read_templates(&paths.templates_dir, &mut diags);
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
    validate::validate(Inputs {
        diags,
        config: config.to_path_buf(),
        base,
        appliance,
        docs,
        files,
        templates,
        ca_pem,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::whole_file(path, format!("cannot read: {e}")));
            return None;
        }
    };
    match serde_saphyr::from_str::<T>(&text) {
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
