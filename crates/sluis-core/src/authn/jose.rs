//! A strict reading of a compact JWS (RFC 7515 §7.1) and of the JWT claims in it
//! (RFC 7519, RFC 9068, RFC 8725), before and after the signature is checked.
//!
//! `jsonwebtoken` is kept for what it does well, the signature; the parsing is ours
//! because its lenient header and claims types let through what a verifier must refuse:
//! duplicate member names (each JSON parser picks a different one, RFC 8725 §3.9),
//! `crit` extensions nobody understands (RFC 7515 §4.1.11), a token without `aud`
//! (RFC 9068 §2.2), and claims of the wrong JSON type, which it reported as "not valid
//! JSON" or as a missing claim.

use std::collections::HashSet;

use base64::Engine as _;
use serde_json::{Map, Value as Json};

use super::AuthnError;

/// Why a token is refused, typed so that what depends on the kind of refusal (the
/// rejected-token cache, the challenge) never depends on the wording of a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed compact JWS, or its JSON breaks a rule: final.
    #[error("{0}")]
    Malformed(String),
    /// A claim is missing or of the wrong type, or the token breaks an issuer rule
    /// (audience count, lifetime, `typ`): final.
    #[error("{0}")]
    Claim(String),
    /// The header names an algorithm this issuer does not accept: final.
    #[error("algorithm `{0}` is not accepted")]
    RefusedAlgorithm(String),
    #[error("signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// Not final: time will mend it.
    #[error("token is not valid yet")]
    NotYetValid,
    /// Not final: time (or the issuer's clock) will mend it.
    #[error("token is issued in the future")]
    IssuedInFuture,
    /// Not final: the issuer may publish the key at the next rotation.
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// Not final: the key set may change (a key of another type or algorithm under this
    /// `kid`, or no key of the token's type at all).
    #[error("{0}")]
    KeyMismatch(String),
    /// A refusal from elsewhere (introspection, unloaded keys): passed on as it is, never
    /// remembered.
    #[error("{0}")]
    Other(AuthnError),
}

impl TokenError {
    /// Whether the token stays refused whatever happens next, so the refusal may be
    /// remembered by a hash of the token (the rejected-token cache): everything decided by
    /// the token's own bytes and the configuration, nothing that depends on the clock
    /// moving forward or the key set changing.
    pub fn is_final(&self) -> bool {
        match self {
            TokenError::Malformed(_)
            | TokenError::Claim(_)
            | TokenError::RefusedAlgorithm(_)
            | TokenError::BadSignature
            | TokenError::Expired
            | TokenError::WrongIssuer
            | TokenError::WrongAudience => true,
            TokenError::NotYetValid
            | TokenError::IssuedInFuture
            | TokenError::UnknownKey(_)
            | TokenError::KeyMismatch(_)
            | TokenError::Other(_) => false,
        }
    }
}

impl From<TokenError> for AuthnError {
    fn from(error: TokenError) -> AuthnError {
        match error {
            TokenError::Other(error) => error,
            error => AuthnError::Invalid(error.to_string()),
        }
    }
}

impl From<AuthnError> for TokenError {
    fn from(error: AuthnError) -> TokenError {
        TokenError::Other(error)
    }
}

/// Longest token-derived text put into a message, in characters of the output.
const ECHO_MAX: usize = 64;

/// A token-derived value made fit to echo in a challenge or body: printable ASCII only,
/// at most 64 characters, with `"`, `\`, `%` and every other byte percent-encoded so the
/// value stays unambiguous and fits an RFC 6750 `error_description`; `...` marks a cut.
/// The full value never leaves Sluis.
pub fn echo(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let mut piece = String::new();
        if matches!(c, ' '..='~') && !matches!(c, '"' | '\\' | '%' | '`') {
            piece.push(c);
        } else {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                piece.push_str(&format!("%{byte:02X}"));
            }
        }
        if out.len() + piece.len() > ECHO_MAX {
            out.push_str("...");
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// A compact JWS, split and with its header and payload parsed strictly.
pub struct Compact<'a> {
    pub header: Map<String, Json>,
    pub payload: Map<String, Json>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a str,
    pub signature: &'a str,
}

/// Splits and parses a compact JWS: exactly three base64url segments without padding,
/// header and payload UTF-8 JSON objects with no member name twice at any depth.
pub fn parse(token: &str) -> Result<Compact<'_>, TokenError> {
    let (header, payload, signing_input, signature) = split(token)?;
    if payload.is_empty() {
        return Err(TokenError::Malformed("token payload is empty".into()));
    }
    Ok(Compact {
        header,
        payload: object(payload, "payload")?,
        signing_input,
        signature,
    })
}

