//! Metric label values taken from what the network sends (the boot file
//! another DHCP server offered, its boot menu, its server id), made safe
//! to put in `/metrics`.
//!
//! `prometheus-client` writes a label value between double quotes exactly
//! as it is given (0.24 escapes nothing), so a value holding `"` or a line
//! feed ends its series early and writes lines of its own: a forged offer
//! of the boot file `x"} 1\nkickstand_hosts{phase="installed"} 999` would
//! add a `kickstand_hosts` series. [`WireLabel`] is the one label value
//! type for such text: it keeps at most [`WireLabel::MAX_CHARS`]
//! characters and is written through [`escape_label_value`], the one
//! escaper. Label values that are Kickstand's own constants (reasons,
//! phases, routes: `&'static str`) need neither.
//!
//! It owns that type and its escaper. It does not own registries or
//! families, nor how many series a family holds: only the table keyed by
//! what strangers send can bound that (the rogue-server table keeps a
//! fixed number of servers, one series each). Only the daemon registers
//! such labels, so this is one of its modules, not a crate.

use std::fmt::{self, Write};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value from the wire: capped in length, escaped when written.
///
/// It holds the text as received (capped), not escaped: two values are the
/// same series exactly when their text is the same, and the status page
/// shows the text itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct WireLabel(String);

impl WireLabel {
    /// Characters kept: enough for a boot file path or a short boot menu,
    /// and a flood of long names costs a scrape little.
    pub(crate) const MAX_CHARS: usize = 64;

    pub(crate) fn new(text: &str) -> WireLabel {
        WireLabel(text.chars().take(WireLabel::MAX_CHARS).collect())
    }

    /// The text, unescaped.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for WireLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        escape_label_value(&self.0, encoder)
    }
}

/// Writes `value` as the text exposition formats (Prometheus 0.0.4 and
/// OpenMetrics alike) require inside a label value's quotes: backslash,
/// double quote and line feed as `\\`, `\"` and `\n`, everything else as
/// it is.
pub(crate) fn escape_label_value(value: &str, out: &mut impl Write) -> fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => out.write_str(r"\\")?,
            '"' => out.write_str(r#"\""#)?,
            '\n' => out.write_str(r"\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    const FORGED: &str = "x\"} 1\nkickstand_hosts{phase=\"installed\"} 999";

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        escape_label_value(value, &mut out).expect("a String takes any text");
        out
    }

    #[test]
    fn escapes_backslash_quote_and_line_feed_only() {
        for (raw, want) in [
            ("ipxe.efi", "ipxe.efi"),
            (r"boot\x64.efi", r"boot\\x64.efi"),
            (r#"a"b"#, r#"a\"b"#),
            ("a\nb", r"a\nb"),
            (r#"\""#, r#"\\\""#),
            ("tab\there, é, \r", "tab\there, é, \r"),
            (
                FORGED,
                r#"x\"} 1\nkickstand_hosts{phase=\"installed\"} 999"#,
            ),
        ] {
            assert_eq!(escaped(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn keeps_at_most_max_chars_on_a_char_boundary() {
        let long = "é".repeat(WireLabel::MAX_CHARS + 10);
        assert_eq!(
            WireLabel::new(&long).as_str(),
            "é".repeat(WireLabel::MAX_CHARS)
        );
        assert_eq!(WireLabel::new(FORGED).as_str(), FORGED);
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Offer {
        offered: WireLabel,
    }

    #[test]
    fn a_forged_value_stays_inside_its_series() {
        let mut registry = Registry::default();
        let family = Family::<Offer, Gauge>::default();
        registry.register("rogue", "offers", family.clone());
        family
            .get_or_create(&Offer {
                offered: WireLabel::new(FORGED),
            })
            .set(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [r#"rogue{offered="x\"} 1\nkickstand_hosts{phase=\"installed\"} 999"} 1"#]
        );
    }
}
