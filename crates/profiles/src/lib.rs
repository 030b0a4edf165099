//! Kickstand's profile store: the appliance config (`kickstand.yaml`), OS
//! definitions, groups and host profiles, read from YAML and validated into
//! one immutable [`Snapshot`].
//!
//! A tour: [`wire`] holds the serde types, exactly as the files are written
//! (unknown keys and duplicate keys are errors); `load` checks every
//! reference (a host's OS and groups exist, a MAC and a hostname appear
//! once, templates exist, addresses parse), merges defaults → groups → host,
//! and reports every problem as a [`Diagnostic`] with file, line and column.
//! [`model`] holds the validated types the rest of the daemon reads.
//!
//! This crate reads the files it is pointed at and nothing else: no sockets,
//! no watching, no rendering. The daemon decides when to load and keeps the
//! last good snapshot when a load fails.

mod diag;
mod load;
mod mac;
pub mod model;
mod wire;

pub use diag::{Diagnostic, LoadError};
pub use load::{DEFAULT_TFTP_ROOT, load, parse_size};
pub use mac::{BadMac, Mac};
pub use model::Snapshot;
