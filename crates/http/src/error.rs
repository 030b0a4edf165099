//! The one error type of the HTTP front and the one place it becomes a
//! response: a status and a line an operator (or an installer's log) can
//! read.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use kickstand_profiles::Mac;

/// Response bodies: small ones are buffered, repo files and loaders stream;
/// an `Err` mid-stream aborts the connection so a client never mistakes a
/// broken transfer for a whole file.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A MAC with no host profile asked for something only a host gets.
    #[error(
        "no host profile for {0}: Kickstand never sends an automated install to an unknown machine"
    )]
    NoProfile(Mac),
    #[error("{0}")]
    NotFound(String),
    #[error("not a MAC address (expected 52:54:00:12:34:56)")]
    BadMac,
    #[error("{0}")]
    BadRequest(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("Kickstand is not an open proxy: only /repo/<mirror>/<path> of configured mirrors")]
    NotAProxy,
    #[error("{0}")]
    Forbidden(String),
    /// The request is fine but the host's state does not allow it now.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// Something the daemon called on the host's behalf failed (its BMC).
    #[error("{0}")]
    BadGateway(String),
    /// One address asked for more than its share of the heavy views.
    #[error(
        "too many requests from {0} for the status views; the status page polls every 2 s, a scraper every few"
    )]
    TooMany(std::net::IpAddr),
    /// A bug or a broken disk, not bad input: said plainly rather than
    /// serving half an answer.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoProfile(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadMac | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAProxy | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response for this error. A server error carries its cause
    /// along (see [`Cause`]).
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut resp = text(status, format!("{self}\n"));
        if status.is_server_error() {
            resp.extensions_mut().insert(Cause(self.to_string()));
        }
        if let ApiError::TooMany(_) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Why a request got a server error, riding on its response to the one
/// line the front logs per request: the body went to the client, and the
/// journal would otherwise show only `status=500`.
#[derive(Debug, Clone)]
pub(crate) struct Cause(pub(crate) String);

pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, full(body), "text/plain; charset=utf-8")
}

pub(crate) fn with_type(
    status: StatusCode,
    body: Body,
    content_type: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
