//! TFTP wire format (RFC 1350, option extension RFC 2347): parsing and
//! encoding only, no policy.

use thiserror::Error;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// Whether a request reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// Transfer mode. Anything but `octet` and `netascii` is refused at parse
/// time (`mail` is obsolete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    NetAscii,
}

/// A read or write request with its RFC 2347 options, names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub direction: Direction,
    /// Raw file name as sent; [`crate::normalize`] decides what it means.
    pub filename: Vec<u8>,
    pub mode: Mode,
    pub options: Vec<(String, String)>,
}

/// Error codes of RFC 1350 and RFC 2347.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    OptionRefused,
    Other(u16),
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        match self {
            Self::NotDefined => 0,
            Self::FileNotFound => 1,
            Self::AccessViolation => 2,
            Self::DiskFull => 3,
            Self::IllegalOperation => 4,
            Self::UnknownTransferId => 5,
            Self::FileExists => 6,
            Self::NoSuchUser => 7,
            Self::OptionRefused => 8,
            Self::Other(code) => code,
        }
    }

    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => Self::NotDefined,
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTransferId,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionRefused,
            other => Self::Other(other),
        }
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Request(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: ErrorCode, message: String },
    Oack { options: Vec<(String, String)> },
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("packet shorter than its header")]
    Truncated,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("string field not terminated by NUL")]
    Unterminated,
    #[error("empty file name")]
    EmptyFilename,
    #[error("unsupported transfer mode {0:?}")]
    UnsupportedMode(String),
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("option or mode is not valid UTF-8")]
    NotUtf8,
}

impl<'a> Packet<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let (op, body) = split_u16(buf)?;
        match op {
            RRQ => parse_request(Direction::Read, body).map(Packet::Request),
            WRQ => parse_request(Direction::Write, body).map(Packet::Request),
            DATA => {
                let (block, data) = split_u16(body)?;
                Ok(Packet::Data { block, data })
            }
            // Trailing bytes after an ACK are tolerated: some ROMs pad.
            ACK => Ok(Packet::Ack {
                block: split_u16(body)?.0,
            }),
            ERROR => {
                let (code, rest) = split_u16(body)?;
                // Clients in the wild omit the final NUL; the message is
                // informational, so take what is there.
                let text = rest.split(|&b| b == 0).next().unwrap_or_default();
                Ok(Packet::Error {
                    code: ErrorCode::from_u16(code),
                    message: String::from_utf8_lossy(text).into_owned(),
                })
            }
            OACK => Ok(Packet::Oack {
                options: parse_options(&mut Fields(body))?,
            }),
            other => Err(ParseError::UnknownOpcode(other)),
        }
    }
}

fn split_u16(buf: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    match buf {
        [a, b, rest @ ..] => Ok((u16::from_be_bytes([*a, *b]), rest)),
        _ => Err(ParseError::Truncated),
    }
}

/// NUL-terminated fields of a request body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::Unterminated)?;
        let (field, rest) = self.0.split_at(end);
        self.0 = &rest[1..];
        Ok(Some(field))
    }

    fn next_str(&mut self) -> Result<Option<&'a str>, ParseError> {
        self.next_field()?
            .map(|f| std::str::from_utf8(f).map_err(|_| ParseError::NotUtf8))
            .transpose()
    }
}

fn parse_request(direction: Direction, body: &[u8]) -> Result<Request, ParseError> {
    let mut fields = Fields(body);
    let filename = fields.next_field()?.ok_or(ParseError::Truncated)?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let mode = fields.next_str()?.ok_or(ParseError::Truncated)?;
    let mode = match mode.to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::NetAscii,
        _ => return Err(ParseError::UnsupportedMode(mode.to_owned())),
    };
    Ok(Request {
        direction,
        filename: filename.to_vec(),
        mode,
        options: parse_options(&mut fields)?,
    })
}

