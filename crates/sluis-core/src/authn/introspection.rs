//! RFC 7662 token introspection: asking the authorization server whether a token is
//! active, with the cache, coalescing and outage rules that keep it off the hot path.
//!
//! - Active results are cached by the token's key ([`super::TokenKey`]) until the earlier of `exp` and
//!   `cache_ttl`; inactive ones for `negative_cache_ttl`. Both in one bounded cache.
//! - Concurrent look-ups of one token share one upstream call.
//! - An endpoint that is down, slow, or answers 5xx or garbage never yields an allow: the
//!   caller gets [`AuthnError::Unavailable`] (gRPC UNAVAILABLE for Envoy), unless the
//!   operator opted into serving a cached active result, never past its `exp`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use moka::sync::Cache;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use super::{AuthnError, now_secs};
use crate::authn::settings::{ClientAuth, IntrospectionConfig};
use crate::decision::{Cause, Unavailable};

/// Largest introspection response accepted.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// What the endpoint said about one token.
#[derive(Clone)]
enum Answer {
    /// Active: the claims, fresh until `fresh_until`, usable (stale) until `exp`.
    Active {
        claims: Arc<serde_json::Map<String, Json>>,
        fresh_until: i64,
        exp: i64,
    },
    Inactive {
        until: i64,
    },
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct IntrospectionStats {
    /// Calls made to the endpoint (each retry counts).
    pub upstream_calls: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Answers served from a stale cache entry during an outage.
    pub stale_served: AtomicU64,
}

type Flight = Arc<OnceCell<Result<Answer, String>>>;

pub struct Introspector {
    endpoint: String,
    client: reqwest::Client,
    auth: ResolvedAuth,
    token_type_hint: Option<String>,
    pub always: bool,
    retries: u32,
    timeout: Duration,
    cache_ttl: i64,
    negative_ttl: i64,
    serve_stale: bool,
    cache: Cache<super::TokenKey, Answer>,
    /// Look-ups in progress, by token hash: later callers wait for the first one's call.
    in_flight: Mutex<HashMap<super::TokenKey, Flight>>,
    pub stats: IntrospectionStats,
}

/// Client authentication with its secrets read.
enum ResolvedAuth {
    None,
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    PrivateKeyJwt {
        client_id: String,
        key: jsonwebtoken::EncodingKey,
        algorithm: jsonwebtoken::Algorithm,
        key_id: Option<String>,
    },
    Tls {
        client_id: String,
    },
}

impl Introspector {
    pub fn new(
        config: &IntrospectionConfig,
        base_dir: &std::path::Path,
    ) -> Result<Introspector, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_certificate {
            let path = base_dir.join(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("`{}` holds no PEM certificate: {e}", path.display()))?;
            builder = builder.tls_certs_only(roots);
        }
        let secret_text = |secret: &crate::authn::settings::Secret| {
            secret
                .resolve(base_dir)
                .and_then(|b| String::from_utf8(b).map_err(|_| "secret is not UTF-8".into()))
        };
        let auth = match &config.client_auth {
            ClientAuth::None => ResolvedAuth::None,
            ClientAuth::ClientSecretBasic {
                client_id,
                client_secret,
            } => ResolvedAuth::Basic {
                client_id: client_id.clone(),
                secret: secret_text(client_secret)?,
            },
            ClientAuth::ClientSecretPost {
                client_id,
                client_secret,
            } => ResolvedAuth::Post {
                client_id: client_id.clone(),
                secret: secret_text(client_secret)?,
            },
            ClientAuth::PrivateKeyJwt {
                client_id,
                private_key,
                algorithm,
                key_id,
            } => {
                let algorithm = super::parse_algorithm(algorithm)?;
                let pem = private_key.resolve(base_dir)?;
                let key = match super::jwks::KeyFamily::of(algorithm) {
                    super::jwks::KeyFamily::Ec => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
                    super::jwks::KeyFamily::Ed => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
                    super::jwks::KeyFamily::Rsa => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
                    super::jwks::KeyFamily::Hmac => {
                        return Err("private_key_jwt needs an asymmetric algorithm".into());
                    }
                }
                .map_err(|e| format!("private_key_jwt key: {e}"))?;
                ResolvedAuth::PrivateKeyJwt {
                    client_id: client_id.clone(),
                    key,
                    algorithm,
                    key_id: key_id.clone(),
                }
            }
            ClientAuth::TlsClientAuth {
                client_id,
                certificate,
                private_key,
            } => {
                let mut pem = std::fs::read(base_dir.join(certificate)).map_err(|e| {
                    format!(
                        "cannot read `{}`: {e}",
                        base_dir.join(certificate).display()
                    )
                })?;
                pem.push(b'\n');
                pem.extend(private_key.resolve(base_dir)?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("tls_client_auth certificate or key: {e}"))?;
                builder = builder.identity(identity);
                ResolvedAuth::Tls {
                    client_id: client_id.clone(),
                }
            }
        };
        let client = builder
            .build()
            .map_err(|e| format!("cannot build an http client: {e}"))?;
        Ok(Introspector {
            endpoint: config.endpoint.clone(),
            client,
            auth,
            token_type_hint: config.token_type_hint.clone(),
            always: config.always,
            retries: config.retries,
            timeout: config.timeout,
            cache_ttl: config.cache_ttl.as_secs() as i64,
            negative_ttl: config.negative_cache_ttl.as_secs() as i64,
            serve_stale: config.serve_stale_on_error,
            cache: Cache::builder()
                .max_capacity(config.max_cache_entries)
                .expire_after(UntilDone)
                .build(),
            in_flight: Mutex::new(HashMap::new()),
            stats: IntrospectionStats::default(),
        })
    }

