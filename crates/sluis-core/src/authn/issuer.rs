//! One issuer: its keys (JWKS file, URL or OIDC discovery) or its introspection
//! endpoint, its rules for acceptable tokens, and verification.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::introspection::Introspector;
use super::jose::{self, TokenError};
use super::jwks::{KeySet, KeySource};
use super::{AuthnError, Identity, now_secs, parse_algorithm};
use crate::authn::settings::IssuerConfig;
use crate::decision::{Cause, Unavailable};

/// A configured token issuer.
pub struct Issuer {
    name: Arc<str>,
    iss: String,
    audiences: Vec<String>,
    single_audience: bool,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    max_lifetime: Option<Duration>,
    scope_claim: String,
    /// HS* key, when the issuer shares a secret with us instead of publishing keys.
    secret: Option<DecodingKey>,
    source: Option<KeySource>,
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    /// The current keys; swapped whole when a fetch succeeds.
    keys: ArcSwap<KeySet>,
    /// Whether a fetch ever succeeded: until then a token we cannot verify is our problem
    /// (unavailable), not the caller's (invalid).
    loaded: AtomicBool,
    /// Serialises fetches and remembers the last one, for the unknown-`kid` rate limit.
    last_fetch: Mutex<Option<Instant>>,
    /// RFC 7662: for opaque tokens, or every token with `always`.
    pub introspection: Option<Introspector>,
    /// RFC 9068: JWTs must have `typ: at+jwt`.
    rfc9068: bool,
    /// How the JWTs embedded as aggregated claims are trusted, when configured.
    claim_sources: Option<Arc<super::aggregated::ClaimSources>>,
    /// Where key fetches are counted.
    metrics: Arc<crate::metrics::Metrics>,
}