fn parse_options(fields: &mut Fields<'_>) -> Result<Vec<(String, String)>, ParseError> {
    let mut options = Vec::new();
    while let Some(name) = fields.next_str()? {
        // Some PXE ROMs pad requests with extra NULs: an empty name ends the list.
        if name.is_empty() {
            break;
        }
        let value = fields
            .next_str()?
            .ok_or_else(|| ParseError::OptionWithoutValue(name.to_owned()))?;
        options.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    Ok(options)
}

/// Appends a DATA header; the caller appends the payload after it.
pub fn encode_data_header(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

pub fn encode_ack(block: u16) -> Vec<u8> {
    let mut out = ACK.to_be_bytes().to_vec();
    out.extend_from_slice(&block.to_be_bytes());
    out
}

pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = ERROR.to_be_bytes().to_vec();
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    // A NUL inside the message would truncate it on the wire; drop them.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
    out
}

pub fn encode_oack<'a>(options: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Converts bytes to netascii (RFC 764 as used by RFC 1350): LF becomes
/// CR LF and a bare CR becomes CR NUL, so a netascii client's reverse
/// conversion gives back the original bytes exactly.
pub fn to_netascii(bytes: &[u8]) -> Vec<u8> {
    let extra = bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let mut out = Vec::with_capacity(bytes.len() + extra);
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
    out
}

/// Encodes a request; servers never send one, but clients in tests and the
/// fuzz target do.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let op = match request.direction {
        Direction::Read => RRQ,
        Direction::Write => WRQ,
    };
    let mut out = op.to_be_bytes().to_vec();
    out.extend_from_slice(&request.filename);
    out.push(0);
    out.extend_from_slice(match request.mode {
        Mode::Octet => b"octet",
        Mode::NetAscii => b"netascii",
    });
    out.push(0);
    for (name, value) in &request.options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str, opts: &[(&str, &str)]) -> Request {
        Request {
            direction: Direction::Read,
            filename: name.as_bytes().to_vec(),
            mode: Mode::Octet,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parses_table() {
        let cases: &[(&[u8], Result<Packet<'_>, ParseError>)] = &[
            (
                b"\0\x01boot.efi\0octet\0",
                Ok(Packet::Request(rrq("boot.efi", &[]))),
            ),
            (
                b"\0\x01a\0OCTET\0BLKSIZE\x001468\0tsize\x000\0",
                Ok(Packet::Request(rrq(
                    "a",
                    &[("blksize", "1468"), ("tsize", "0")],
                ))),
            ),
            // Trailing NUL padding after the options is tolerated.
            (
                b"\0\x01a\0octet\0tsize\x000\0\0\0",
                Ok(Packet::Request(rrq("a", &[("tsize", "0")]))),
            ),
            (
                b"\0\x01a\0octet\0tsize\0",
                Err(ParseError::OptionWithoutValue("tsize".into())),
            ),
            (b"\0\x01a\0octet\0tsize\x000", Err(ParseError::Unterminated)),
            (b"\0\x01a\0octet", Err(ParseError::Unterminated)),
            (b"\0\x01a\0", Err(ParseError::Truncated)),
            (b"\0\x01\0octet\0", Err(ParseError::EmptyFilename)),
            (
                b"\0\x01a\0mail\0",
                Err(ParseError::UnsupportedMode("mail".into())),
            ),
            (b"\0\x01a\0\xff\0", Err(ParseError::NotUtf8)),
            (b"\0", Err(ParseError::Truncated)),
            (b"", Err(ParseError::Truncated)),
            (b"\0\x09", Err(ParseError::UnknownOpcode(9))),
            (b"\0\x04\x01\x02", Ok(Packet::Ack { block: 0x0102 })),
            (b"\0\x04\x01", Err(ParseError::Truncated)),
            (
                b"\0\x03\0\x01xyz",
                Ok(Packet::Data {
                    block: 1,
                    data: b"xyz",
                }),
            ),
            (
                b"\0\x05\0\x08size\0",
                Ok(Packet::Error {
                    code: ErrorCode::OptionRefused,
                    message: "size".into(),
                }),
            ),
            (
                b"\0\x05\0\x00no nul",
                Ok(Packet::Error {
                    code: ErrorCode::NotDefined,
                    message: "no nul".into(),
                }),
            ),
            (
                b"\0\x06blksize\x00512\0",
                Ok(Packet::Oack {
                    options: vec![("blksize".into(), "512".into())],
                }),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(&Packet::parse(bytes), want, "input {bytes:?}");
        }
    }

    #[test]
    fn netascii_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"plain", b"plain"),
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"cr\ronly", b"cr\r\0only"),
            (b"\r\n", b"\r\0\r\n"),
            (b"\0\xff\n", b"\0\xff\r\n"),
        ];
        for (raw, want) in cases {
            assert_eq!(to_netascii(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn round_trips() {
        let req = rrq(
            "pxelinux.cfg/default",
            &[("blksize", "8192"), ("windowsize", "16")],
        );
        assert_eq!(
            Packet::parse(&encode_request(&req)),
            Ok(Packet::Request(req))
        );
        assert_eq!(
            Packet::parse(&encode_ack(65535)),
            Ok(Packet::Ack { block: 65535 })
        );
        assert_eq!(
            Packet::parse(&encode_error(ErrorCode::FileNotFound, "no\0pe")),
            Ok(Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "nope".into()
            })
        );
        assert_eq!(
            Packet::parse(&encode_oack([("tsize", "42")])),
            Ok(Packet::Oack {
                options: vec![("tsize".into(), "42".into())]
            })
        );
        let mut data = Vec::new();
        encode_data_header(&mut data, 7);
        data.extend_from_slice(b"abc");
        assert_eq!(
            Packet::parse(&data),
            Ok(Packet::Data {
                block: 7,
                data: b"abc"
            })
        );
    }
}
