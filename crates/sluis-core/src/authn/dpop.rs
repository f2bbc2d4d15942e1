//! DPoP proofs (RFC 9449): checking the `DPoP` header of a request that carries a
//! DPoP-bound access token, as a resource server does (§4.3, §7.1).
//!
//! [`verify_proof`] is a pure function of the proof, the request and the clock: it checks
//! the proof's form, its signature with the key in its own `jwk` header and every claim, and
//! returns the key's RFC 7638 thumbprint (to compare with the token's `cnf.jkt`) and the
//! proof's `jti`. Remembering `jti`s, so that a proof is used once, is the job of
//! [`super::replay::ReplayCache`]; comparing `jkt` with the token is the caller's.
//!
//! Cheap checks (form, header, claims) run before the signature, so garbage costs no
//! public-key operation; the nonce is checked last, so `use_dpop_nonce` is only ever the
//! answer to an otherwise valid proof. Error messages never echo the proof's contents: they
//! may end up in a `WWW-Authenticate` `error_description`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// Proofs longer than this are refused unparsed. A proof with a 4096-bit RSA key is about
/// 1.2 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// The longest `jti` accepted, in characters.
pub const MAX_JTI_CHARS: usize = 256;
/// RSA keys smaller than this are refused (RFC 7518 §3.3); larger than the maximum too.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;
/// JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4;
/// RFC 8037 §2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What a proof must match: the request it came with and the server's rules.
#[derive(Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The `DPoP` header value (one JWT).
    pub proof: &'a str,
    /// The HTTP method of the request.
    pub method: &'a str,
    /// The request URL as the resource server sees it: `scheme://host[:port]/path`. A query
    /// or fragment is ignored, on both sides.
    pub url: &'a str,
    /// The access token the proof must be bound to by its `ath` claim.
    pub access_token: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// `iat` may be at most this many seconds in the past...
    pub max_age: i64,
    /// ...and at most this many in the future.
    pub leeway: i64,
    /// The accepted signature algorithms. Symmetric ones are ignored: a proof is always
    /// signed with a private key.
    pub algorithms: &'a [Algorithm],
    /// Whether a nonce is one the server accepts, when it requires one (RFC 9449 §9): a
    /// proof without a `nonce`, or with one this refuses, is [`DpopError::UseNonce`].
    pub nonce: Option<&'a dyn Fn(&str) -> bool>,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 SHA-256 thumbprint of the proof's public key, base64url: compare with the
    /// access token's `cnf.jkt`.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

impl VerifiedProof {
    /// The key under which to remember this proof in the replay cache: a hash of the key's
    /// thumbprint and the `jti`, so one client's `jti`s cannot collide with another's.
    pub fn replay_key(&self) -> String {
        super::replay::proof_key(&self.jkt, &self.jti)
    }

    /// How long this proof must be remembered: until no replica could still accept it, i.e.
    /// until `iat + max_age` plus `leeway` for clocks that lag (at least a second).
    pub fn replay_ttl(&self, now: i64, max_age: i64, leeway: i64) -> std::time::Duration {
        let remaining = self
            .iat
            .saturating_add(max_age)
            .saturating_sub(now)
            .max(0)
            .saturating_add(leeway.max(0))
            .saturating_add(1);
        std::time::Duration::from_secs(u64::try_from(remaining).unwrap_or(1))
    }
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpopError {
    /// 401 with `error="invalid_dpop_proof"`.
    #[error("{0}")]
    Invalid(String),
    /// The proof is fine but lacks the nonce the server requires, or carries another one:
    /// 401 with `error="use_dpop_nonce"` and a fresh `DPoP-Nonce` header (RFC 9449 §9).
    #[error("a DPoP nonce is required")]
    UseNonce,
}

fn invalid(message: impl Into<String>) -> DpopError {
    DpopError::Invalid(message.into())
}

/// Checks a DPoP proof against the request it came with (RFC 9449 §4.3).
pub fn verify_proof(check: &ProofCheck) -> Result<VerifiedProof, DpopError> {
    let proof = check.proof.trim_matches([' ', '\t']);
    if proof.is_empty() {
        return Err(invalid("empty DPoP proof"));
    }
    if proof.len() > MAX_PROOF_BYTES {
        return Err(invalid(format!(
            "DPoP proof is larger than {MAX_PROOF_BYTES} bytes"
        )));
    }
    // Envoy joins repeated headers with commas; a compact JWS never contains one.
    if proof.contains(',') {
        return Err(invalid("more than one DPoP proof"));
    }
    let parts: Vec<&str> = proof.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return Err(invalid("DPoP proof is not a signed JWT"));
    };
    if [header_b64, payload_b64, signature_b64]
        .iter()
        .any(|part| part.is_empty() || !part.bytes().all(is_base64url))
    {
        return Err(invalid("DPoP proof is not a signed JWT"));
    }
    let header =
        json_object(header_b64).ok_or_else(|| invalid("DPoP proof header is malformed"))?;
    let claims =
        json_object(payload_b64).ok_or_else(|| invalid("DPoP proof claims are malformed"))?;