/// The signature layer of [`parse`]: the header parsed, the payload only decoded (a JWS
/// may sign any bytes; a JWT's are a JSON object, which [`parse`] then checks).
pub type Split<'a> = (Map<String, Json>, Vec<u8>, &'a str, &'a str);

pub fn split(token: &str) -> Result<Split<'_>, TokenError> {
    let malformed = |m: &str| TokenError::Malformed(m.into());
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(if parts.len() == 5 {
            malformed("encrypted tokens (JWE) are not accepted")
        } else {
            malformed("token is malformed")
        });
    };
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or_else(|| malformed("token is malformed"))?;
    let header = object(segment(header, "header")?, "header")?;
    let payload = match *payload {
        "" => Vec::new(),
        payload => segment(payload, "payload")?,
    };
    if !is_base64url(signature) {
        return Err(malformed("token is not valid base64url"));
    }
    Ok((header, payload, signing_input, signature))
}

fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn segment(text: &str, which: &str) -> Result<Vec<u8>, TokenError> {
    if text.is_empty() {
        return Err(TokenError::Malformed(format!("token {which} is empty")));
    }
    // RFC 7515 §2: base64url without padding, no whitespace, no line breaks; the decoder
    // also refuses non-zero trailing bits, so each token has one spelling.
    if !is_base64url(text) {
        return Err(TokenError::Malformed("token is not valid base64url".into()));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed("token is not valid base64url".into()))
}

fn object(bytes: Vec<u8>, which: &str) -> Result<Map<String, Json>, TokenError> {
    let text = String::from_utf8(bytes)
        .map_err(|_| TokenError::Malformed(format!("token {which} is not UTF-8")))?;
    let value = strict_json(&text).map_err(|e| {
        TokenError::Malformed(match e {
            StrictError::Duplicate(name) => {
                format!("token {which} has member `{}` twice", echo(&name))
            }
            StrictError::Syntax => format!("token {which} is not valid JSON"),
        })
    })?;
    match value {
        Json::Object(map) => Ok(map),
        _ => Err(TokenError::Malformed(format!(
            "token {which} must be a JSON object"
        ))),
    }
}

pub use crate::json::{StrictError, strict_json};

/// Header parameters registered by RFC 7515 §4.1: never allowed in `crit`.
const REGISTERED: [&str; 11] = [
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit",
];

/// Checks the header parameters Sluis reads or must refuse, and returns the `alg` as
/// written.
pub fn check_header(header: &Map<String, Json>) -> Result<&str, TokenError> {
    let malformed = |m: String| TokenError::Malformed(m);
    let alg = match header.get("alg") {
        None => return Err(malformed("token header has no `alg`".into())),
        Some(Json::String(alg)) if alg.is_empty() => {
            return Err(malformed("header `alg` is empty".into()));
        }
        Some(Json::String(alg)) => alg.as_str(),
        Some(_) => return Err(malformed("header `alg` must be a string".into())),
    };
    for name in ["kid", "typ", "cty"] {
        if header.get(name).is_some_and(|v| !v.is_string()) {
            return Err(malformed(format!("header `{name}` must be a string")));
        }
    }
    if header.contains_key("enc") {
        return Err(malformed("encrypted tokens (JWE) are not accepted".into()));
    }
    if header.contains_key("zip") {
        return Err(malformed(
            "header `zip` is not allowed in a signed token".into(),
        ));
    }
    if let Some(crit) = header.get("crit") {
        // RFC 7515 §4.1.11: a non-empty array of names present in the header, none of
        // them registered; the recipient must refuse any it does not understand, and
        // Sluis understands none.
        let Some(names) = crit.as_array().filter(|names| !names.is_empty()) else {
            return Err(malformed(
                "header `crit` must be a non-empty array of names".into(),
            ));
        };
        let mut seen = HashSet::new();
        for name in names {
            let Some(name) = name.as_str() else {
                return Err(malformed(
                    "header `crit` must be a non-empty array of names".into(),
                ));
            };
            if REGISTERED.contains(&name) {
                return Err(malformed(format!(
                    "header `crit` lists the registered parameter `{name}`"
                )));
            }
            if !seen.insert(name) || !header.contains_key(name) {
                return Err(malformed(format!(
                    "header `crit` lists `{}` twice or without the parameter",
                    echo(name)
                )));
            }
        }
        let first = names.first().and_then(Json::as_str).unwrap_or_default();
        return Err(malformed(format!(
            "header `crit` lists `{}`, an extension Sluis does not support",
            echo(first)
        )));
    }
    // RFC 7797: `b64: false` changes what the signature covers; it is only meaningful
    // through `crit`, which is refused above, so any `b64` but `true` is refused here.
    if header.get("b64").is_some_and(|b| b != &Json::Bool(true)) {
        return Err(malformed("header `b64` is not supported".into()));
    }
    Ok(alg)
}

