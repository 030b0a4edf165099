//! Turning a requested file name into a path that cannot leave the root.
//!
//! [`normalize`] is pure and strict: it refuses rather than repairs, because
//! a boot loader never needs `..`, `%2e`, `C:` or a backslash, and every
//! repair rule is one more way for two names to mean the same file.
//! Symlinks can only be judged against the file system, so [`resolve`]
//! canonicalises the joined path and checks it is still under the root.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::server::OpenError;

/// Longest accepted file name, in bytes. A request packet is 512 bytes in
/// practice; real boot file names are far shorter.
pub const MAX_PATH_LEN: usize = 255;

/// Why a requested file name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("empty file name")]
    Empty,
    #[error("file name longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("file name is not UTF-8")]
    NotUtf8,
    #[error("control character or NUL in file name")]
    Control,
    #[error("backslash in file name")]
    Backslash,
    #[error("percent sign in file name")]
    Percent,
    #[error("drive letter in file name")]
    DriveLetter,
    #[error("empty path component")]
    EmptyComponent,
    #[error("dot component (., .. or hidden file)")]
    DotComponent,
    #[error("path resolves outside the root")]
    OutsideRoot,
}

/// Normalises a requested name into a relative, `/`-separated path.
///
/// One leading `/` is stripped (many PXE ROMs send `/pxelinux.0`); it is
/// read relative to the root, like `in.tftpd -s`. Backslashes are refused
/// rather than treated as separators: Kickstand serves iPXE and GRUB, which
/// never send them, and Unix file names may legally contain them, so either
/// reading would alias two names.
pub fn normalize(raw: &[u8]) -> Result<String, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let name = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    let name = name.strip_prefix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    if name.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    if name.contains('\\') {
        return Err(PathError::Backslash);
    }
    if name.contains('%') {
        return Err(PathError::Percent);
    }
    if let [letter, b':', ..] = name.as_bytes()
        && letter.is_ascii_alphabetic()
    {
        return Err(PathError::DriveLetter);
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        // `.` and `..` are the escapes; other dot files (`.git`, `.ssh`)
        // are never boot files and are kept private.
        if component.starts_with('.') {
            return Err(PathError::DotComponent);
        }
    }
    Ok(name.to_owned())
}

/// Joins a normalised path to `root` and follows symlinks; the result must
/// still lie under the canonical root. Blocking: call off the runtime.
///
/// A file swapped for a symlink between this check and the open could
/// still escape; that needs write access to the root, which only the
/// operator has.
pub fn resolve(root: &Path, normalized: &str) -> std::io::Result<Result<PathBuf, PathError>> {
    let root = root.canonicalize()?;
    let full = root.join(normalized).canonicalize()?;
    Ok(if full.starts_with(&root) {
        Ok(full)
    } else {
        Err(PathError::OutsideRoot)
    })
}

