//! Masking identifiers in logged text: credentials (the values of credential-named
//! parameters such as `access_token=`, and anything shaped like a JWT), BSNs (Dutch
//! citizen numbers) recognised by the 11-check, and whatever else the operator names with
//! regular expressions.
//!
//! Credentials are masked by default because the client chooses where to put them: a
//! token sent as `?access_token=` is refused, but the refused request is still logged,
//! and its path, query and deny reason must not carry the token into a log.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// What a masked BSN is replaced with.
pub const BSN_MASK: &str = "[bsn]";
/// What a match of a configured pattern is replaced with.
pub const PATTERN_MASK: &str = "[masked]";
/// [`CREDENTIAL_MASK`]'s text, for `concat!`.
macro_rules! credential_mask {
    () => {
        "[credential]"
    };
}
/// What a credential (a credential-named parameter's value, a JWT) is replaced with.
pub const CREDENTIAL_MASK: &str = credential_mask!();
/// The replacement of a credential-named parameter: its separator and name kept, its value
/// [`CREDENTIAL_MASK`].
const PARAMETER_MASK: &str = concat!("${lead}${name}", credential_mask!());

/// Parameter names whose values are credentials, matched case-insensitively, with `_`
/// and `-` also matching their percent-encodings: OAuth 2.0 and OIDC parameters that
/// carry tokens, codes or client secrets, and the usual API-key and password names.
/// `key` is on the list: it is how several APIs take an API key, and a masked harmless
/// `key` costs an auditor less than a logged secret one.
pub const CREDENTIAL_PARAMETERS: &[&str] = &[
    "access_token",
    "token",
    "id_token",
    "refresh_token",
    "subject_token",
    "actor_token",
    "code",
    "device_code",
    "code_verifier",
    "client_secret",
    "assertion",
    "client_assertion",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// `decision_log.mask`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Mask credentials: the values of credential-named parameters (`access_token`,
    /// `token`, `id_token`, `refresh_token`, `code`, `client_secret`, `assertion`,
    /// `client_assertion`, `password`, `api_key`, `key`, ...) in paths, queries and
    /// reasons, and anything shaped like a JWT (`eyJ...` in three or more base64url
    /// segments) wherever it appears. Also applies to the service's own log. Turn off
    /// only to debug, never with real tokens.
    #[serde(default = "yes")]
    pub credentials: bool,
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
            credentials: true,
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
    credentials: bool,
    bsn: bool,
    patterns: Vec<regex::Regex>,
}

impl Masker {
    pub fn new(config: &MaskConfig) -> Masker {
        Masker {
            credentials: config.credentials,
            bsn: config.bsn,
            patterns: config.patterns.iter().map(|p| p.0.clone()).collect(),
        }
    }

    /// `text` with every identifier masked; borrowed when there was none.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        if self.credentials {
            text = match mask_credentials(&text) {
                Cow::Owned(masked) => Cow::Owned(masked),
                Cow::Borrowed(_) => text,
            };
        }
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

/// `text` with the value of every credential-named parameter and every JWT-shaped run
/// replaced by [`CREDENTIAL_MASK`]; borrowed when there was none.
pub fn mask_credentials(text: &str) -> Cow<'_, str> {
    static PATTERNS: std::sync::OnceLock<Option<(regex::Regex, regex::Regex)>> =
        std::sync::OnceLock::new();
    let Some((parameter, jwt)) = PATTERNS.get_or_init(credential_patterns) else {
        // The patterns are constants, tested below; should they ever fail to compile,
        // nothing of the text is worth the risk of logging it.
        return Cow::Owned(CREDENTIAL_MASK.to_owned());
    };
    // A parameter's name ends in `=` or `%3D`: text with neither has none (most paths),
    // and the parameter pattern, a long case-insensitive alternation, is not run.
    let may_have_parameter = memchr::memchr2(b'=', b'%', text.as_bytes()).is_some();
    let text = match may_have_parameter.then(|| parameter.replace_all(text, PARAMETER_MASK)) {
        Some(Cow::Owned(masked)) => Cow::Owned(masked),
        _ => Cow::Borrowed(text),
    };
    match jwt.replace_all(&text, CREDENTIAL_MASK) {
        Cow::Owned(masked) => Cow::Owned(masked),
        Cow::Borrowed(_) => text,
    }
}