/// What an issuer asks of a token's claims.
pub struct ClaimRules<'a> {
    pub iss: &'a str,
    pub audiences: &'a [String],
    pub leeway: i64,
    pub scope_claim: &'a str,
    /// Maximum `exp - iat` in seconds; `iat` is required when set.
    pub max_lifetime: Option<i64>,
}

/// A NumericDate (RFC 7519 §2): any JSON number, fractions allowed, in whole seconds.
pub(crate) fn numeric_date(
    claims: &Map<String, Json>,
    name: &str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Json::Number(n)) => match n.as_i64() {
            Some(n) => Ok(Some(n)),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                _ => Err(TokenError::Claim(format!("claim `{name}` is out of range"))),
            },
        },
        Some(_) => Err(TokenError::Claim(format!(
            "claim `{name}` must be a number"
        ))),
    }
}

/// Checks the registered claims: types always, values against the issuer's rules.
/// Returns `(exp, iat)`.
pub fn check_claims(
    claims: &Map<String, Json>,
    rules: &ClaimRules,
    now: i64,
) -> Result<(i64, Option<i64>), TokenError> {
    let claim = |m: String| TokenError::Claim(m);
    for name in ["sub", "jti", "client_id", "typ"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(claim(format!("claim `{name}` must be a string")));
        }
    }
    match claims.get("iss") {
        None => return Err(claim("token has no `iss`".into())),
        Some(Json::String(iss)) if iss == rules.iss => {}
        Some(Json::String(_)) => return Err(TokenError::WrongIssuer),
        Some(_) => return Err(claim("claim `iss` must be a string".into())),
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        None => Vec::new(),
        Some(Json::String(aud)) => vec![aud.as_str()],
        Some(Json::Array(list)) if !list.is_empty() && list.iter().all(Json::is_string) => {
            list.iter().filter_map(Json::as_str).collect()
        }
        Some(_) => {
            return Err(claim(
                "claim `aud` must be a string or a non-empty array of strings".into(),
            ));
        }
    };
    if !rules.audiences.is_empty() {
        // RFC 9068 §2.2: `aud` is required; one of them must be us.
        if !claims.contains_key("aud") {
            return Err(claim("token has no `aud`".into()));
        }
        if !audiences
            .iter()
            .any(|a| rules.audiences.iter().any(|ours| ours == a))
        {
            return Err(TokenError::WrongAudience);
        }
    }
    match claims.get(rules.scope_claim) {
        None | Some(Json::String(_)) => {}
        Some(Json::Array(list)) if list.iter().all(Json::is_string) => {}
        Some(_) => {
            return Err(claim(format!(
                "claim `{}` must be a string or an array of strings",
                echo(rules.scope_claim)
            )));
        }
    }
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| claim("token has no `exp`".into()))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    // A lifetime beyond the issuer's maximum is final, whatever the clock says: checked
    // before the times, so such a token is named for what is wrong with it for good.
    if let Some(max) = rules.max_lifetime {
        let Some(iat) = iat else {
            return Err(claim("token has no `iat`".into()));
        };
        let lifetime = exp.saturating_sub(iat);
        if lifetime > max {
            return Err(claim(format!(
                "token lifetime {lifetime}s exceeds the maximum of {max}s"
            )));
        }
    }
    if exp.saturating_add(rules.leeway) < now {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(rules.leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(rules.leeway)) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok((exp, iat))
}