    // The header: explicit type, an acceptable asymmetric algorithm, a public key.
    let typ = header.get("typ").and_then(Json::as_str).unwrap_or("");
    if !(typ.eq_ignore_ascii_case("dpop+jwt") || typ.eq_ignore_ascii_case("application/dpop+jwt")) {
        return Err(invalid("DPoP proof must have typ dpop+jwt"));
    }
    if header.contains_key("crit") {
        return Err(invalid("DPoP proof has critical header parameters"));
    }
    let alg = proof_algorithm(&header, check.algorithms)?;
    let jwk_value = header
        .get("jwk")
        .ok_or_else(|| invalid("DPoP proof has no jwk header"))?;
    check_public_key(jwk_value, alg)?;

    // The claims: this request, now, this token.
    let htm = claims.get("htm").and_then(Json::as_str);
    if htm != Some(check.method) {
        return Err(invalid("DPoP proof htm does not match the request method"));
    }
    let htu = claims
        .get("htu")
        .and_then(Json::as_str)
        .ok_or_else(|| invalid("DPoP proof has no htu"))?;
    let request_url = normalize_http_uri(check.url)
        .ok_or_else(|| invalid("the request URL cannot be compared with htu"))?;
    if normalize_http_uri(htu).as_deref() != Some(request_url.as_str()) {
        return Err(invalid("DPoP proof htu does not match the request URL"));
    }
    let iat =
        numeric_date(claims.get("iat")).ok_or_else(|| invalid("DPoP proof has no valid iat"))?;
    if check.now.saturating_sub(iat) > check.max_age {
        return Err(invalid("DPoP proof is too old"));
    }
    if iat.saturating_sub(check.now) > check.leeway {
        return Err(invalid("DPoP proof is issued in the future"));
    }
    let jti = match claims.get("jti").and_then(Json::as_str) {
        Some(jti) if !jti.is_empty() && jti.chars().count() <= MAX_JTI_CHARS => jti,
        Some(jti) if !jti.is_empty() => {
            return Err(invalid(format!(
                "DPoP proof jti is longer than {MAX_JTI_CHARS} characters"
            )));
        }
        _ => return Err(invalid("DPoP proof has no jti")),
    };
    let ath = claims
        .get("ath")
        .and_then(Json::as_str)
        .ok_or_else(|| invalid("DPoP proof has no ath"))?;
    if ath != access_token_hash(check.access_token) {
        return Err(invalid("DPoP proof ath does not match the access token"));
    }

    // The signature, with the key the proof carries.
    let jwk: Jwk = serde_json::from_value(jwk_value.clone())
        .map_err(|_| invalid("DPoP proof jwk is not a supported key"))?;
    let key = DecodingKey::from_jwk(&jwk)
        .map_err(|_| invalid("DPoP proof jwk is not a supported key"))?;
    let message = proof
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or_else(|| invalid("DPoP proof is not a JWS"))?;
    match jsonwebtoken::crypto::verify(signature_b64, message.as_bytes(), &key, alg) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(invalid("DPoP proof signature is invalid")),
    }
    // `check_public_key` has checked the members the thumbprint reads: it cannot fail here.
    let jkt = thumbprint(&jwk)?;

    if let Some(accepts) = check.nonce
        && !claims
            .get("nonce")
            .and_then(Json::as_str)
            .is_some_and(accepts)
    {
        return Err(DpopError::UseNonce);
    }

    Ok(VerifiedProof {
        jkt,
        jti: jti.to_string(),
        iat,
    })
}

