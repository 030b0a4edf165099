//! Request paths: the pure decision of whether a client path may go upstream,
//! its canonical form (the cache key) and its caching policy.

use std::fmt;

/// Longest decoded path accepted; real repo paths are far shorter.
const MAX_PATH: usize = 2048;

/// A path inside a mirror that has passed [`normalize`]: percent-decoded,
/// no empty, `.` or `..` segments, no control bytes, no leading slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoPath(String);

impl RepoPath {
    /// The canonical decoded path (part of the cache key).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as it goes on the wire to the mirror: every byte outside the
    /// RFC 3986 `pchar` set is percent-encoded, so `libstdc++` and `%2B` reach
    /// the mirror (and the cache) as the same file.
    pub fn to_wire(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
            if keep {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a client path was refused before anything went upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("path too long")]
    TooLong,
    #[error("malformed percent-encoding")]
    BadPercent,
    #[error("encoded slash or backslash")]
    EncodedSeparator,
    #[error("NUL or control byte")]
    Control,
    #[error("backslash in path")]
    Backslash,
    #[error("`.` or `..` segment")]
    DotSegment,
    #[error("absolute URL in path")]
    AbsoluteUrl,
    #[error("query or fragment in path")]
    QueryOrFragment,
    #[error("path is not UTF-8")]
    NotUtf8,
}

/// Checks and canonicalises the `<path>` of `/repo/<mirror>/<path>` (without
/// the query string). Empty segments collapse (`a//b` → `a/b`); a trailing
/// slash is kept because it names a directory.
pub fn normalize(raw: &str) -> Result<RepoPath, PathError> {
    if raw.len() > MAX_PATH * 3 {
        return Err(PathError::TooLong);
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadPercent)?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadPercent)?;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'?' | b'#' => return Err(PathError::QueryOrFragment),
                    _ => decoded.push(v),
                }
                i += 3;
            }
            b'?' | b'#' => return Err(PathError::QueryOrFragment),
            b'\\' => return Err(PathError::Backslash),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Control);
    }
    if decoded.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    let text = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if text.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let trailing = text.ends_with('/');
    let mut segs = Vec::new();
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        segs.push(seg);
    }
    // `http://evil/x` or `//evil/x` would collapse harmlessly onto the mirror,
    // but a client sending one is trying to use us as an open proxy: refuse.
    if text.contains("://") || segs.first().is_some_and(|s| s.contains(':')) {
        return Err(PathError::AbsoluteUrl);
    }
    let mut out = segs.join("/");
    if trailing && !out.is_empty() {
        out.push('/');
    }
    Ok(RepoPath(out))
}

/// How long a cached copy may be served without asking the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachePolicy {
    /// Content-addressed or versioned by name: a package or a
    /// checksum-named repodata file never changes once published.
    Immutable,
    /// Changes in place on a respin (`repomd.xml`, `.treeinfo`, boot
    /// images, mirrorlists, anything not known to be immutable).
    Revalidate,
}

/// The policy for a path. Unknown files are revalidated: serving a stale
/// `repomd.xml` breaks installs, an extra conditional GET costs little.
pub fn policy(path: &RepoPath) -> CachePolicy {
    let p = path.as_str();
    let name = p.rsplit('/').next().unwrap_or(p);
    if name.ends_with(".rpm") || name.ends_with(".drpm") {
        return CachePolicy::Immutable;
    }
    let in_repodata = p.split('/').rev().nth(1) == Some("repodata");
    if in_repodata && name != "repomd.xml" {
        let prefix = name.split('-').next().unwrap_or("");
        if prefix.len() >= 32 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return CachePolicy::Immutable;
        }
    }
    CachePolicy::Revalidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_canonicalises() {
        let table = [
            ("Packages/a.rpm", "Packages/a.rpm"),
            ("/BaseOS//x86_64/os/", "BaseOS/x86_64/os/"),
            ("Packages/libstdc%2B%2B-1.rpm", "Packages/libstdc++-1.rpm"),
            ("Packages/libstdc++-1.rpm", "Packages/libstdc++-1.rpm"),
            ("a/%7Euser", "a/~user"),
            ("", ""),
            ("...hidden", "...hidden"),
        ];
        for (raw, want) in table {
            assert_eq!(normalize(raw).map(|p| p.0), Ok(want.to_string()), "{raw}");
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        let table = [
            ("../etc/passwd", PathError::DotSegment),
            ("a/../../b", PathError::DotSegment),
            ("a/%2e%2e/b", PathError::DotSegment),
            ("a/%2E%2e/b", PathError::DotSegment),
            ("a/./b", PathError::DotSegment),
            ("a%2fb", PathError::EncodedSeparator),
            ("a%2Fb", PathError::EncodedSeparator),
            ("a%5cb", PathError::EncodedSeparator),
            ("a\\..\\b", PathError::Backslash),
            ("a%00b", PathError::Control),
            ("a\0b", PathError::Control),
            ("a\nb", PathError::Control),
            ("http://evil.example/x", PathError::AbsoluteUrl),
            ("http:/evil/x", PathError::AbsoluteUrl),
            ("x/http://evil/", PathError::AbsoluteUrl),
            ("a?b=c", PathError::QueryOrFragment),
            ("a%3Fb", PathError::QueryOrFragment),
            ("a#b", PathError::QueryOrFragment),
            ("a%zz", PathError::BadPercent),
            ("a%2", PathError::BadPercent),
            ("a%ff", PathError::NotUtf8),
        ];
        for (raw, want) in table {
            assert_eq!(normalize(raw), Err(want), "{raw:?}");
        }
        assert_eq!(normalize(&"a/".repeat(3000)), Err(PathError::TooLong));
    }

    #[test]
    fn wire_form_is_encoded() {
        let p = normalize("a b/c^d+e~f").map(|p| p.to_wire());
        assert_eq!(p.as_deref(), Ok("a%20b/c%5Ed+e~f"));
    }

    #[test]
    fn policies() {
        let table = [
            (
                "BaseOS/x86_64/os/Packages/bash-5.1-1.el9.x86_64.rpm",
                CachePolicy::Immutable,
            ),
            (
                "os/repodata/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-primary.xml.gz",
                CachePolicy::Immutable,
            ),
            ("os/repodata/repomd.xml", CachePolicy::Revalidate),
            ("os/repodata/primary.xml.gz", CachePolicy::Revalidate),
            ("os/.treeinfo", CachePolicy::Revalidate),
            ("os/images/pxeboot/vmlinuz", CachePolicy::Revalidate),
            ("metalink", CachePolicy::Revalidate),
        ];
        for (raw, want) in table {
            let p = normalize(raw).expect("valid");
            assert_eq!(policy(&p), want, "{raw}");
        }
    }
}