/// A description of a verification failure fit for a client: what is wrong, not how.
pub(crate) fn brief(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet".into(),
        ErrorKind::InvalidSignature => "signature is invalid".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "algorithm is not accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no `{claim}`"),
        ErrorKind::InvalidClaimFormat(claim) => format!("claim `{claim}` is malformed"),
        ErrorKind::Base64(_) => "token is not valid base64url".into(),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => "token is not valid JSON".into(),
        ErrorKind::InvalidToken => "token is malformed".into(),
        _ => "token cannot be verified".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_short_printable_ascii() {
        assert_eq!(echo("k1"), "k1");
        assert_eq!(echo("a\"b\\c"), "a%22b%5Cc");
        assert_eq!(echo("Пр"), "%D0%9F%D1%80");
        let long = echo(&"x".repeat(10_000));
        assert_eq!(long.len(), 67);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        assert!(strict_json(r#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_ok());
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"[{"x":1,"x":1}]"#,
        ] {
            assert!(
                matches!(strict_json(text), Err(StrictError::Duplicate(_))),
                "{text}"
            );
        }
        assert!(matches!(strict_json("{"), Err(StrictError::Syntax)));
    }

    #[test]
    fn crit_is_refused_in_every_form() {
        let header = |text: &str| match strict_json(text) {
            Ok(Json::Object(map)) => map,
            _ => panic!("{text}"),
        };
        assert!(check_header(&header(r#"{"alg":"RS256"}"#)).is_ok());
        for text in [
            r#"{"alg":"RS256","crit":["x-unknown"],"x-unknown":1}"#,
            r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","crit":"x"}"#,
            r#"{"alg":"RS256","crit":["kid"],"kid":"a"}"#,
            r#"{"alg":"RS256","crit":["missing"]}"#,
            r#"{"alg":"RS256","b64":false}"#,
        ] {
            assert!(check_header(&header(text)).is_err(), "{text}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON value, nested a little.
        fn json_value() -> impl Strategy<Value = Json> {
            let leaf = prop_oneof![
                Just(Json::Null),
                any::<bool>().prop_map(Json::Bool),
                any::<i64>().prop_map(Json::from),
                any::<f64>().prop_map(Json::from),
                ".{0,12}".prop_map(Json::String),
                Just(Json::String("https://api.test".into())),
                Just(Json::String("https://issuer.test".into())),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                    prop::collection::btree_map(".{0,4}", inner, 0..4)
                        .prop_map(|m| Json::Object(m.into_iter().collect())),
                ]
            })
        }

        const NOW: i64 = 1_800_000_000;

        fn valid_claims() -> Map<String, Json> {
            match serde_json::json!({"iss": "https://issuer.test", "aud": "https://api.test",
                "sub": "s", "jti": "j", "client_id": "c", "scope": "read",
                "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600})
            {
                Json::Object(map) => map,
                _ => Map::new(),
            }
        }

        /// What a claim's value must be for the claims to be valid (RFC 7519, 9068).
        fn acceptable(name: &str, value: &Json) -> bool {
            let audiences = ["https://api.test".to_string()];
            let time = |ok: &dyn Fn(f64) -> bool| value.as_f64().is_some_and(ok);
            match name {
                "iss" => value == "https://issuer.test",
                "aud" => match value {
                    Json::String(a) => a == &audiences[0],
                    Json::Array(list) => {
                        list.iter().all(Json::is_string)
                            && list.contains(&Json::from(audiences[0].as_str()))
                    }
                    _ => false,
                },
                "sub" | "jti" | "client_id" => value.is_string(),
                "scope" => {
                    value.is_string()
                        || value
                            .as_array()
                            .is_some_and(|l| l.iter().all(Json::is_string))
                }
                "exp" => time(&|t| t >= (NOW - 30) as f64),
                "nbf" | "iat" => time(&|t| t <= (NOW + 31) as f64),
                _ => true,
            }
        }

        proptest! {
            #[test]
            fn any_bytes_as_a_token_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(compact) = parse(&text) {
                    let _ = check_header(&compact.header);
                }
            }

            #[test]
            fn any_segments_never_panic(header in json_value(), payload in json_value()) {
                let b64 = |v: &Json| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
                let token = format!("{}.{}.c2ln", b64(&header), b64(&payload));
                match parse(&token) {
                    Ok(compact) => {
                        prop_assert!(header.is_object() && payload.is_object());
                        let _ = check_header(&compact.header);
                    }
                    Err(error) => prop_assert!(error.is_final()),
                }
            }

            #[test]
            fn no_claim_of_a_wrong_value_is_accepted(
                name in prop::sample::select(vec!["iss", "aud", "sub", "jti", "client_id", "scope", "exp", "nbf", "iat"]),
                value in json_value(),
            ) {
                let mut claims = valid_claims();
                claims.insert(name.to_string(), value.clone());
                let audiences = ["https://api.test".to_string()];
                let rules = ClaimRules {
                    iss: "https://issuer.test",
                    audiences: &audiences,
                    leeway: 30,
                    scope_claim: "scope",
                    max_lifetime: None,
                };
                let accepted = check_claims(&claims, &rules, NOW).is_ok();
                if accepted {
                    prop_assert!(acceptable(name, &value), "{name} = {value} accepted");
                }
            }
        }
    }
}