/// Opens the regular file a normalised name names under `root`: resolved
/// as [`resolve`] does, refused unless it is a regular file (checked before
/// opening: opening a FIFO would block), and opened. Blocking: call off the
/// runtime. TFTP and the HTTP loader route both open boot files this way,
/// so the two protocols refuse the same names.
pub fn open_file(root: &Path, normalized: &str) -> Result<(std::fs::File, u64), OpenError> {
    let full = resolve(root, normalized)??;
    if !std::fs::metadata(&full)?.is_file() {
        return Err(OpenError::NotAFile);
    }
    let file = std::fs::File::open(&full)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        let cases = [
            ("undionly.kpxe", "undionly.kpxe"),
            ("/ipxe.efi", "ipxe.efi"),
            (
                "pxelinux.cfg/01-52-54-00-12-34-01",
                "pxelinux.cfg/01-52-54-00-12-34-01",
            ),
            ("grub/x86_64-efi/grub.cfg", "grub/x86_64-efi/grub.cfg"),
            ("a..b", "a..b"),
            ("boot/52:54:00:12:34:01.ipxe", "boot/52:54:00:12:34:01.ipxe"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw.as_bytes()).as_deref(), Ok(want), "{raw:?}");
        }
    }

    /// Hostile names and the reason each is refused.
    pub(crate) const HOSTILE: &[(&[u8], PathError)] = &[
        (b"", PathError::Empty),
        (b"/", PathError::Empty),
        (b"..", PathError::DotComponent),
        (b".", PathError::DotComponent),
        (b"../etc/passwd", PathError::DotComponent),
        (b"/../etc/passwd", PathError::DotComponent),
        (b"../../../../../../etc/shadow", PathError::DotComponent),
        (b"a/../../etc/passwd", PathError::DotComponent),
        (b"a/..", PathError::DotComponent),
        (b"a/./b", PathError::DotComponent),
        (b"./a", PathError::DotComponent),
        (b"...//etc", PathError::DotComponent),
        (b".ssh/id_rsa", PathError::DotComponent),
        (b"boot/.git/config", PathError::DotComponent),
        (b"//etc/passwd", PathError::EmptyComponent),
        (b"///etc/passwd", PathError::EmptyComponent),
        (b"a//b", PathError::EmptyComponent),
        (b"a/", PathError::EmptyComponent),
        (b"a/b/", PathError::EmptyComponent),
        (b"..\\..\\etc\\passwd", PathError::Backslash),
        (b"\\etc\\passwd", PathError::Backslash),
        (b"boot\\x86\\wdsnbp.com", PathError::Backslash),
        (b"a\\..\\..\\b", PathError::Backslash),
        (b"\\\\server\\share\\file", PathError::Backslash),
        (b"C:\\Windows\\win.ini", PathError::Backslash),
        (b"C:/Windows/win.ini", PathError::DriveLetter),
        (b"c:boot.ini", PathError::DriveLetter),
        (b"/C:/x", PathError::DriveLetter),
        (b"Z:", PathError::DriveLetter),
        (b"%2e%2e/etc/passwd", PathError::Percent),
        (b"%2e%2e%2fetc%2fpasswd", PathError::Percent),
        (b"..%2f..%2fetc%2fpasswd", PathError::Percent),
        (b"%252e%252e/etc", PathError::Percent),
        (b"a%00b", PathError::Percent),
        (b"%c0%ae%c0%ae/etc", PathError::Percent),
        (b"a\0b", PathError::Control),
        (b"\0", PathError::Control),
        (b"a\nb", PathError::Control),
        (b"a\rb", PathError::Control),
        (b"a\tb", PathError::Control),
        (b"a\x1bb", PathError::Control),
        (b"a\x7fb", PathError::Control),
        (b"a\xc2\x85b", PathError::Control),
        (b"\xc0\xae\xc0\xae/etc/passwd", PathError::NotUtf8),
        (b"\xff\xfe", PathError::NotUtf8),
        (b"a\x80", PathError::NotUtf8),
        (b"\xed\xa0\x80", PathError::NotUtf8),
        (b"....//....//etc/passwd", PathError::DotComponent),
        (b"pxelinux.cfg/../../etc/passwd", PathError::DotComponent),
        (b"/..", PathError::DotComponent),
        (b"/./", PathError::DotComponent),
        (b"boot/../../..", PathError::DotComponent),
        (b"..;/etc/passwd", PathError::DotComponent),
        (b"/.../etc", PathError::DotComponent),
    ];

    #[test]
    fn refuses_hostile_names() {
        assert!(HOSTILE.len() >= 50, "corpus has {} entries", HOSTILE.len());
        for (raw, why) in HOSTILE {
            assert_eq!(
                normalize(raw).as_ref(),
                Err(why),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn refuses_long_names_of_every_length_past_the_limit() {
        for len in [MAX_PATH_LEN + 1, 4096, 65_000] {
            assert_eq!(normalize(&vec![b'a'; len]), Err(PathError::TooLong));
        }
        assert!(normalize(&vec![b'a'; MAX_PATH_LEN]).is_ok());
    }

    #[test]
    fn resolve_refuses_symlinks_out_of_the_root() -> std::io::Result<()> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret"), b"x")?;
        let root = tempfile::tempdir()?;
        std::fs::write(root.path().join("ok"), b"ok")?;
        std::fs::create_dir(root.path().join("sub"))?;
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("leak"))?;
        std::os::unix::fs::symlink(outside.path(), root.path().join("sub/dir"))?;
        std::os::unix::fs::symlink("../ok", root.path().join("sub/inside"))?;

        assert_eq!(resolve(root.path(), "leak")?, Err(PathError::OutsideRoot));
        assert_eq!(
            resolve(root.path(), "sub/dir/secret")?,
            Err(PathError::OutsideRoot)
        );
        let inside = resolve(root.path(), "sub/inside")?.map_err(std::io::Error::other)?;
        assert_eq!(inside, root.path().canonicalize()?.join("ok"));
        assert!(resolve(root.path(), "missing").is_err());
        Ok(())
    }
}
