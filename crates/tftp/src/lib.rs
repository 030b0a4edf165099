//! Read-only TFTP for netboot: serves boot loaders from a root directory
//! and files the daemon generates, with the options PXE firmware and iPXE
//! use (blksize, tsize, timeout, windowsize) and block-number rollover;
//! write requests are refused.
//! It owns the protocol and path safety; it knows nothing of YAML, hosts or
//! boot policy, and never writes a file.
//!
//! Layout, from the wire inwards:
//! - [`packet`]: parse and encode datagrams.
//! - [`path`]: [`normalize`] a requested name; [`path::resolve`] it under
//!   the root without following symlinks out of it.
//! - [`protocol`]: option negotiation and the transfer state machine, a
//!   pure `event -> action` function with no sockets or clock.
//! - [`source`]: the [`Source`] trait the daemon implements.
//! - `server`: the tokio driver, [`serve`], which owns every socket.

mod metrics;
pub mod packet;
pub mod path;
pub mod protocol;
mod server;
pub mod source;

pub use metrics::Metrics;
pub use path::{PathError, normalize};
pub use protocol::Limits;
pub use server::{Config, OpenError, serve, serve_with};
pub use source::{BoxFuture, DirSource, Source, TransferOutcome, TransferReport};
