//! Reading what a repository says about its own files: `repomd.xml` (every
//! metadata record and its checksum), primary metadata (every package and
//! its checksum) in each compression createrepo_c writes, and `.treeinfo`
//! (the installer images and their checksums). Pure functions over readers:
//! no I/O of their own, no cache.

use std::io::{BufRead, BufReader, Read};

use quick_xml::events::{BytesStart, Event};

use crate::Error;

/// A file a repository's metadata lists, with what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Relative to the repository (or tree) directory.
    pub(crate) href: String,
    pub(crate) sha256: Option<[u8; 32]>,
    /// Size in bytes when the metadata gives one (progress and ETA only).
    pub(crate) size: Option<u64>,
}

/// One `<data>` record of `repomd.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// `primary`, `filelists`, `other`, `group_gz`, `modules`, …
    pub(crate) kind: String,
    pub(crate) file: Listed,
}

pub(crate) fn parse_sha256(kind: &str, hex: &str) -> Option<[u8; 32]> {
    if kind != "sha256" || hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An attribute's value with its entities (`&amp;`, `&#43;`, …) resolved.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// A record being read.
#[derive(Default)]
struct Partial {
    kind: Option<String>,
    href: Option<String>,
    sha256: Option<[u8; 32]>,
    size: Option<u64>,
}

/// Walks `<…><checksum type=…>hex</checksum><location href=…/><size …/></…>`
/// records of element `record` — the shape shared by `repomd.xml` (`data`)
/// and primary (`package`). `<open-checksum>` (of the uncompressed file)
/// is a different element and is not mistaken for the checksum.
fn parse_records(
    input: impl BufRead,
    record: &[u8],
) -> Result<Vec<(Option<String>, Listed)>, Error> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut cur: Option<Partial> = None;
    let mut checksum_kind: Option<String> = None;
    let mut in_size = false;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| Error::Repodata(format!("XML: {e}")))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = e.local_name();
                let empty = matches!(ev, Event::Empty(_));
                if name.as_ref() == record {
                    cur = (!empty).then(|| Partial {
                        kind: attr(e, b"type"),
                        ..Partial::default()
                    });
                } else if let Some(c) = cur.as_mut() {
                    match name.as_ref() {
                        b"checksum" if !empty => checksum_kind = attr(e, b"type"),
                        // A package stored elsewhere (`xml:base`) is not ours to fetch.
                        b"location" if attr(e, b"xml:base").is_none() => c.href = attr(e, b"href"),
                        // primary: `<size package=… installed=… archive=…/>`.
                        b"size" if empty => {
                            c.size = attr(e, b"package").and_then(|v| v.parse().ok())
                        }
                        // repomd.xml: `<size>N</size>`.
                        b"size" => in_size = true,
                        _ => {}
                    }
                }
            }
            Event::Text(t) => {
                if let Some(c) = cur.as_mut() {
                    let text = String::from_utf8_lossy(&t);
                    if let Some(kind) = checksum_kind.as_deref() {
                        c.sha256 = parse_sha256(kind, text.trim());
                    } else if in_size {
                        c.size = text.trim().parse().ok();
                    }
                }
            }
            Event::End(ref e) => {
                let name = e.local_name();
                if name.as_ref() == b"checksum" {
                    checksum_kind = None;
                } else if name.as_ref() == b"size" {
                    in_size = false;
                } else if name.as_ref() == record
                    && let Some(Partial {
                        kind,
                        href: Some(href),
                        sha256,
                        size,
                    }) = cur.take()
                {
                    out.push((kind, Listed { href, sha256, size }));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// Every metadata record `repomd.xml` lists.
pub(crate) fn parse_repomd(input: impl BufRead) -> Result<Vec<Record>, Error> {
    let records: Vec<Record> = parse_records(input, b"data")?
        .into_iter()
        .map(|(kind, file)| Record {
            kind: kind.unwrap_or_default(),
            file,
        })
        .collect();
    if !records.iter().any(|r| r.kind == "primary") {
        return Err(Error::Repodata(
            "repomd.xml lists no primary metadata".into(),
        ));
    }
    Ok(records)
}

/// The compression of a metadata file, by its name as createrepo_c writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    Plain,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

impl Compression {
    pub(crate) fn of(href: &str) -> Option<Compression> {
        let name = href.rsplit('/').next().unwrap_or(href);
        Some(match name.rsplit_once('.').map(|(_, ext)| ext)? {
            "xml" => Compression::Plain,
            "gz" => Compression::Gzip,
            "xz" => Compression::Xz,
            "bz2" => Compression::Bzip2,
            "zst" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// A reader of the decompressed bytes of a metadata file named `href`.
pub(crate) fn decompress<'a>(
    input: impl BufRead + Send + 'a,
    href: &str,
) -> Result<Box<dyn BufRead + Send + 'a>, Error> {
    let buffered = |r: Box<dyn Read + Send + 'a>| -> Box<dyn BufRead + Send + 'a> {
        Box::new(BufReader::with_capacity(64 * 1024, r))
    };
    Ok(match Compression::of(href) {
        Some(Compression::Plain) => Box::new(input),
        Some(Compression::Gzip) => buffered(Box::new(flate2::bufread::MultiGzDecoder::new(input))),
        // Multi-stream: `xz` and `pxz` may write several streams back to back.
        Some(Compression::Xz) => buffered(Box::new(
            liblzma::bufread::XzDecoder::new_multi_decoder(input),
        )),
        Some(Compression::Bzip2) => buffered(Box::new(bzip2::bufread::MultiBzDecoder::new(input))),
        // createrepo_c ≥ 1.0 (Fedora, newer EL) compresses with zstd.
        Some(Compression::Zstd) => buffered(Box::new(
            ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| Error::Repodata(format!("{href}: zstd: {e}")))?,
        )),
        None => {
            return Err(Error::Repodata(format!(
                "{href}: not plain, gzip, xz, bzip2 or zstd metadata"
            )));
        }
    })
}

/// Every package primary metadata (named `href`, compressed accordingly) lists.
pub(crate) fn parse_primary(input: impl BufRead + Send, href: &str) -> Result<Vec<Listed>, Error> {
    let xml = decompress(input, href)?;
    let records = parse_records(xml, b"package").map_err(|e| match e {
        Error::Repodata(m) => Error::Repodata(format!("{href}: {m}")),
        other => other,
    })?;
    Ok(records.into_iter().map(|(_, l)| l).collect())
}

/// The files `.treeinfo` names: every value of an `[images-*]` or
/// `[stage2]` section and every key of `[checksums]`, with the sha256 the
/// checksums section gives. Paths are relative to the tree.
pub(crate) fn parse_treeinfo(text: &str) -> Result<Vec<Listed>, Error> {
    let ini =
        ini::Ini::load_from_str(text).map_err(|e| Error::Repodata(format!(".treeinfo: {e}")))?;
    let mut sums = std::collections::BTreeMap::new();
    if let Some(section) = ini.section(Some("checksums")) {
        for (path, value) in section.iter() {
            let sha = value
                .split_once(':')
                .and_then(|(kind, hex)| parse_sha256(kind.trim(), hex.trim()));
            sums.insert(path.trim().to_string(), sha);
        }
    }
    let mut files: Vec<String> = Vec::new();
    for (name, section) in ini.iter() {
        let Some(name) = name else { continue };
        if name.starts_with("images-") || name == "stage2" {
            files.extend(section.iter().map(|(_, v)| v.trim().to_string()));
        }
    }
    files.extend(sums.keys().cloned());
    files.sort();
    files.dedup();
    Ok(files
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(|href| Listed {
            sha256: sums.get(&href).copied().flatten(),
            href,
            size: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="filelists">
    <checksum type="sha256">1111111111111111111111111111111111111111111111111111111111111111</checksum>
    <location href="repodata/11-filelists.xml.gz"/>
  </data>
  <data type="primary">
    <checksum type="sha256">abababababababababababababababababababababababababababababababab</checksum>
    <open-checksum type="sha256">2222222222222222222222222222222222222222222222222222222222222222</open-checksum>
    <location href="repodata/ab-primary.xml.gz"/>
    <size>100</size>
    <open-size>300</open-size>
  </data>
  <data type="group">
    <checksum type="sha1">0101010101010101010101010101010101010101</checksum>
    <location href="repodata/cc-comps.xml"/>
  </data>
</repomd>"#;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm">
  <name>a</name>
  <checksum type="sha256" pkgid="YES">0101010101010101010101010101010101010101010101010101010101010101</checksum>
  <size package="1234" installed="5000" archive="5100"/>
  <location href="Packages/a-1.0-1.x86_64.rpm"/>
  <format><rpm:license>MIT</rpm:license><file>/usr/bin/a</file></format>
</package>
<package type="rpm">
  <name>b</name>
  <checksum type="sha1" pkgid="YES">0101010101010101010101010101010101010101</checksum>
  <location href="Packages/libstdc&#43;&#x2B;-1&amp;2.rpm"/>
</package>
<package type="rpm">
  <name>c</name>
  <checksum type="sha256" pkgid="YES">0202020202020202020202020202020202020202020202020202020202020202</checksum>
  <location xml:base="http://elsewhere/" href="Packages/c.rpm"/>
</package>
</metadata>"#;

    #[test]
    fn repomd_records() {
        let r = parse_repomd(REPOMD.as_bytes()).expect("parses");
        type Row<'a> = (&'a str, &'a str, Option<[u8; 32]>, Option<u64>);
        let got: Vec<Row<'_>> = r
            .iter()
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.file.href.as_str(),
                    r.file.sha256,
                    r.file.size,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "filelists",
                    "repodata/11-filelists.xml.gz",
                    Some([0x11; 32]),
                    None
                ),
                (
                    "primary",
                    "repodata/ab-primary.xml.gz",
                    Some([0xab; 32]),
                    Some(100)
                ),
                // sha1 is not a checksum the cache can check: listed, unverified.
                ("group", "repodata/cc-comps.xml", None, None),
            ]
        );
        assert!(parse_repomd("<repomd/>".as_bytes()).is_err());
        assert!(parse_repomd("<repomd><data".as_bytes()).is_err());
    }

    fn compressed(kind: Compression) -> Vec<u8> {
        let raw = PRIMARY.as_bytes();
        match kind {
            Compression::Plain => raw.to_vec(),
            Compression::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(raw).expect("gz");
                w.finish().expect("gz")
            }
            Compression::Xz => {
                let mut w = liblzma::write::XzEncoder::new(Vec::new(), 1);
                w.write_all(raw).expect("xz");
                w.finish().expect("xz")
            }
            Compression::Bzip2 => {
                let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                w.write_all(raw).expect("bz2");
                w.finish().expect("bz2")
            }
            Compression::Zstd => {
                ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }

    #[test]
    fn primary_in_every_compression() {
        let want = vec![
            Listed {
                href: "Packages/a-1.0-1.x86_64.rpm".into(),
                sha256: Some([1; 32]),
                size: Some(1234),
            },
            Listed {
                href: "Packages/libstdc++-1&2.rpm".into(),
                sha256: None,
                size: None,
            },
        ];
        for (kind, name) in [
            (Compression::Plain, "x-primary.xml"),
            (Compression::Gzip, "x-primary.xml.gz"),
            (Compression::Xz, "x-primary.xml.xz"),
            (Compression::Bzip2, "x-primary.xml.bz2"),
            (Compression::Zstd, "x-primary.xml.zst"),
        ] {
            let bytes = compressed(kind);
            let got = parse_primary(&bytes[..], &format!("repodata/{name}"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name}");
            // The wrong bytes under the name are an error, not an empty repo.
            if kind != Compression::Plain {
                assert!(
                    parse_primary(&b"not compressed"[..], name).is_err(),
                    "{name}"
                );
            }
        }
        assert!(parse_primary(&b""[..], "x.xml.zck").is_err());
    }

    #[test]
    fn treeinfo_images_and_checksums() {
        let text = "[header]\ntype = productmd.treeinfo\n\n\
            [images-x86_64]\nefiboot.img = images/efiboot.img\ninitrd = images/pxeboot/initrd.img\nkernel = images/pxeboot/vmlinuz\n\n\
            [images-xen]\ninitrd = images/pxeboot/initrd.img\n\n\
            [stage2]\nmainimage = images/install.img\n\n\
            [checksums]\n\
            images/efiboot.img = sha256:0303030303030303030303030303030303030303030303030303030303030303\n\
            images/install.img = sha256:0404040404040404040404040404040404040404040404040404040404040404\n\
            images/pxeboot/initrd.img = sha256:0505050505050505050505050505050505050505050505050505050505050505\n\
            images/pxeboot/vmlinuz = md5:00000000000000000000000000000000\n\
            EFI/BOOT/BOOTX64.EFI = sha256:0606060606060606060606060606060606060606060606060606060606060606\n";
        let got: Vec<(String, Option<u8>)> = parse_treeinfo(text)
            .expect("parses")
            .into_iter()
            .map(|l| (l.href, l.sha256.map(|s| s[0])))
            .collect();
        let want: Vec<(String, Option<u8>)> = [
            ("EFI/BOOT/BOOTX64.EFI", Some(6)),
            ("images/efiboot.img", Some(3)),
            ("images/install.img", Some(4)),
            ("images/pxeboot/initrd.img", Some(5)),
            ("images/pxeboot/vmlinuz", None),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect();
        assert_eq!(got, want);
    }
}
