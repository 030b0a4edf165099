//! The status page: its HTML, stylesheet and script, built into the binary
//! so the page works on a rack with no internet and no files to install.
//! No build step: plain files of our own under `assets/`.

use http::{Response, StatusCode};

use crate::error::{self, ApiError, Body};

pub(crate) const PAGE: &str = include_str!("../assets/status.html");
const STYLE: &str = include_str!("../assets/status.css");
const SCRIPT: &str = include_str!("../assets/status.js");

pub(crate) fn asset(name: &str) -> Response<Body> {
    let (body, content_type) = match name {
        "status.css" => (STYLE, "text/css; charset=utf-8"),
        "status.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return ApiError::NotFound("not found".into()).into_response(),
    };
    error::with_type(StatusCode::OK, error::full(body), content_type)
}
