//! Masking identifiers in logged text: BSNs (Dutch citizen numbers) recognised by the
//! 11-check, and whatever else the operator names with regular expressions.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// What a masked BSN is replaced with.
pub const BSN_MASK: &str = "[bsn]";
/// What a match of a configured pattern is replaced with.
pub const PATTERN_MASK: &str = "[masked]";

/// `decision_log.mask`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Mask 9-digit numbers that pass the BSN 11-check.
    #[serde(default = "yes")]
    pub bsn: bool,
    /// Regular expressions (Rust `regex` syntax) whose matches are masked, e.g. an AGB
    /// code as `agb:[0-9]{8}`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub patterns: Vec<MaskPattern>,
}

fn yes() -> bool {
    true
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            bsn: true,
            patterns: Vec::new(),
        }
    }
}

/// A regular expression, compiled while the config is read so a bad one fails the load.
#[derive(Debug, Clone)]
pub struct MaskPattern(pub regex::Regex);

impl<'de> Deserialize<'de> for MaskPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        regex::Regex::new(&source)
            .map(MaskPattern)
            .map_err(|e| serde::de::Error::custom(format!("mask pattern `{source}`: {e}")))
    }
}

/// Applies a [`MaskConfig`].
pub struct Masker {
    bsn: bool,
    patterns: Vec<regex::Regex>,
}

impl Masker {
    pub fn new(config: &MaskConfig) -> Masker {
        Masker {
            bsn: config.bsn,
            patterns: config.patterns.iter().map(|p| p.0.clone()).collect(),
        }
    }

    /// `text` with every identifier masked; borrowed when there was none.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        if self.bsn {
            text = match mask_bsns(&text) {
                Cow::Owned(masked) => Cow::Owned(masked),
                Cow::Borrowed(_) => text,
            };
        }
        for pattern in &self.patterns {
            text = match pattern.replace_all(&text, PATTERN_MASK) {
                Cow::Owned(masked) => Cow::Owned(masked),
                Cow::Borrowed(_) => text,
            };
        }
        text
    }
}

/// Replaces every run of exactly 9 ASCII digits that passes the 11-check.
fn mask_bsns(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut masked = String::new();
    let mut copied = 0;
    let mut start = 0;
    while start < bytes.len() {
        if !bytes.get(start).is_some_and(u8::is_ascii_digit) {
            start += 1;
            continue;
        }
        let end = bytes
            .iter()
            .skip(start)
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |n| start + n);
        if let Some(run) = text.get(start..end)
            && is_bsn(run)
        {
            masked.push_str(text.get(copied..start).unwrap_or(""));
            masked.push_str(BSN_MASK);
            copied = end;
        }
        start = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    masked.push_str(text.get(copied..).unwrap_or(""));
    Cow::Owned(masked)
}

/// The BSN 11-check (elfproef): 9 digits whose weighted sum
/// 9·d1 + 8·d2 + … + 2·d8 − 1·d9 is divisible by 11.
pub fn is_bsn(digits: &str) -> bool {
    if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: i64 = digits
        .bytes()
        .zip([9, 8, 7, 6, 5, 4, 3, 2, -1])
        .map(|(digit, weight)| i64::from(digit - b'0') * weight)
        .sum();
    sum % 11 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(patterns: &[&str]) -> Masker {
        Masker::new(&MaskConfig {
            bsn: true,
            patterns: patterns
                .iter()
                .map(|p| MaskPattern(regex::Regex::new(p).unwrap()))
                .collect(),
        })
    }

    #[test]
    fn the_eleven_check_accepts_valid_bsns_only() {
        // 9·1+8·1+7·1+6·2+5·2+4·2+3·3+2·3−3 = 66 = 6·11
        assert!(is_bsn("111222333"));
        assert!(is_bsn("999999990"));
        // 147 is not a multiple of 11.
        assert!(!is_bsn("123456789"));
        assert!(!is_bsn("111222334"));
        assert!(!is_bsn("11122233"));
        assert!(!is_bsn("1112223333"));
        assert!(!is_bsn("11122233a"));
    }

    #[test]
    fn a_bsn_in_a_path_or_query_is_masked() {
        let masker = masker(&[]);
        assert_eq!(
            masker.mask("/fhir/Patient/111222333"),
            "/fhir/Patient/[bsn]"
        );
        assert_eq!(
            masker.mask("identifier=http://fhir.nl/fhir/NamingSystem/bsn|111222333&_count=10"),
            "identifier=http://fhir.nl/fhir/NamingSystem/bsn|[bsn]&_count=10"
        );
        assert_eq!(masker.mask("a=111222333&b=999999990"), "a=[bsn]&b=[bsn]");
    }

    #[test]
    fn other_nine_digit_numbers_are_not_masked() {
        let masker = masker(&[]);
        assert_eq!(masker.mask("/orders/123456789"), "/orders/123456789");
        // A valid BSN inside a longer number is not a BSN.
        assert_eq!(masker.mask("/ids/1112223330"), "/ids/1112223330");
        assert!(matches!(masker.mask("/plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn bsn_masking_can_be_turned_off() {
        let masker = Masker::new(&MaskConfig {
            bsn: false,
            patterns: Vec::new(),
        });
        assert_eq!(masker.mask("/Patient/111222333"), "/Patient/111222333");
    }

    #[test]
    fn configured_patterns_are_masked() {
        let masker = masker(&["agb:[0-9]{8}", "(?i)secret-[a-z]+"]);
        assert_eq!(
            masker.mask("/x?who=agb:12345678&k=Secret-abc&bsn=111222333"),
            "/x?who=[masked]&k=[masked]&bsn=[bsn]"
        );
    }

    #[test]
    fn a_bad_pattern_fails_with_its_text() {
        let error = serde_yaml_ng::from_str::<MaskConfig>("patterns: ['a(']").unwrap_err();
        assert!(error.to_string().contains("mask pattern `a(`"), "{error}");
    }
}
