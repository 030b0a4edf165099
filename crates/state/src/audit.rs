//! The operator's audit log: who asked for an operator action (the
//! address and an id of the token presented, never the token), what it
//! was, when, and how it ended — refusals included, so a stranger trying
//! tokens shows here too. Written through the writer like events and
//! bounded by [`AUDIT_KEPT`]: the newest rows stay.

use std::net::IpAddr;
use std::time::SystemTime;

/// Audit rows kept (the newest); the writer's periodic prune drops older.
pub const AUDIT_KEPT: u64 = 10_000;

/// One operator action as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAction {
    /// The address the request came from.
    pub peer: IpAddr,
    /// An id of the token presented (see the daemon's `token_id`), so two
    /// actions can be told apart by who held which token; `None` when no
    /// token came.
    pub token_id: Option<String>,
    /// `rearm`, `adopt`, `cache-warm`, …
    pub action: String,
    /// What it acted on: a MAC, an OS, a mirror path; empty for none.
    pub target: String,
    /// `None`: done; otherwise why it was refused or failed.
    pub error: Option<String>,
}

/// An [`OperatorAction`] as stored: when, and on which appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increases with every row, across appliances sharing a database.
    pub id: i64,
    pub time: SystemTime,
    pub appliance: String,
    pub action: OperatorAction,
}