/// `ath`: base64url of the SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url, as `jsonwebtoken`
/// computes it. A symmetric (`oct`) key is refused: a proof's key is public.
pub fn jwk_thumbprint(jwk: &Json) -> Result<String, DpopError> {
    if jwk.get("kty").and_then(Json::as_str) == Some("oct") {
        return Err(invalid("jwk has an unsupported kty"));
    }
    let jwk: Jwk =
        serde_json::from_value(jwk.clone()).map_err(|_| invalid("jwk is not a supported key"))?;
    thumbprint(&jwk)
}

fn thumbprint(jwk: &Jwk) -> Result<String, DpopError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| invalid("jwk is not a supported key"))
}

/// The header's `alg`, if it is asymmetric and accepted.
fn proof_algorithm(
    header: &Map<String, Json>,
    accepted: &[Algorithm],
) -> Result<Algorithm, DpopError> {
    let Some(name) = header.get("alg").and_then(Json::as_str) else {
        return Err(invalid("DPoP proof has no alg"));
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(invalid("DPoP proof alg none is never accepted"));
    }
    let alg: Algorithm = name
        .parse()
        .map_err(|_| invalid("DPoP proof alg is not supported"))?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(invalid(
            "DPoP proof must be signed with an asymmetric algorithm",
        ));
    }
    if !accepted.contains(&alg) {
        return Err(invalid(format!("DPoP proof alg {alg:?} is not accepted")));
    }
    Ok(alg)
}

/// The `jwk` header must be a public key of the kind `alg` needs, of a sensible size.
fn check_public_key(jwk: &Json, alg: Algorithm) -> Result<(), DpopError> {
    let Some(key) = jwk.as_object() else {
        return Err(invalid("DPoP proof jwk is not a JSON object"));
    };
    if PRIVATE_MEMBERS.iter().any(|name| key.contains_key(*name)) {
        return Err(invalid("DPoP proof jwk contains private key material"));
    }
    let text = |name: &str| key.get(name).and_then(Json::as_str);
    let decoded_len = |name: &str| {
        text(name)
            .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
            .map(|bytes| bytes.len())
    };
    let mismatch = || invalid("DPoP proof jwk does not fit its alg");
    match alg.family() {
        AlgorithmFamily::Rsa => {
            if text("kty") != Some("RSA") {
                return Err(mismatch());
            }
            let modulus = text("n")
                .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                .ok_or_else(|| invalid("DPoP proof jwk has no valid n"))?;
            let bits = bit_length(&modulus);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(invalid(format!(
                    "DPoP proof RSA key must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
                )));
            }
            if decoded_len("e").is_none_or(|len| len == 0) {
                return Err(invalid("DPoP proof jwk has no valid e"));
            }
        }
        AlgorithmFamily::Ec => {
            let (crv, size) = match alg {
                Algorithm::ES256 => ("P-256", 32),
                Algorithm::ES384 => ("P-384", 48),
                _ => return Err(mismatch()),
            };
            if text("kty") != Some("EC") || text("crv") != Some(crv) {
                return Err(mismatch());
            }
            if decoded_len("x") != Some(size) || decoded_len("y") != Some(size) {
                return Err(invalid("DPoP proof jwk has invalid coordinates"));
            }
        }
        AlgorithmFamily::Ed => {
            if text("kty") != Some("OKP") || text("crv") != Some("Ed25519") {
                return Err(mismatch());
            }
            if decoded_len("x") != Some(32) {
                return Err(invalid("DPoP proof jwk has an invalid x"));
            }
        }
        AlgorithmFamily::Hmac => return Err(mismatch()),
    }
    // A key that names its algorithm must name this one.
    if let Some(key_alg) = key.get("alg")
        && key_alg.as_str() != Some(algorithm_name(alg))
    {
        return Err(mismatch());
    }
    Ok(())
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "",
    }
}

