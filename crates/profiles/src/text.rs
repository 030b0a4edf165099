//! Text a stranger wrote — discovery facts, installer log lines, what
//! another DHCP server offers, an installer's error — on its way into
//! storage or in front of a person. One rule says which characters are
//! hazards: C0 and C1 controls and DEL (ESC starts terminal sequences, CR
//! and LF forge lines, BEL rings) and the Unicode controls that reorder or
//! break what a reader sees (bidi marks, embeddings, overrides, isolates,
//! line and paragraph separators). Every other character, accents and
//! scripts included, is kept.
//!
//! Every crate reaches this one through its profiles dependency, so the
//! state store, the CLI, the status page and the log all apply the same
//! rule.

use std::fmt;

/// Whether `c` must not reach a terminal, a log line or a stored fact as
/// it is.
fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` as a person should see it: every hazard written as an escape
/// (`\n`, `\x1b`, `\u{202e}`), everything else as it is. A `Display`, so
/// it goes straight into `format!`, `println!` and log fields.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// See [`escaped`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0)
    }
}

/// A writer that escapes what goes through it as [`escaped`] does: for
/// text formatted in pieces (a log field), escaped without being built
/// first.
#[derive(Debug)]
pub struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(&mut self.0, s)
    }
}

fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(is_hazard) {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or_default();
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if u32::from(c) < 0x100 => write!(out, "\\x{:02x}", u32::from(c))?,
            c => write!(out, "\\u{{{:x}}}", u32::from(c))?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// `text` as it is kept: hazards dropped, surrounding space trimmed, at
/// most `max_chars` characters.
pub fn cleaned(text: &str, max_chars: usize) -> String {
    let kept: String = text
        .chars()
        .filter(|c| !is_hazard(*c))
        .take(max_chars)
        .collect();
    kept.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hazards_are_shown_escaped_and_the_rest_as_it_is() {
        let shown = escaped("a\u{1b}[31mb\r\nc\u{7}d\u{202e}e\u{9b}f\tg").to_string();
        assert_eq!(shown, "a\\x1b[31mb\\r\\nc\\x07d\\u{202e}e\\x9bf\\tg");
        assert_eq!(
            escaped("Société Générale, 東京, \"x\" \\ ok").to_string(),
            "Société Générale, 東京, \"x\" \\ ok"
        );
        assert!(!shown.chars().any(is_hazard));
    }

    #[test]
    fn text_written_in_pieces_is_escaped_the_same() {
        use std::fmt::Write as _;
        let mut out = Escaping(String::new());
        let (plain, bidi) = ("a\u{1b}b", "\u{202e}");
        write!(out, "{plain}|{bidi:?}").expect("a String takes it");
        assert_eq!(out.0, "a\\x1bb|\"\\u{202e}\"");
    }

    #[test]
    fn kept_text_loses_its_hazards_and_is_bounded() {
        assert_eq!(
            cleaned(" Server\n\u{2066}groups:\u{1b}[31m ", 100),
            "Servergroups:[31m"
        );
        assert_eq!(cleaned("ééééé", 3), "ééé");
        assert_eq!(cleaned("\u{7}\u{202e}", 10), "");
    }
}