    /// Cached results held.
    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Cache size, hit ratio and call counts, for `/readyz` (and metrics).
    pub fn report(&self) -> serde_json::Value {
        let hits = self.stats.cache_hits.load(Ordering::Relaxed);
        let misses = self.stats.cache_misses.load(Ordering::Relaxed);
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        serde_json::json!({
            "cached": self.cached(),
            "cache_hits": hits,
            "cache_misses": misses,
            "hit_ratio": ratio,
            "upstream_calls": self.stats.upstream_calls.load(Ordering::Relaxed),
            "stale_served": self.stats.stale_served.load(Ordering::Relaxed),
        })
    }

    /// The active token's claims, from cache or the endpoint, and until when they may be
    /// reused without asking again.
    pub async fn introspect(
        &self,
        token: &str,
        key: super::TokenKey,
    ) -> Result<(Arc<serde_json::Map<String, Json>>, i64), AuthnError> {
        let now = now_secs();
        let mut stale = None;
        if let Some(answer) = self.cache.get(&key) {
            match answer {
                Answer::Active {
                    claims,
                    fresh_until,
                    exp,
                } if exp > now => {
                    if fresh_until > now {
                        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok((claims, fresh_until));
                    }
                    stale = Some(claims);
                }
                Answer::Inactive { until } if until > now => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Err(inactive());
                }
                _ => {}
            }
        }
        self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let flight = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            in_flight.entry(key).or_default().clone()
        };
        let result = flight
            .get_or_init(|| async {
                let answer = self.call(token).await?;
                self.cache.insert(key, answer.clone());
                Ok(answer)
            })
            .await
            .clone();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                in_flight.remove(&key);
            }
        }
        match result {
            Ok(Answer::Active {
                claims,
                fresh_until,
                ..
            }) => Ok((claims, fresh_until)),
            Ok(Answer::Inactive { .. }) => Err(inactive()),
            Err(e) => match stale {
                Some(claims) if self.serve_stale => {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("introspection failed, serving a cached active result: {e}");
                    // Not cached again: the next request asks the endpoint again.
                    Ok((claims, now))
                }
                _ => Err(AuthnError::Unavailable(Unavailable::new(
                    Cause::Introspection,
                    e,
                ))),
            },
        }
    }

    /// One look-up with bounded retries: at most `1 + retries` calls of at most
    /// `timeout` each.
    async fn call(&self, token: &str) -> Result<Answer, String> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            self.stats.upstream_calls.fetch_add(1, Ordering::Relaxed);
            match self.call_once(token).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) => last = e,
            }
        }
        Err(last)
    }

    async fn call_once(&self, token: &str) -> Result<Answer, Failure> {
        let mut form: Vec<(&str, String)> = vec![("token", token.to_owned())];
        if let Some(hint) = &self.token_type_hint {
            form.push(("token_type_hint", hint.clone()));
        }
        let mut request = self
            .client
            .post(&self.endpoint)
            .header("accept", "application/json");
        match &self.auth {
            ResolvedAuth::None => {}
            ResolvedAuth::Basic { client_id, secret } => {
                request = request.basic_auth(form_encode(client_id), Some(form_encode(secret)));
            }
            ResolvedAuth::Post { client_id, secret } => {
                form.push(("client_id", client_id.clone()));
                form.push(("client_secret", secret.clone()));
            }
            ResolvedAuth::PrivateKeyJwt {
                client_id,
                key,
                algorithm,
                key_id,
            } => {
                form.push(("client_id", client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    self.client_assertion(client_id, key, *algorithm, key_id.clone())
                        .map_err(Failure::Final)?,
                ));
            }
            ResolvedAuth::Tls { client_id } => form.push(("client_id", client_id.clone())),
        }
        let response = request
            .form(&form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                Failure::Retry(format!(
                    "introspection endpoint `{}` unreachable: {}",
                    self.endpoint,
                    without_url(&e)
                ))
            })?;
        let status = response.status();
        if status.is_server_error() {
            return Err(Failure::Retry(format!(
                "introspection endpoint `{}` answered {status}",
                self.endpoint
            )));
        }
        if !status.is_success() {
            // 401/403: our own client authentication is wrong. Not the token's fault.
            return Err(Failure::Final(format!(
                "introspection endpoint `{}` refused us: {status}",
                self.endpoint
            )));
        }
        let body = read_limited(response).await.map_err(Failure::Retry)?;
        let document: Json = serde_json::from_slice(&body).map_err(|_| {
            Failure::Final(format!(
                "introspection endpoint `{}` answered something that is not JSON",
                self.endpoint
            ))
        })?;
        let Json::Object(mut claims) = document else {
            return Err(Failure::Final(format!(
                "introspection endpoint `{}` answered JSON that is not an object",
                self.endpoint
            )));
        };
        let now = now_secs();
        match claims.remove("active") {
            Some(Json::Bool(true)) => {
                // A malformed `exp` is refused when the answer is checked; here it only
                // bounds the cache.
                let exp = super::jose::numeric_date(&claims, "exp").ok().flatten();
                // Without `exp` the answer is only good for the cache TTL.
                let exp = exp.unwrap_or(now + self.cache_ttl);
                Ok(Answer::Active {
                    claims: Arc::new(claims),
                    fresh_until: exp.min(now + self.cache_ttl),
                    exp,
                })
            }
            Some(Json::Bool(false)) => Ok(Answer::Inactive {
                until: now + self.negative_ttl,
            }),
            _ => Err(Failure::Final(format!(
                "introspection endpoint `{}` answered without a boolean `active`",
                self.endpoint
            ))),
        }
    }

    fn client_assertion(
        &self,
        client_id: &str,
        key: &jsonwebtoken::EncodingKey,
        algorithm: jsonwebtoken::Algorithm,
        key_id: Option<String>,
    ) -> Result<String, String> {
        let now = now_secs();
        let mut jti = [0u8; 16];
        getrandom_bytes(&mut jti);
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": self.endpoint,
            "iat": now,
            "exp": now + 60,
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        });
        let mut header = jsonwebtoken::Header::new(algorithm);
        header.kid = key_id;
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("client assertion: {e}"))
    }
}

