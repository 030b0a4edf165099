//! Kickstand's profile store: the appliance config (`kickstand.yaml`), OS
//! definitions, groups and host profiles, read from YAML and validated into
//! one immutable [`Snapshot`].
//!
//! A tour: [`wire`] holds the serde types, exactly as the files are written
//! (unknown keys and duplicate keys are errors); [`load`] walks the
//! directory and reads every file; `validate` (pure, no I/O) checks every
//! value and reference — addresses, mirror URLs, names, a host's OS and
//! groups, a MAC and a hostname that appear once, templates that exist —
//! merges defaults → groups → host, and reports every problem as a
//! [`Diagnostic`] with file, line and column. [`model`] holds the validated
//! types the rest of the daemon reads, mirror URLs, the office proxy and
//! the PostgreSQL connection (read as libpq reads one, `conninfo`) among
//! them, so no other crate parses the config again. [`urls`] is the
//! one place Kickstand's URLs are built and read back; [`text`] the one
//! rule for showing and keeping what strangers write.
//!
//! This crate reads the files it is pointed at and nothing else: no sockets,
//! no watching, no rendering. The one look beyond them is `netif`: the
//! machine's interface addresses and the default route's, read only when
//! `server.address` is `auto`. The daemon decides when to load, builds its
//! generation from the snapshot and keeps the last good one when a load
//! fails.

mod conninfo;
mod diag;
mod load;
mod mac;
pub mod model;
mod netif;
pub mod parse;
pub mod text;
pub mod urls;
mod validate;
mod wire;

pub use diag::{Diagnostic, LoadError};
pub use load::{Draft, SecretError, load, load_appliance, load_with, read_secret};
pub use mac::{BadMac, Mac};
pub use model::Snapshot;
pub use validate::{DEFAULT_TFTP_ROOT, GRUB_TEMPLATE};