fn bit_length(big_endian: &[u8]) -> usize {
    let mut bytes = big_endian.iter().skip_while(|b| **b == 0);
    match bytes.next() {
        Some(first) => (8 - first.leading_zeros() as usize) + 8 * bytes.count(),
        None => 0,
    }
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A proof's header or claims: a JSON object naming no member twice (as access tokens,
/// RFC 8725 §3.9), so no two parsers can read different proofs from the same bytes.
fn json_object(part: &str) -> Option<Map<String, Json>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match super::jose::strict_json(std::str::from_utf8(&bytes).ok()?).ok()? {
        Json::Object(map) => Some(map),
        _ => None,
    }
}

/// A JWT NumericDate as whole seconds; fractions are cut off.
fn numeric_date(value: Option<&Json>) -> Option<i64> {
    let number = value?.as_number()?;
    if let Some(seconds) = number.as_i64() {
        return Some(seconds);
    }
    let seconds = number.as_f64()?;
    // `as` saturates; absurd values fail the window check anyway.
    seconds.is_finite().then_some(seconds.floor() as i64)
}

/// An `http(s)` URI in the form `htu` is compared in: without query and fragment, scheme
/// and host lowercased, the scheme's default port dropped, an empty path as `/`,
/// percent-encodings normalised and dot segments removed (RFC 3986 §6.2.2, §6.2.3).
/// `None` when it is not an absolute URI with an authority.
pub fn normalize_http_uri(uri: &str) -> Option<String> {
    let uri = uri.split('#').next().unwrap_or("");
    let uri = uri.split('?').next().unwrap_or("");
    let (scheme, rest) = uri.split_once("://")?;
    let mut scheme_chars = scheme.chars();
    if !scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        let end = host_port.find(']')?;
        let (host, after) = host_port.split_at(end + 1);
        match after {
            "" => (host, ""),
            _ => (host, after.strip_prefix(':')?),
        }
    } else {
        match host_port.rfind(':') {
            Some(colon) => host_port
                .split_at_checked(colon)
                .map(|(host, port)| (host, port.strip_prefix(':').unwrap_or(port)))?,
            None => (host_port, ""),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return None;
    }
    let port = match port {
        "" => None,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.parse::<u16>().ok()?),
        _ => return None,
    };
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let port = match port {
        Some(port) if Some(port) != default_port => format!(":{port}"),
        _ => String::new(),
    };
    let path = normalize_percent_encoding(path)?;
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        remove_dot_segments(&path)
    };
    Some(format!(
        "{scheme}://{}{}{port}{path}",
        normalize_percent_encoding(userinfo)?,
        host.to_ascii_lowercase()
    ))
}