/// Unique bytes for assertion ids: not secret, only unique.
fn getrandom_bytes(out: &mut [u8]) {
    use sha2::{Digest, Sha256};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}{}{}",
        std::time::SystemTime::now(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    );
    let digest = Sha256::digest(seed.as_bytes());
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic encoding.
fn form_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A transport error in short: the endpoint is named by the caller already.
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else {
        let text = error.to_string();
        text.split(" for url").next().unwrap_or(&text).to_string()
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("introspection response broke off: {}", without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "introspection response larger than {MAX_RESPONSE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

enum Failure {
    /// Worth another attempt: the endpoint may be back in a moment.
    Retry(String),
    /// Retrying will not help (our credentials are refused, the answer is not RFC 7662).
    Final(String),
}

/// Checks what an `active: true` answer says as a token's own claims would be checked
/// (RFC 7662 §2.2 names them after RFC 7519; RFC 9068 §4 asks the same of access tokens):
/// `active` is the server's word that the token is usable, not a licence to ignore its
/// `exp`, `nbf` or `iat`. Every member is optional, but one that is present must have its
/// registered type, and `aud`, when present and audiences are configured, must name one.
/// Returns `(exp, iat)`.
pub(crate) fn check_active(
    claims: &serde_json::Map<String, Json>,
    iss: &str,
    audiences: &[String],
    leeway: i64,
    now: i64,
) -> Result<(Option<i64>, Option<i64>), AuthnError> {
    let invalid = |m: String| AuthnError::Invalid(m);
    let date = |name: &str| {
        super::jose::numeric_date(claims, name)
            .map_err(|_| invalid(format!("introspected claim `{name}` must be a number")))
    };
    let (exp, nbf, iat) = (date("exp")?, date("nbf")?, date("iat")?);
    for name in ["iss", "sub", "client_id", "username", "token_type", "jti"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(invalid(format!(
                "introspected claim `{name}` must be a string"
            )));
        }
    }
    if claims
        .get("iss")
        .and_then(Json::as_str)
        .is_some_and(|i| i != iss)
    {
        return Err(invalid("wrong issuer".into()));
    }
    if exp.is_some_and(|exp| exp.saturating_add(leeway) < now) {
        return Err(invalid("token has expired".into()));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(invalid("token is not valid yet".into()));
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(invalid("token is issued in the future".into()));
    }
    // RFC 7662 `aud` is optional; when present it must name us: a string, or an array of
    // strings one of which is ours.
    if !audiences.is_empty()
        && let Some(aud) = claims.get("aud")
    {
        let named: Vec<&str> = match aud {
            Json::String(a) => vec![a.as_str()],
            Json::Array(list) if list.iter().all(Json::is_string) => {
                list.iter().filter_map(Json::as_str).collect()
            }
            _ => {
                return Err(invalid(
                    "introspected claim `aud` must be a string or an array of strings".into(),
                ));
            }
        };
        if !named.iter().any(|a| audiences.iter().any(|ours| ours == a)) {
            return Err(invalid("wrong audience".into()));
        }
    }
    Ok((exp, iat))
}

fn inactive() -> AuthnError {
    AuthnError::Invalid("token is not active".into())
}

/// Cache expiry: active answers until `exp` (stale serving needs them after
/// `fresh_until`), inactive ones until their short deadline.
struct UntilDone;

impl moka::Expiry<super::TokenKey, Answer> for UntilDone {
    fn expire_after_create(
        &self,
        _key: &super::TokenKey,
        answer: &Answer,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let until = match answer {
            Answer::Active { exp, .. } => *exp,
            Answer::Inactive { until } => *until,
        };
        Some(Duration::from_secs((until - now_secs()).max(0) as u64))
    }
}
