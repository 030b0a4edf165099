//! Validation: parsed YAML in, a [`Snapshot`] or every problem out. Pure —
//! no file is read here ([`crate::load`] reads them) — so everything it
//! checks is checked the same way by `kickstand check` and by a reload.
//!
//! `appliance` checks `kickstand.yaml`; `oses` the OS definitions; `hosts`
//! merges defaults → groups → host and checks each host.

mod appliance;
mod hosts;
mod oses;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use crate::diag::{Diagnostic, LoadError};
use crate::model::{Appliance, Snapshot};
use crate::netif::Interfaces;
use crate::wire;

pub use appliance::DEFAULT_TFTP_ROOT;
pub(crate) use appliance::paths;
pub use oses::GRUB_TEMPLATE;

/// Everything [`crate::load`] read, parsed but unchecked.
pub(crate) struct Inputs {
    /// Problems found while reading and parsing; validation adds to them.
    pub(crate) diags: Vec<Diagnostic>,
    pub(crate) config: PathBuf,
    /// The config's directory: relative paths in it are relative to this.
    pub(crate) base: PathBuf,
    pub(crate) appliance: wire::ApplianceFile,
    pub(crate) docs: Vec<(PathBuf, wire::ProfileFile)>,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) templates: BTreeMap<String, String>,
    /// The bytes of `mirror_ca_file`, when it is set and could be read.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// The bytes of the PostgreSQL CA file, likewise.
    pub(crate) state_ca_pem: Option<Vec<u8>>,
    /// The machine's interface addresses, when `server.address` is `auto`
    /// and they could be read.
    pub(crate) interfaces: Option<Interfaces>,
}

pub(crate) fn validate(inputs: Inputs) -> Result<Snapshot, LoadError> {
    let mut cx = Cx {
        diags: inputs.diags,
    };
    let appliance = cx.appliance(
        &inputs.config,
        &inputs.base,
        &inputs.appliance,
        inputs.ca_pem.as_deref(),
        inputs.state_ca_pem.as_deref(),
        inputs.interfaces.as_ref(),
    );
    let Some(appliance) = appliance else {
        return Err(LoadError(cx.diags));
    };
    let set = cx.merge(&inputs.docs);
    let oses = cx.oses(&set, &appliance, &inputs.templates);
    let hosts = cx.hosts(&set, &oses);
    if cx.diags.is_empty() {
        Ok(Snapshot {
            appliance,
            oses,
            hosts,
            templates: inputs.templates,
            files: inputs.files,
        })
    } else {
        Err(LoadError(cx.diags))
    }
}

/// The appliance config alone, checked as [`validate`] checks it.
pub(crate) fn appliance_alone(
    diags: Vec<Diagnostic>,
    config: &Path,
    base: &Path,
    appliance: &wire::ApplianceFile,
    ca_pem: Option<&[u8]>,
    state_ca_pem: Option<&[u8]>,
    interfaces: Option<&Interfaces>,
) -> Result<Appliance, LoadError> {
    let mut cx = Cx { diags };
    let appliance = cx.appliance(config, base, appliance, ca_pem, state_ca_pem, interfaces);
    match appliance {
        Some(appliance) if cx.diags.is_empty() => Ok(appliance),
        _ => Err(LoadError(cx.diags)),
    }
}

/// The validation context: where problems are collected.
struct Cx {
    diags: Vec<Diagnostic>,
}

impl Cx {
    fn err(&mut self, file: &Path, at: Location, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(file, at, msg));
    }

    /// Runs a value parser from [`crate::parse`]; on failure reports
    /// `<key> <its message>` at `at`.
    fn check<T, E: std::fmt::Display>(
        &mut self,
        file: &Path,
        at: Location,
        key: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(file, at, format!("{key} {e}"));
                None
            }
        }
    }
}

/// `file:line:col`, for messages that point at a second place.
fn place(file: &Path, at: Location) -> String {
    format!("{}:{}:{}", file.display(), at.line(), at.column())
}

fn trim_slashes(p: &str) -> String {
    p.trim_matches('/').to_owned()
}