/// Decodes percent-encoded unreserved characters and uppercases the hex digits of the rest.
fn normalize_percent_encoding(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        if byte == b'%'
            && let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2)))
        {
            let decoded = (high * 16 + low) as u8;
            if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                out.push(decoded);
            } else {
                out.push(b'%');
                out.extend(format!("{decoded:02X}").bytes());
            }
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("/.").filter(|r| r.starts_with('/')) {
            input = rest;
        } else if input == "/." {
            input = "/";
        } else if let Some(rest) = input.strip_prefix("/..").filter(|r| r.starts_with('/')) {
            input = rest;
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "/.." {
            input = "/";
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "." || input == ".." {
            input = "";
        } else {
            // The first segment, with its leading `/` if any.
            let end = input
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == '/')
                .map_or(input.len(), |(i, _)| i);
            let (segment, rest) = input.split_at_checked(end).unwrap_or((input, ""));
            output.push_str(segment);
            input = rest;
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const URL: &str = "https://api.example.com/v1/things";
    const TOKEN: &str = "the-access-token";
    const ALL: &[Algorithm] = &[
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ];

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The public JWK with this kid from the fixtures, without kid and use.
    fn public_jwk(kid: &str) -> Json {
        let set: Json = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        let mut key = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone();
        let object = key.as_object_mut().unwrap();
        object.remove("kid");
        object.remove("use");
        key
    }

    struct Signer {
        alg: Algorithm,
        key: EncodingKey,
        jwk: Json,
    }

    fn ec() -> Signer {
        Signer {
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(&fixture("ec.pem")).unwrap(),
            jwk: public_jwk("ec-1"),
        }
    }

    fn ed() -> Signer {
        Signer {
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(&fixture("ed25519.pem")).unwrap(),
            jwk: public_jwk("ed-1"),
        }
    }

    fn rsa() -> Signer {
        Signer {
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap(),
            jwk: public_jwk("rsa-1"),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A compact JWS of exactly this header and these claims.
    fn sign_raw(header: &Json, claims: &Json, key: &EncodingKey, alg: Algorithm) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    }

    fn header(signer: &Signer) -> Json {
        json!({"typ": "dpop+jwt", "alg": format!("{:?}", signer.alg), "jwk": signer.jwk})
    }

    fn claims() -> Json {
        json!({
            "jti": "e1j3V_bKic8-LAEB",
            "htm": "GET",
            "htu": URL,
            "iat": NOW,
            "ath": access_token_hash(TOKEN),
        })
    }

    fn proof_with(signer: &Signer, edit: impl FnOnce(&mut Json, &mut Json)) -> String {
        let mut header = header(signer);
        let mut claims = claims();
        edit(&mut header, &mut claims);
        sign_raw(&header, &claims, &signer.key, signer.alg)
    }

    fn check(proof: &str) -> ProofCheck<'_> {
        ProofCheck {
            proof,
            method: "GET",
            url: URL,
            access_token: TOKEN,
            now: NOW,
            max_age: 60,
            leeway: 5,
            algorithms: ALL,
            nonce: None,
        }
    }

    fn verify(proof: &str) -> Result<VerifiedProof, DpopError> {
        verify_proof(&check(proof))
    }

    #[track_caller]
    fn assert_invalid(result: Result<VerifiedProof, DpopError>, expected: &str) {
        match result {
            Err(DpopError::Invalid(message)) => assert!(
                message.contains(expected),
                "expected `{expected}`, got `{message}`"
            ),
            other => panic!("expected Invalid(`{expected}`), got {other:?}"),
        }
    }

    #[test]
    fn valid_proofs_with_each_key_type() {
        for signer in [ec(), ed(), rsa()] {
            let proof = proof_with(&signer, |_, _| {});
            let verified = verify(&proof).unwrap_or_else(|e| panic!("{:?}: {e}", signer.alg));
            assert_eq!(verified.jkt, jwk_thumbprint(&signer.jwk).unwrap());
            assert_eq!(verified.jti, "e1j3V_bKic8-LAEB");
            assert_eq!(verified.iat, NOW);
        }
    }

    #[test]
    fn proofs_naming_a_member_twice_are_refused() {
        // Issue #15: two `htu` (or `ath`) would let two parsers read two proofs.
        let signer = ec();
        let header = b64(header(&signer).to_string().as_bytes());
        let claims = claims().to_string();
        let twice = claims.replacen("\"htm\":\"GET\"", "\"htm\":\"POST\",\"htm\":\"GET\"", 1);
        assert_ne!(twice, claims);
        let message = format!("{header}.{}", b64(twice.as_bytes()));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &signer.key, signer.alg).unwrap();
        assert_invalid(
            verify(&format!("{message}.{signature}")),
            "DPoP proof claims are malformed",
        );
    }

    #[test]
    fn proof_made_with_jsonwebtoken_header_is_accepted() {
        let signer = ec();
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(signer.jwk.clone()).unwrap());
        let proof = jsonwebtoken::encode(&header, &claims(), &signer.key).unwrap();
        assert!(verify(&proof).is_ok());
    }

    #[test]
    fn thumbprint_matches_jsonwebtoken() {
        for signer in [ec(), rsa()] {
            let jwk: Jwk = serde_json::from_value(signer.jwk.clone()).unwrap();
            assert_eq!(
                jwk_thumbprint(&signer.jwk).unwrap(),
                jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                    .unwrap()
            );
        }
    }

    #[test]
    fn thumbprint_of_rfc_7638_example() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn thumbprint_of_rfc_8037_ed25519_example() {
        // RFC 8037 appendix A.3.
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn thumbprint_refuses_incomplete_or_unknown_keys() {
        assert!(jwk_thumbprint(&json!({"kty": "EC", "crv": "P-256", "x": "AA"})).is_err());
        assert!(jwk_thumbprint(&json!({"kty": "oct", "k": "AA"})).is_err());
        assert!(jwk_thumbprint(&json!({"kty": "RSA", "n": 1, "e": "AQAB"})).is_err());
        assert!(jwk_thumbprint(&json!("RSA")).is_err());
    }

    #[test]
    fn ath_of_rfc_9449_example() {
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn wrong_method_is_refused() {
        let proof = proof_with(&ec(), |_, c| c["htm"] = json!("POST"));
        assert_invalid(verify(&proof), "htm");
        // Methods are case-sensitive.
        let proof = proof_with(&ec(), |_, c| c["htm"] = json!("get"));
        assert_invalid(verify(&proof), "htm");
    }

    #[test]
    fn wrong_url_is_refused() {
        for htu in [
            "https://api.example.com/v1/other",
            "http://api.example.com/v1/things",
            "https://evil.example.com/v1/things",
            "https://api.example.com:8443/v1/things",
            "https://api.example.com/v1/things/",
            "/v1/things",
        ] {
            let proof = proof_with(&ec(), |_, c| c["htu"] = json!(htu));
            assert_invalid(verify(&proof), "htu");
        }
        let proof = proof_with(&ec(), |_, c| c["htu"] = json!(7));
        assert_invalid(verify(&proof), "no htu");
    }

    #[test]
    fn url_query_fragment_and_normalisation_are_ignored() {
        for htu in [
            "https://api.example.com/v1/things?page=2",
            "https://api.example.com/v1/things#top",
            "HTTPS://API.Example.COM/v1/things",
            "https://api.example.com:443/v1/things",
            "https://api.example.com/v1/./x/../things",
            "https://api.example.com/v1/%74hings",
        ] {
            let proof = proof_with(&ec(), |_, c| c["htu"] = json!(htu));
            assert!(verify(&proof).is_ok(), "{htu}");
        }
        // And on the request's side.
        let proof = proof_with(&ec(), |_, _| {});
        let mut request = check(&proof);
        request.url = "https://api.example.com/v1/things?id=1";
        assert!(verify_proof(&request).is_ok());
    }

    #[test]
    fn normalisation() {
        let n = |uri| normalize_http_uri(uri);
        assert_eq!(n("HTTP://Host:80").as_deref(), Some("http://host/"));
        assert_eq!(
            n("https://h:8443/a?q#f").as_deref(),
            Some("https://h:8443/a")
        );
        assert_eq!(n("https://h/a/b/../../c").as_deref(), Some("https://h/c"));
        assert_eq!(n("https://h/a%2fb").as_deref(), Some("https://h/a%2Fb"));
        assert_eq!(n("https://[::1]:443/x").as_deref(), Some("https://[::1]/x"));
        assert_eq!(
            n("https://h/%e2%82%ac").as_deref(),
            Some("https://h/%E2%82%AC")
        );
        assert_eq!(n("https://h:x/"), None);
        assert_eq!(n("https:///path"), None);
        assert_eq!(n("no-scheme"), None);
        assert_eq!(n("1http://h/"), None);
    }

    #[test]
    fn stale_and_future_iat_are_refused() {
        let proof = proof_with(&ec(), |_, c| c["iat"] = json!(NOW - 61));
        assert_invalid(verify(&proof), "too old");
        let proof = proof_with(&ec(), |_, c| c["iat"] = json!(NOW - 60));
        assert!(verify(&proof).is_ok());
        let proof = proof_with(&ec(), |_, c| c["iat"] = json!(NOW + 6));
        assert_invalid(verify(&proof), "future");
        let proof = proof_with(&ec(), |_, c| c["iat"] = json!(NOW + 5));
        assert!(verify(&proof).is_ok());
        let proof = proof_with(&ec(), |_, c| c["iat"] = json!(NOW as f64 + 0.5));
        assert!(verify(&proof).is_ok());
        let proof = proof_with(&ec(), |_, c| c["iat"] = json!(NOW.to_string()));
        assert_invalid(verify(&proof), "iat");
        let proof = proof_with(&ec(), |_, c| {
            c.as_object_mut().unwrap().remove("iat");
        });
        assert_invalid(verify(&proof), "iat");
    }

    #[test]
    fn wrong_or_missing_ath_is_refused() {
        let proof = proof_with(&ec(), |_, c| c["ath"] = json!(access_token_hash("other")));
        assert_invalid(verify(&proof), "ath");
        let proof = proof_with(&ec(), |_, c| {
            c.as_object_mut().unwrap().remove("ath");
        });
        assert_invalid(verify(&proof), "no ath");
    }

    #[test]
    fn missing_empty_or_long_jti_is_refused() {
        let proof = proof_with(&ec(), |_, c| {
            c.as_object_mut().unwrap().remove("jti");
        });
        assert_invalid(verify(&proof), "no jti");
        let proof = proof_with(&ec(), |_, c| c["jti"] = json!(""));
        assert_invalid(verify(&proof), "no jti");
        let proof = proof_with(&ec(), |_, c| c["jti"] = json!("x".repeat(257)));
        assert_invalid(verify(&proof), "longer than 256");
        let proof = proof_with(&ec(), |_, c| c["jti"] = json!("x".repeat(256)));
        assert!(verify(&proof).is_ok());
    }

    #[test]
    fn wrong_typ_is_refused() {
        for typ in [json!("JWT"), json!("at+jwt"), json!(null), json!(1)] {
            let proof = proof_with(&ec(), |h, _| h["typ"] = typ.clone());
            assert_invalid(verify(&proof), "typ");
        }
        let proof = proof_with(&ec(), |h, _| {
            h.as_object_mut().unwrap().remove("typ");
        });
        assert_invalid(verify(&proof), "typ");
    }

    #[test]
    fn alg_none_is_refused() {
        let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk("ec-1")});
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        assert_invalid(verify(&unsigned), "not a signed JWT");
        assert_invalid(verify(&format!("{unsigned}AAAA")), "none");
    }

    #[test]
    fn symmetric_algorithms_are_refused_even_when_configured() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let header = json!({
            "typ": "dpop+jwt",
            "alg": "HS256",
            "jwk": {"kty": "oct", "k": b64(secret)},
        });
        let proof = sign_raw(
            &header,
            &claims(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        );
        let mut request = check(&proof);
        request.algorithms = &[Algorithm::HS256, Algorithm::ES256];
        assert_invalid(verify_proof(&request), "asymmetric");
        assert_invalid(verify(&proof), "asymmetric");
    }

    #[test]
    fn algorithm_outside_the_list_is_refused() {
        let proof = proof_with(&rsa(), |_, _| {});
        let mut request = check(&proof);
        request.algorithms = &[Algorithm::ES256];
        assert_invalid(verify_proof(&request), "not accepted");
    }

    #[test]
    fn private_key_material_is_refused() {
        let proof = proof_with(&ec(), |h, _| {
            h["jwk"]["d"] = json!("870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE");
        });
        assert_invalid(verify(&proof), "private key");
        let proof = proof_with(&rsa(), |h, _| h["jwk"]["p"] = json!("AQAB"));
        assert_invalid(verify(&proof), "private key");
    }

    #[test]
    fn missing_or_mismatched_jwk_is_refused() {
        let proof = proof_with(&ec(), |h, _| {
            h.as_object_mut().unwrap().remove("jwk");
        });
        assert_invalid(verify(&proof), "no jwk");
        // An Ed25519 key in an ES256 proof.
        let proof = proof_with(&ec(), |h, _| h["jwk"] = public_jwk("ed-1"));
        assert_invalid(verify(&proof), "does not fit");
        // A key that says it is for another algorithm.
        let proof = proof_with(&ec(), |h, _| h["jwk"]["alg"] = json!("ES384"));
        assert_invalid(verify(&proof), "does not fit");
        // Truncated coordinates.
        let proof = proof_with(&ec(), |h, _| h["jwk"]["x"] = json!("AAAA"));
        assert_invalid(verify(&proof), "coordinates");
        // A small RSA key.
        let proof = proof_with(&rsa(), |h, _| h["jwk"]["n"] = json!(b64(&[0xff; 128])));
        assert_invalid(verify(&proof), "bits");
    }

    #[test]
    fn signature_by_another_key_is_refused() {
        let other = EncodingKey::from_rsa_pem(&fixture("rsa-other.pem")).unwrap();
        let signer = rsa();
        let proof = sign_raw(&header(&signer), &claims(), &other, Algorithm::RS256);
        assert_invalid(verify(&proof), "signature");

        // Claims changed after signing.
        let proof = proof_with(&ec(), |_, _| {});
        let parts: Vec<&str> = proof.split('.').collect();
        let mut changed = claims();
        changed["jti"] = json!("another");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(changed.to_string().as_bytes()),
            parts[2]
        );
        assert_invalid(verify(&tampered), "signature");
    }

    #[test]
    fn nonce_required() {
        let with_nonce = proof_with(&ec(), |_, c| c["nonce"] = json!("n-0S6_WzA2Mj"));
        let without = proof_with(&ec(), |_, _| {});
        let wrong = proof_with(&ec(), |_, c| c["nonce"] = json!("stale"));
        let numeric = proof_with(&ec(), |_, c| c["nonce"] = json!(1));

        let expected = |nonce: &str| nonce == "n-0S6_WzA2Mj";
        let required = |proof| {
            let mut request = check(proof);
            request.nonce = Some(&expected);
            verify_proof(&request)
        };
        assert!(required(&with_nonce).is_ok());
        assert_eq!(required(&without), Err(DpopError::UseNonce));
        assert_eq!(required(&wrong), Err(DpopError::UseNonce));
        assert_eq!(required(&numeric), Err(DpopError::UseNonce));
        // Not required: a nonce in the proof is ignored.
        assert!(verify(&with_nonce).is_ok());

        // An invalid proof is invalid, nonce or not.
        let bad = proof_with(&ec(), |_, c| c["htm"] = json!("PUT"));
        assert_invalid(required(&bad), "htm");
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let valid = proof_with(&ec(), |_, _| {});
        let cases = [
            String::new(),
            " ".into(),
            "abc".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            "..".into(),
            "!!!.###.$$$".into(),
            "e30.e30.e30".into(),
            "W10.W10.AAAA".into(),
            format!("{valid},{valid}"),
            format!("{valid} {valid}"),
            "A".repeat(MAX_PROOF_BYTES + 1),
            format!(
                "{}.e30.AAAA",
                b64(b"{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":\"x\"}")
            ),
            format!("{}.e30.AAAA", b64(b"{\"typ\":\"dpop+jwt\",\"alg\":7}")),
            format!("{}.{}", valid, "x"),
        ];
        for proof in &cases {
            assert!(
                matches!(verify(proof), Err(DpopError::Invalid(_))),
                "{proof:.40}"
            );
        }
        // Surrounding whitespace from a header value is fine.
        assert!(verify(&format!(" {valid} ")).is_ok());
    }

    #[test]
    fn critical_headers_are_refused() {
        let proof = proof_with(&ec(), |h, _| h["crit"] = json!(["exp"]));
        assert_invalid(verify(&proof), "critical");
    }

    #[test]
    fn replay_ttl_covers_the_window() {
        let proof = VerifiedProof {
            jkt: "k".into(),
            jti: "j".into(),
            iat: NOW - 10,
        };
        assert_eq!(proof.replay_ttl(NOW, 60, 5).as_secs(), 56);
        assert_eq!(proof.replay_ttl(NOW + 1000, 60, 5).as_secs(), 6);
        assert_ne!(
            proof.replay_key(),
            VerifiedProof {
                jkt: "k2".into(),
                ..proof.clone()
            }
            .replay_key()
        );
    }
}
