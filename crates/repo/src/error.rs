//! The one error type of the crate and the one place it becomes an HTTP status.

use http::StatusCode;

use crate::path::PathError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown mirror {0:?}")]
    UnknownMirror(String),
    #[error("refused path: {0}")]
    Path(#[from] PathError),
    #[error("method {0} not allowed")]
    Method(http::Method),
    #[error("absolute-form or CONNECT request refused: not an open proxy")]
    NotAProxy,
    #[error("invalid repo config: {0}")]
    Config(String),
    #[error("upstream {url} answered {status}")]
    UpstreamStatus { url: String, status: StatusCode },
    #[error("upstream {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("office proxy demands authentication (407)")]
    ProxyAuth,
    #[error("redirect to {0} refused: not a configured mirror host")]
    RedirectRefused(String),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("upstream timed out {0}")]
    Timeout(&'static str),
    #[error("upstream body: {0}")]
    UpstreamBody(String),
    #[error("upstream sent {got} bytes of {expected}")]
    Incomplete { expected: u64, got: u64 },
    #[error("sha256 mismatch for {0}")]
    Checksum(String),
    #[error("cache storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("cache disk is full")]
    DiskFull,
    #[error("repodata: {0}")]
    Repodata(String),
    /// A new `repomd.xml` names metadata the mirror could not serve (a
    /// mirror sync in progress): it is not committed.
    #[error("{repomd} names {record}, which could not be fetched: {reason}")]
    Generation {
        repomd: String,
        record: String,
        reason: String,
    },
    /// The error of a download this request had joined.
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// Whether trying the mirror's next base URL could help.
    pub(crate) fn fails_over(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout(_) => true,
            Error::UpstreamStatus { status, .. } => status.is_server_error(),
            Error::Shared(e) => e.fails_over(),
            _ => false,
        }
    }
}

/// The status sent to the client for an error.
pub fn status_for(err: &Error) -> StatusCode {
    match err {
        Error::Shared(e) => status_for(e),
        Error::UnknownMirror(_) => StatusCode::NOT_FOUND,
        Error::Path(_) | Error::NotAProxy => StatusCode::BAD_REQUEST,
        Error::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
        Error::UpstreamStatus { status, .. } => match *status {
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::FORBIDDEN => *status,
            _ => StatusCode::BAD_GATEWAY,
        },
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Connect { .. }
        | Error::ProxyAuth
        | Error::RedirectRefused(_)
        | Error::TooManyRedirects(_)
        | Error::UpstreamBody(_)
        | Error::Incomplete { .. }
        | Error::Checksum(_)
        | Error::Repodata(_)
        | Error::Generation { .. } => StatusCode::BAD_GATEWAY,
        Error::Io(_) | Error::DiskFull | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
