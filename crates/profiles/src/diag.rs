use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem found while loading the profile set, pinned to a place in a
/// file so an operator can jump straight to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is the file as a whole (unreadable).
    pub position: Option<(u64, u64)>,
    pub message: String,
    /// The offending lines with a caret, as the YAML parser renders them.
    pub snippet: Option<String>,
}

impl Diagnostic {
    pub fn at(file: &Path, location: Location, message: impl Into<String>) -> Self {
        let position =
            (location != Location::UNKNOWN).then(|| (location.line(), location.column()));
        Diagnostic {
            file: file.to_owned(),
            position,
            message: message.into(),
            snippet: None,
        }
    }

    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            position: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// Turns a serde-saphyr error into a diagnostic: its location, its
    /// one-line message, and its snippet with `<input>` replaced by the path.
    pub(crate) fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> Self {
        let rendered = err.to_string();
        let mut lines = rendered.lines();
        let first = lines.next().unwrap_or_default();
        let message = first
            .strip_prefix("error: ")
            .map(strip_line_column_prefix)
            .unwrap_or(first)
            .to_owned();
        let snippet: Vec<String> = lines
            .map(|l| l.replace("<input>", &file.display().to_string()))
            .collect();
        Diagnostic {
            file: file.to_owned(),
            position: err.location().map(|l| (l.line(), l.column())),
            message,
            snippet: (!snippet.is_empty()).then(|| snippet.join("\n")),
        }
    }
}

/// serde-saphyr prefixes its messages with `line N column M: `; we print the
/// position in the `file:line:col` form every editor understands instead.
fn strip_line_column_prefix(msg: &str) -> &str {
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
    {
        let head = &rest[..idx];
        if head
            .split(" column ")
            .all(|n| n.chars().all(|c| c.is_ascii_digit()))
        {
            return &rest[idx + 2..];
        }
    }
    msg
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Everything wrong with a profile set. Loading reports all problems at once,
/// not just the first, so one `kickstand check` run fixes a whole edit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the profile set:\n{}", .0.len(), render_list(.0))]
pub struct LoadError(pub Vec<Diagnostic>);

fn render_list(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}