fn credential_patterns() -> Option<(regex::Regex, regex::Regex)> {
    // The names are `[a-z0-9_-]`: nothing to escape, but `_` and `-` may come
    // percent-encoded.
    let names: Vec<String> = CREDENTIAL_PARAMETERS
        .iter()
        .map(|name| {
            name.replace('_', "(?:_|%5[Ff])")
                .replace('-', "(?:-|%2[Dd])")
        })
        .collect();
    // A parameter starts the text or follows a separator: of a query (`?`, `&`), of
    // matrix parameters (`;`), of a path (`/`), or of text around it (a space, a quote, a
    // backtick, a comma, a bracket). Its value runs to the next parameter, fragment,
    // space or quote, not to a `/`, which a secret may hold.
    let parameter = regex::Regex::new(&format!(
        r#"(?i)(?P<lead>^|[?&;/\s"'`,(\[{{])(?P<name>(?:{})(?:=|%3[Dd]))[^&;#\s"'`]*"#,
        names.join("|")
    ))
    .ok()?;
    // A JWS (three segments) or JWE (five): its header is base64url JSON, so it starts
    // with `eyJ` (`{"`). The dots may be percent-encoded.
    let jwt = regex::Regex::new(r"eyJ[A-Za-z0-9_-]*(?:(?:\.|%2[Ee])[A-Za-z0-9_-]*){2,4}").ok()?;
    Some((parameter, jwt))
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
            credentials: true,
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
            ..MaskConfig::default()
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

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXBhcnQ";

    #[test]
    fn credential_parameters_are_masked_in_queries_paths_and_reasons() {
        let masker = masker(&[]);
        assert_eq!(
            masker.mask(&format!("a=1&access_token={JWT}&b=2")),
            "a=1&access_token=[credential]&b=2"
        );
        assert_eq!(
            masker.mask("code=abc123&state=xyz&client_secret=s3cr/et"),
            "code=[credential]&state=xyz&client_secret=[credential]"
        );
        assert_eq!(
            masker.mask("Password=hunter2;API-KEY=k-1&apikey=k-2&key=k-3"),
            "Password=[credential];API-KEY=[credential]&apikey=[credential]&key=[credential]"
        );
        // Percent-encoded names and separators are the same parameter to a server.
        assert_eq!(
            masker.mask("access%5Ftoken%3Dopaque-1&refresh_token=opaque-2"),
            "access%5Ftoken%3D[credential]&refresh_token=[credential]"
        );
        assert_eq!(
            masker.mask("/api/x;token=opaque-3/y"),
            "/api/x;token=[credential]"
        );
        assert_eq!(
            masker.mask("unknown parameter `id_token=opaque-4`"),
            "unknown parameter `id_token=[credential]`"
        );
        // Names that merely contain a credential name are left alone.
        assert_eq!(
            masker.mask("monkey=1&tokens_left=2&passcode=3"),
            "monkey=1&tokens_left=2&passcode=3"
        );
    }

    #[test]
    fn a_jwt_is_masked_wherever_it_is() {
        let masker = masker(&[]);
        assert_eq!(masker.mask(&format!("/api/{JWT}/x")), "/api/[credential]/x");
        assert_eq!(masker.mask(&format!("q={JWT}")), "q=[credential]");
        assert_eq!(
            masker.mask(&format!("bad token `{JWT}`")),
            "bad token `[credential]`"
        );
        let encoded = JWT.replace('.', "%2E");
        assert_eq!(masker.mask(&format!("q={encoded}")), "q=[credential]");
        // A JWE has five segments.
        assert_eq!(
            masker.mask("t=eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d&z=1"),
            "t=[credential]&z=1"
        );
    }

    #[test]
    fn credential_masking_can_be_turned_off() {
        let masker = Masker::new(&MaskConfig {
            credentials: false,
            ..MaskConfig::default()
        });
        assert_eq!(
            masker.mask("access_token=opaque-1"),
            "access_token=opaque-1"
        );
    }

    /// The text the properties below are drawn from: credential names, separators, `=` and
    /// its encoding, a JWT's pieces, digits and other text, in any order.
    fn loggable_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            proptest::sample::select(CREDENTIAL_PARAMETERS).prop_map(str::to_owned),
            proptest::sample::select(vec![
                "=",
                "%3D",
                "%3d",
                "%5F",
                "%2D",
                "&",
                "?",
                ";",
                "/",
                " ",
                "`",
                "\"",
                "'",
                "#",
                ".",
                "%2E",
                "eyJ",
                "eyJhbGciOiJSUzI1NiJ9",
                "111222333",
                "[",
                "(",
                ","
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9_%-]{0,6}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        /// Skipping the parameter pattern where the text has neither `=` nor `%` changes
        /// nothing: the masked text is what both patterns, always run, make of it.
        #[test]
        fn the_parameter_prefilter_changes_nothing(text in loggable_text()) {
            let (parameter, jwt) = credential_patterns().unwrap();
            let replacement = format!("${{lead}}${{name}}{CREDENTIAL_MASK}");
            let step = parameter.replace_all(&text, replacement.as_str()).into_owned();
            let expected = jwt.replace_all(&step, CREDENTIAL_MASK).into_owned();
            proptest::prop_assert_eq!(mask_credentials(&text).into_owned(), expected);
        }

        /// Nothing shaped like a JWT is left in masked text, and text with nothing to mask
        /// is given back as it was, without a copy.
        #[test]
        fn no_jwt_survives_masking(text in loggable_text()) {
            let (_, jwt) = credential_patterns().unwrap();
            let masked = masker(&[]).mask(&text);
            proptest::prop_assert!(!jwt.is_match(&masked), "{masked}");
            if let Cow::Borrowed(same) = masked {
                proptest::prop_assert_eq!(same, text.as_str());
            }
        }
    }

    #[test]
    fn a_bad_pattern_fails_with_its_text() {
        let error = serde_yaml_ng::from_str::<MaskConfig>("patterns: ['a(']").unwrap_err();
        assert!(error.to_string().contains("mask pattern `a(`"), "{error}");
    }
}
