//! Whether the shared database can be reached, as the connections find
//! it: the writer's commits, every connect and reconnect, the listener's
//! channel. While it cannot, the daemon answers from memory and keeps the
//! changes for later; this is what says so on the status page and in
//! `/metrics`, and in the log once when it goes and once when it is back
//! (not once per retry: a failover of a minute would be hundreds of lines).

use std::sync::Mutex;
use std::time::SystemTime;

use crate::StateError;

/// What the status page and `/metrics` show of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatabaseState {
    /// The last connection or commit worked.
    pub up: bool,
    /// Since when it is up, or down.
    pub since: SystemTime,
    /// The last failure, kept after it is back (what went wrong last).
    pub last_error: Option<String>,
    /// The server the connections reached last (`address:port`, as the
    /// server sees itself; a Unix socket has none): after a failover, the
    /// standby that was promoted.
    pub primary: Option<String>,
}

/// The longest wait between two tries to reach the database, the writer's
/// and the listener's: a standby promoted is written to within about this
/// long, and a try costs one refused connect per host.
pub(crate) const RETRY_AT_MOST: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Health(Mutex<DatabaseState>);

impl Health {
    pub(crate) fn new() -> Health {
        Health(Mutex::new(DatabaseState {
            up: true,
            since: SystemTime::now(),
            last_error: None,
            primary: None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DatabaseState> {
        // Each update is whole; a panic cannot leave it torn.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self) -> DatabaseState {
        self.lock().clone()
    }

    /// A connection to a server that takes writes was made, to `primary`
    /// when it is known.
    pub(crate) fn reached(&self, primary: Option<String>) {
        let mut s = self.lock();
        if !s.up {
            let down = s.since.elapsed().unwrap_or_default();
            tracing::info!(
                down_for = ?std::time::Duration::from_secs(down.as_secs()),
                primary = primary.as_deref().unwrap_or("-"),
                "the state database is reachable again: writing what was kept in memory"
            );
            s.up = true;
            s.since = SystemTime::now();
        }
        if primary.is_some() {
            s.primary = primary;
        }
    }

    /// A connection or a commit failed for a reason that may pass (the
    /// server down, unreachable, read-only).
    pub(crate) fn lost(&self, e: &StateError) {
        let mut s = self.lock();
        if s.up {
            tracing::warn!(
                error = %e,
                "the state database is unreachable: answering from memory, keeping changes until it is back"
            );
            s.up = false;
            s.since = SystemTime::now();
        }
        s.last_error = Some(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Down at the first failure and up at the first success, each once:
    /// the retries between change neither the state nor its time.
    #[test]
    fn an_outage_is_one_change_down_and_one_up() {
        let health = Health::new();
        let refused = || StateError::Write("connection refused".into());
        health.reached(Some("10.0.0.1:5432".into()));
        health.lost(&refused());
        let down = health.get();
        assert!(!down.up);
        health.lost(&StateError::Write("connection timed out".into()));
        let still = health.get();
        assert_eq!(still.since, down.since);
        assert_eq!(
            still.last_error.as_deref(),
            Some("the change is kept in memory but could not be written yet: connection timed out")
        );
        assert_eq!(still.primary.as_deref(), Some("10.0.0.1:5432"));
        health.reached(Some("10.0.0.2:5432".into()));
        let up = health.get();
        assert!(up.up && up.since >= down.since);
        assert_eq!(up.primary.as_deref(), Some("10.0.0.2:5432"));
        // A commit that says nothing of the server keeps what is known.
        health.reached(None);
        assert_eq!(health.get(), up);
    }
}