impl Issuer {
    pub fn new(
        config: &IssuerConfig,
        base_dir: &Path,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Issuer, String> {
        let context = |e: String| format!("issuer `{}`: {e}", config.name);
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(context)?;
        let secret = match &config.shared_secret {
            Some(secret) => Some(DecodingKey::from_secret(
                &secret.resolve(base_dir).map_err(context)?,
            )),
            None => None,
        };
        let (source, refresh_interval, min_refresh_interval) = match &config.jwks {
            Some(jwks) => {
                let source = match (&jwks.file, &jwks.url, &jwks.discovery) {
                    (Some(file), _, _) => KeySource::File(base_dir.join(file)),
                    (None, Some(url), _) => KeySource::url(url, jwks.timeout).map_err(context)?,
                    (None, None, Some(discovery)) => KeySource::discovery(
                        discovery,
                        &config.issuer,
                        jwks.allow_insecure_http,
                        jwks.timeout,
                    )
                    .map_err(context)?,
                    (None, None, None) => {
                        return Err(context("`jwks` needs `file`, `url` or `discovery`".into()));
                    }
                };
                (
                    Some(source),
                    jwks.refresh_interval,
                    jwks.min_refresh_interval,
                )
            }
            None => (None, Duration::MAX, Duration::MAX),
        };
        let loaded = source.is_none();
        let introspection = match &config.introspection {
            Some(introspection) => {
                Some(Introspector::new(introspection, base_dir).map_err(context)?)
            }
            None => None,
        };
        let claim_sources = match &config.aggregated_claims {
            Some(aggregated) => Some(Arc::new(
                super::aggregated::ClaimSources::new(aggregated, base_dir)
                    .map_err(|e| context(format!("aggregated_claims: {e}")))?,
            )),
            None => None,
        };
        Ok(Issuer {
            claim_sources,
            introspection,
            rfc9068: config.rfc9068,
            name: Arc::from(config.name.as_str()),
            iss: config.issuer.clone(),
            audiences: config.audiences.clone(),
            single_audience: config.single_audience,
            algorithms,
            leeway: config.leeway,
            max_lifetime: config.max_lifetime,
            scope_claim: config.scope_claim.clone(),
            secret,
            source,
            refresh_interval,
            min_refresh_interval,
            keys: ArcSwap::from_pointee(KeySet::default()),
            loaded: AtomicBool::new(loaded),
            last_fetch: Mutex::new(None),
            metrics,
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The `iss` of this issuer's tokens.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// Whether the keys come from a local file (so offline tools can load them).
    pub fn has_local_keys(&self) -> bool {
        matches!(self.source, Some(KeySource::File(_)))
    }

    /// Checks claims as [`Issuer::verify`] checks a token's, but without a signature:
    /// `iss`, `aud`, `iat` and `exp` default to this issuer's values and a 5-minute token.
    /// For offline tools (`sluis test`, `explain`, `replay`) only.
    pub fn verify_claims(
        &self,
        claims: &serde_json::Map<String, Json>,
    ) -> Result<Identity, AuthnError> {
        let mut claims = claims.clone();
        let now = now_secs();
        claims
            .entry("iss")
            .or_insert_with(|| Json::String(self.iss.clone()));
        if let Some(aud) = self.audiences.first() {
            claims
                .entry("aud")
                .or_insert_with(|| Json::String(aud.clone()));
        }
        claims.entry("iat").or_insert_with(|| now.into());
        claims.entry("exp").or_insert_with(|| (now + 300).into());
        // The same checks as a real token's claims, by the same function.
        Ok(self.identity(claims, "", "claims".into())?)
    }

    /// Checks the claims another enforcement point already verified the token with (its
    /// introspection answer, relayed by knooppunt's PEP): `active` must be `true` and
    /// `exp` present and in the future, with no defaults; the rest as an introspected
    /// token's claims are checked. No signature, and no sender binding: the relaying
    /// point checked those, which is why a door relaying claims must only be reachable
    /// from it.
    pub fn verify_relayed(
        &self,
        claims: &serde_json::Map<String, Json>,
    ) -> Result<Identity, AuthnError> {
        if claims.get("active") != Some(&Json::Bool(true)) {
            return Err(AuthnError::Invalid("token is not active".into()));
        }
        let mut claims = claims.clone();
        claims.remove("active");
        let (exp, iat) = super::introspection::check_active(
            &claims,
            &self.iss,
            &self.audiences,
            self.leeway.as_secs() as i64,
            now_secs(),
        )?;
        let Some(exp) = exp else {
            return Err(AuthnError::Invalid("token has no `exp`".into()));
        };
        claims
            .entry("iss")
            .or_insert_with(|| Json::String(self.iss.clone()));
        Ok(self.build_identity(claims, "", "relayed".into(), Some(exp), iat)?)
    }

    pub fn has_keys(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Fetches the keys now. On failure the previous keys stay.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        self.fetch_locked(&mut last).await
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) -> Result<usize, String> {
        let Some(source) = &self.source else {
            return Ok(0);
        };
        *last = Some(Instant::now());
        let fetched = source.fetch().await.and_then(|document| {
            KeySet::parse(&document).map_err(|e| format!("{} from `{}`", e, source.describe()))
        });
        self.metrics.jwks_fetch(&self.name, fetched.is_ok());
        let (set, skipped) = fetched?;
        for problem in &skipped {
            tracing::warn!(issuer = %self.name, source = %source.describe(), "skipped a jwks key: {problem}");
        }
        let count = set.keys.len();
        self.keys.store(Arc::new(set));
        self.loaded.store(true, Ordering::Release);
        tracing::info!(issuer = %self.name, keys = count, source = %source.describe(), "loaded jwks");
        Ok(count)
    }

    /// Refreshes because a token named a `kid` we do not know, at most once per
    /// `min_refresh_interval`. Returns whether a fetch happened and succeeded.
    async fn refresh_for_unknown_kid(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refresh_interval) {
            return false;
        }
        match self.fetch_locked(&mut last).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(issuer = %self.name, "jwks refresh for an unknown kid failed: {e}");
                false
            }
        }
    }

    /// Loads the keys, retrying until they load, then refreshes them periodically.
    pub fn spawn_refresher(self: Arc<Self>) {
        if self.source.is_none() {
            return;
        }
        tokio::spawn(async move {
            let mut retry = Duration::from_millis(500);
            loop {
                let wait = match self.refresh().await {
                    Ok(_) => {
                        retry = Duration::from_millis(500);
                        self.refresh_interval
                    }
                    Err(e) => {
                        tracing::error!(issuer = %self.name, "cannot load jwks: {e}");
                        retry = (retry * 2)
                            .min(Duration::from_secs(30))
                            .min(self.refresh_interval);
                        retry
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Whether this issuer would send `token` to its introspection endpoint.
    pub fn introspects(&self, token: &str) -> bool {
        self.introspection
            .as_ref()
            .is_some_and(|i| i.always || !looks_like_jwt(token))
    }

    /// Asks the introspection endpoint, and checks what it says as a token's claims are
    /// checked.
    async fn verify_by_introspection(
        &self,
        introspection: &Introspector,
        token: &str,
        key: super::TokenKey,
        token_hash: String,
    ) -> Result<Identity, AuthnError> {
        let (claims, fresh_until) = introspection.introspect(token, key).await?;
        let claims: Arc<serde_json::Map<String, Json>> = claims;
        let (exp, iat) = super::introspection::check_active(
            &claims,
            &self.iss,
            &self.audiences,
            self.leeway.as_secs() as i64,
            now_secs(),
        )?;
        let mut claims = (*claims).clone();
        claims
            .entry("iss")
            .or_insert_with(|| Json::String(self.iss.clone()));
        let mut identity = self.build_identity(claims, "", token_hash, exp, iat)?;
        identity.cache_until = fresh_until;
        Ok(identity)
    }

    /// Verifies `token`: its signature and claims, or by introspection.
    pub async fn verify(
        &self,
        token: &str,
        key: super::TokenKey,
        token_hash: String,
    ) -> Result<Identity, TokenError> {
        if let Some(introspection) = &self.introspection
            && self.introspects(token)
        {
            return Ok(self
                .verify_by_introspection(introspection, token, key, token_hash)
                .await?);
        }
        let compact = jose::parse(token)?;
        let written = jose::check_header(&compact.header)?;
        if self.rfc9068 {
            let typ = compact
                .header
                .get("typ")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if typ != "at+jwt" && typ != "application/at+jwt" {
                return Err(TokenError::Claim(
                    "token is not an RFC 9068 access token (`typ` must be `at+jwt`)".into(),
                ));
            }
        }
        // `none` and names the library does not know are refused like any algorithm not
        // configured, naming what the token says (cut to size).
        let alg = written
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| TokenError::RefusedAlgorithm(jose::echo(written)))?;
        let kid = compact.header.get("kid").and_then(Json::as_str);
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            let secret = self
                .secret
                .as_ref()
                .ok_or_else(|| TokenError::RefusedAlgorithm(jose::echo(written)))?;
            check_signature(&compact, secret, alg)?;
        } else {
            self.verify_with_keys(&compact, kid, alg).await?;
        }
        self.identity(compact.payload, token, token_hash)
    }

    async fn verify_with_keys(
        &self,
        compact: &jose::Compact<'_>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(), TokenError> {
        if !self.has_keys() {
            // Maybe the provider is back; if not, this is our outage, not a bad token.
            if !self.refresh_for_unknown_kid().await {
                return Err(AuthnError::Unavailable(Unavailable::new(
                    Cause::IssuerKeys,
                    format!("keys of issuer `{}` are not loaded", self.name),
                ))
                .into());
            }
        }
        let mut keys = self.keys.load_full();
        if let Some(kid) = kid
            && !keys.has_kid(kid)
            && self.refresh_for_unknown_kid().await
        {
            keys = self.keys.load_full();
        }
        let mut last_error = match kid {
            Some(kid) => match keys.keys.iter().find(|key| key.kid.as_deref() == Some(kid)) {
                None => TokenError::UnknownKey(jose::echo(kid)),
                // Say what does not fit rather than calling a known key unknown.
                Some(key) => TokenError::KeyMismatch(match key.alg {
                    Some(pinned) if pinned != alg => {
                        format!("key `{}` is for {pinned:?}, not {alg:?}", jose::echo(kid))
                    }
                    _ => format!(
                        "key `{}` is {} key, not one for {alg:?}",
                        jose::echo(kid),
                        key.family.described()
                    ),
                }),
            },
            None => TokenError::KeyMismatch("no key fits the token".into()),
        };
        for key in keys.candidates(kid, alg) {
            match check_signature(compact, &key.key, alg) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Checks what the signature does not and builds the identity.
    fn identity(
        &self,
        claims: serde_json::Map<String, Json>,
        token: &str,
        token_hash: String,
    ) -> Result<Identity, TokenError> {
        let rules = jose::ClaimRules {
            iss: &self.iss,
            audiences: &self.audiences,
            leeway: self.leeway.as_secs() as i64,
            scope_claim: &self.scope_claim,
            max_lifetime: self.max_lifetime.map(|max| max.as_secs() as i64),
        };
        let (exp, iat) = jose::check_claims(&claims, &rules, now_secs())?;
        self.build_identity(claims, token, token_hash, Some(exp), iat)
    }

    /// The identity of claims already checked; the issuer's own rules (audience count,
    /// lifetime) are applied here, for JWTs and introspected tokens alike.
    fn build_identity(
        &self,
        claims: serde_json::Map<String, Json>,
        token: &str,
        token_hash: String,
        exp: Option<i64>,
        iat: Option<i64>,
    ) -> Result<Identity, TokenError> {
        let string = |name: &str| claims.get(name).and_then(Json::as_str).map(str::to_owned);
        let aud: Vec<String> = match claims.get("aud") {
            Some(Json::String(aud)) => vec![aud.clone()],
            Some(Json::Array(auds)) => auds
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if self.single_audience && aud.len() != 1 {
            return Err(TokenError::Claim(
                "token must have exactly one audience".into(),
            ));
        }
        if let Some(max) = self.max_lifetime {
            let Some(iat) = iat else {
                return Err(TokenError::Claim("token has no `iat`".into()));
            };
            let lifetime = exp.unwrap_or(i64::MAX).saturating_sub(iat);
            if lifetime > max.as_secs() as i64 {
                return Err(TokenError::Claim(format!(
                    "token lifetime {lifetime}s exceeds the maximum of {}s",
                    max.as_secs()
                )));
            }
        }
        let scopes = match claims.get(&self.scope_claim) {
            Some(Json::String(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
            Some(Json::Array(scopes)) => scopes
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            issuer: self.name.clone(),
            iss: self.iss.clone(),
            sub: string("sub"),
            client_id: string("client_id"),
            aud,
            scopes,
            exp,
            iat,
            payload_json: payload_json(token, &claims),
            cache_until: exp.unwrap_or(i64::MAX),
            claims,
            token_hash,
            cel_value: OnceLock::new(),
            caller_value: OnceLock::new(),
            claim_sources: self.claim_sources.clone(),
            aggregated: OnceLock::new(),
        })
    }
}

/// Checks the signature of `compact` with `key` for `alg`. A key of another type for the
/// algorithm counts as a bad signature: the candidates were chosen to fit.
fn check_signature(
    compact: &jose::Compact<'_>,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<(), TokenError> {
    match jsonwebtoken::crypto::verify(
        compact.signature,
        compact.signing_input.as_bytes(),
        key,
        alg,
    ) {
        Ok(true) => Ok(()),
        _ => Err(TokenError::BadSignature),
    }
}

/// Three dot-separated parts: the shape of a JWS. Anything else is an opaque token,
/// for introspection.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The `iss` of a token before verification: only to choose which keys to verify with.
/// The token is parsed as strictly here as when it is verified.
pub fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let compact = jose::parse(token)?;
    match compact.payload.get("iss") {
        Some(Json::String(iss)) => Ok(iss.clone()),
        Some(_) => Err(TokenError::Claim("claim `iss` must be a string".into())),
        None => Err(TokenError::Claim("token has no `iss`".into())),
    }
}

/// The payload as compact JSON with every non-ASCII character escaped, so it fits in an
/// HTTP header value (iWlz RFC0014 `claims` header). Uses the token's own encoding when it
/// is already compact ASCII.
fn payload_json(token: &str, claims: &serde_json::Map<String, Json>) -> String {
    let original = token
        .split('.')
        .nth(1)
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    if let Some(text) = original
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return text;
    }
    let json = Json::Object(claims.clone()).to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_issuer_needs_three_parts() {
        assert!(unverified_issuer("abc").is_err());
        assert!(unverified_issuer("a.b").is_err());
        assert!(unverified_issuer("!!.??.xx").is_err());
    }

    #[test]
    fn payload_json_escapes_non_ascii() {
        let mut claims = serde_json::Map::new();
        claims.insert("name".into(), Json::String("Zoë\n".into()));
        assert_eq!(payload_json("x.%%%.y", &claims), r#"{"name":"Zo\u00eb\n"}"#);
    }
}
