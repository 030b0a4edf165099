//! Pure decisions about a client's request: method, request target, Range.

use http::{HeaderMap, Method, header};

use crate::Error;

/// Whether the response carries a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Body,
    HeadersOnly,
}

/// Refuses anything but GET/HEAD in origin form: the repo route is never a
/// forward proxy, whatever the front routes to it.
pub(crate) fn check_request<B>(req: &http::Request<B>) -> Result<Want, Error> {
    if req.method() == Method::CONNECT
        || req.uri().scheme().is_some()
        || req.uri().authority().is_some()
    {
        return Err(Error::NotAProxy);
    }
    match *req.method() {
        Method::GET => Ok(Want::Body),
        Method::HEAD => Ok(Want::HeadersOnly),
        ref m => Err(Error::Method(m.clone())),
    }
}

/// The part of a file to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    Whole,
    /// Inclusive byte range, already clamped to the file.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Decides the span from `Range` (and `If-Range`) given the body length.
/// Multiple ranges and syntax we do not understand get the whole file, which
/// RFC 9110 allows.
pub(crate) fn span(
    headers: &HeaderMap,
    len: u64,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Span {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Span::Whole;
    };
    if let Some(cond) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && Some(cond) != etag
        && Some(cond) != last_modified
    {
        return Span::Whole;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last `b` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Span::Whole;
        };
        if n == 0 || len == 0 {
            return Span::Unsatisfiable;
        }
        return Span::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return Span::Whole;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Span::Whole,
        }
    };
    if start >= len {
        return Span::Unsatisfiable;
    }
    Span::Part {
        start,
        end: end.min(len - 1),
    }
}

/// Whether a client's conditional GET matches the cached validators, so a
/// 304 answers it. Clients echo `Last-Modified` verbatim, so an exact string
/// match is enough; anything else gets the full file.
pub(crate) fn not_modified(
    headers: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return etag.is_some_and(|e| inm.split(',').any(|t| t.trim() == e || t.trim() == "*"));
    }
    match headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ims) => last_modified == Some(ims.trim()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(range: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::RANGE, range.parse().expect("header"));
        m
    }

    #[test]
    fn ranges() {
        let table = [
            ("bytes=0-99", Span::Part { start: 0, end: 99 }),
            (
                "bytes=10-",
                Span::Part {
                    start: 10,
                    end: 999,
                },
            ),
            (
                "bytes=-100",
                Span::Part {
                    start: 900,
                    end: 999,
                },
            ),
            ("bytes=-5000", Span::Part { start: 0, end: 999 }),
            (
                "bytes=990-5000",
                Span::Part {
                    start: 990,
                    end: 999,
                },
            ),
            ("bytes=1000-", Span::Unsatisfiable),
            ("bytes=-0", Span::Unsatisfiable),
            ("bytes=5-2", Span::Whole),
            ("bytes=0-1,5-6", Span::Whole),
            ("items=0-1", Span::Whole),
            ("bytes=x-y", Span::Whole),
        ];
        for (r, want) in table {
            assert_eq!(span(&h(r), 1000, None, None), want, "{r}");
        }
        assert_eq!(span(&HeaderMap::new(), 1000, None, None), Span::Whole);
        let mut m = h("bytes=0-1");
        m.insert(header::IF_RANGE, "\"old\"".parse().expect("header"));
        assert_eq!(span(&m, 1000, Some("\"new\""), None), Span::Whole);
        assert_eq!(
            span(&m, 1000, Some("\"old\""), None),
            Span::Part { start: 0, end: 1 }
        );
    }

    #[test]
    fn conditionals() {
        let with = |k: header::HeaderName, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(k, v.parse().expect("header"));
            m
        };
        let lm = "Sat, 28 Nov 2026 12:00:00 GMT";
        assert!(not_modified(
            &with(header::IF_NONE_MATCH, "\"a\", \"b\""),
            Some("\"b\""),
            None
        ));
        assert!(!not_modified(
            &with(header::IF_NONE_MATCH, "\"a\""),
            Some("\"b\""),
            Some(lm)
        ));
        assert!(not_modified(
            &with(header::IF_MODIFIED_SINCE, lm),
            None,
            Some(lm)
        ));
        assert!(!not_modified(
            &with(header::IF_MODIFIED_SINCE, lm),
            None,
            None
        ));
        assert!(!not_modified(&HeaderMap::new(), Some("\"b\""), Some(lm)));
    }

    #[test]
    fn requests() {
        let req = |m: Method, uri: &str| {
            http::Request::builder()
                .method(m)
                .uri(uri)
                .body(())
                .expect("req")
        };
        assert_eq!(
            check_request(&req(Method::GET, "/repo/c/a")).ok(),
            Some(Want::Body)
        );
        assert_eq!(
            check_request(&req(Method::HEAD, "/repo/c/a")).ok(),
            Some(Want::HeadersOnly)
        );
        assert!(matches!(
            check_request(&req(Method::GET, "http://evil/x")),
            Err(Error::NotAProxy)
        ));
        assert!(matches!(
            check_request(&req(Method::CONNECT, "evil:443")),
            Err(Error::NotAProxy)
        ));
        assert!(matches!(
            check_request(&req(Method::POST, "/repo/c/a")),
            Err(Error::Method(_))
        ));
    }
}
