//! Property test of the whole token path with real signatures: arbitrary claim sets (any
//! JSON in each registered claim, times around the leeway and the maximum lifetime,
//! random `iss` and `aud`) are signed with the fixture RSA key, sent as a Bearer token
//! and decided by the engine under a test config. A model of the claim rules, written
//! out below, says which must be allowed: the engine allows exactly those, and never
//! panics. (The proptests in `authn::jose` stop before signing; these go through the
//! signature check, the key choice, the caches and the policy.)

use sluis_test_kit as kit;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use kit::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sluis_core::engine::Engine;

/// The issuer's settings, as in the config below.
const LEEWAY: i64 = 30;
const MAX_LIFETIME: i64 = 600;

/// Any GET under `/api/` is allowed to a valid token with scope `read`.
const POLICY: &str = r#"
policies:
  - id: api
    match: {paths: ["/api/**"]}
    issuers: [test]
    scopes: [read]
    rules:
      - {id: get, allow: request.method == "GET"}
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    _setup: Setup,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let config = format!(
            r#"
listeners: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks: {{ file: {jwks} }}
    leeway: {LEEWAY}s
    max_lifetime: {MAX_LIFETIME}s
policies: [policies]
"#,
            jwks = fixture("keys/jwks.json").display()
        );
        let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = sluis_config::Config::load(Path::new(&setup.config_path())).unwrap();
        let engine = runtime.block_on(async {
            let engine = Arc::new(config.build_engine(std::sync::Arc::default()).unwrap());
            for issuer in engine.authenticator().issuers() {
                issuer.refresh().await.unwrap();
            }
            engine
        });
        Harness {
            runtime,
            engine,
            _setup: setup,
        }
    })
}

/// Any JSON value of a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A time in seconds from now: steps of 10 s shifted by 5, so none is within 4 s of a
/// leeway boundary (±30 s) and a slow case cannot cross one; and far-off times.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => (-8i64..8).prop_map(|k| k * 10 + 5),
        1 => prop_oneof![Just(-1_000_000i64), Just(1_000_000i64), Just(-3_000i64), Just(3_000i64)],
    ]
}

/// A NumericDate relative to the moment the case runs, resolved then: cases run for a
/// while, and a `now` taken when the strategy was built would drift across a boundary.
#[derive(Debug, Clone)]
enum Time {
    Whole(i64),
    Fraction(i64),
    Text(i64),
    Raw(Value),
}

impl Time {
    fn at(&self, now: i64) -> Value {
        match self {
            Time::Whole(o) => json!(now + o),
            Time::Fraction(o) => json!((now + o) as f64 + 0.5),
            Time::Text(o) => json!((now + o).to_string()),
            Time::Raw(value) => value.clone(),
        }
    }
}

/// A NumericDate around now: whole, with a fraction, as text, or anything at all.
fn time() -> impl Strategy<Value = Option<Time>> {
    prop_oneof![
        1 => Just(None),
        12 => offset().prop_map(|o| Some(Time::Whole(o))),
        1 => offset().prop_map(|o| Some(Time::Fraction(o))),
        1 => offset().prop_map(|o| Some(Time::Text(o))),
        1 => prop_oneof![Just(json!(1e300)), Just(json!(u64::MAX)), Just(json!(-1))]
            .prop_map(|v| Some(Time::Raw(v))),
        1 => any_json().prop_map(|v| Some(Time::Raw(v))),
    ]
}

fn iss() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        14 => Just(Some(json!(ISSUER))),
        1 => Just(None),
        1 => prop_oneof![
            Just(json!("https://issuer.test/")),
            Just(json!("https://ISSUER.test")),
            Just(json!([ISSUER])),
            "[ -~]{0,20}".prop_map(Value::String),
        ].prop_map(Some),
        1 => any_json().prop_map(Some),
    ]
}

fn aud() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => Just(Some(json!(AUDIENCE))),
        2 => Just(Some(json!(["https://other.test", AUDIENCE]))),
        1 => Just(None),
        1 => prop_oneof![
            Just(json!([])),
            Just(json!(["https://other.test"])),
            Just(json!([AUDIENCE, 1])),
            Just(json!("https://api.test/")),
            Just(json!({"aud": AUDIENCE})),
        ].prop_map(Some),
        1 => any_json().prop_map(Some),
    ]
}

fn scope() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => Just(Some(json!("read write"))),
        2 => Just(Some(json!(["write", "read"]))),
        1 => Just(None),
        1 => prop_oneof![
            Just(json!("write")),
            Just(json!("readwrite")),
            Just(json!(["read", 1])),
            Just(json!([])),
            "[a-z ]{0,12}".prop_map(Value::String),
        ].prop_map(Some),
        1 => any_json().prop_map(Some),
    ]
}

/// `sub`, `jti`, `client_id`: usually a string.
fn text() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        12 => "[ -~]{1,16}".prop_map(|s| Some(Value::String(s))),
        2 => Just(None),
        1 => any_json().prop_map(Some),
    ]
}

/// A claim set: the times are resolved against `now` when the case runs.
type Claims = (Map<String, Value>, [Option<Time>; 3]);

fn claim_sets() -> impl Strategy<Value = Claims> {
    (
        iss(),
        aud(),
        scope(),
        (time(), time(), time()),
        (text(), text(), text()),
    )
        .prop_map(
            |(iss, aud, scope, (exp, nbf, iat), (sub, jti, client_id))| {
                let mut claims = Map::new();
                let named = [
                    ("iss", iss),
                    ("aud", aud),
                    ("scope", scope),
                    ("sub", sub),
                    ("jti", jti),
                    ("client_id", client_id),
                ];
                for (name, value) in named {
                    if let Some(value) = value {
                        claims.insert(name.to_owned(), value);
                    }
                }
                (claims, [exp, nbf, iat])
            },
        )
}

fn at(claims: &Claims, now: i64) -> Map<String, Value> {
    let (fixed, times) = claims;
    let mut claims = fixed.clone();
    for (name, time) in ["exp", "nbf", "iat"].iter().zip(times) {
        if let Some(time) = time {
            claims.insert((*name).to_owned(), time.at(now));
        }
    }
    claims
}

/// A NumericDate as the rules read it: a JSON number, whole seconds (fractions floored),
/// within ±10^15; `Err` for anything else.
fn numeric(value: Option<&Value>) -> Result<Option<i64>, ()> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => Ok(Some(n)),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                _ => Err(()),
            },
        },
        Some(_) => Err(()),
    }
}

/// The model: whether a token with these claims, validly signed, may GET `/api/x`.
fn allowed(claims: &Map<String, Value>, now: i64) -> bool {
    let strings_only = ["sub", "jti", "client_id"]
        .iter()
        .all(|name| claims.get(*name).is_none_or(Value::is_string));
    let iss_ok = claims.get("iss") == Some(&json!(ISSUER));
    // `audiences` is configured: `aud` is required, a string or a non-empty array of
    // strings, and names ours.
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(list)) => {
            !list.is_empty()
                && list.iter().all(Value::is_string)
                && list.iter().any(|a| a == AUDIENCE)
        }
        _ => false,
    };
    // The policy asks for scope `read`: a space-separated string or an array of strings.
    let scope_ok = match claims.get("scope") {
        Some(Value::String(scope)) => scope.split_whitespace().any(|s| s == "read"),
        Some(Value::Array(list)) => {
            list.iter().all(Value::is_string) && list.iter().any(|s| s == "read")
        }
        _ => false,
    };
    let (Ok(exp), Ok(nbf), Ok(iat)) = (
        numeric(claims.get("exp")),
        numeric(claims.get("nbf")),
        numeric(claims.get("iat")),
    ) else {
        return false;
    };
    let Some(exp) = exp else {
        return false;
    };
    // `max_lifetime` is set: `iat` is required and `exp - iat` at most the maximum.
    let Some(iat) = iat else {
        return false;
    };
    let lifetime_ok = exp.saturating_sub(iat) <= MAX_LIFETIME;
    let times_ok = exp.saturating_add(LEEWAY) >= now
        && nbf.is_none_or(|nbf| nbf <= now + LEEWAY)
        && iat <= now + LEEWAY;
    strings_only && iss_ok && aud_ok && scope_ok && lifetime_ok && times_ok
}

fn bearer_check(token: &str) -> CheckRequest {
    let headers = HashMap::from([("authorization".to_owned(), format!("Bearer {token}"))]);
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/api/x".into(),
                    host: "api.test".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn signed_tokens_are_allowed_exactly_when_every_claim_rule_holds(
        claims in claim_sets(),
    ) {
        // No time lies within 4 s of a boundary, so the second or two between this `now`
        // and the engine's does not change the model's answer.
        let now = now();
        let claims = at(&claims, now);
        let harness = harness();
        let token = token(&Value::Object(claims.clone()));
        let access = sluis::doors::envoy::access_request(bearer_check(&token));
        let decision = harness
            .runtime
            .block_on(harness.engine.decide(&access))
            .map_err(|e| TestCaseError::fail(format!("unavailable: {e:?}")))?;
        prop_assert_eq!(
            decision.is_allow(),
            allowed(&claims, now),
            "claims {} decided {:?}",
            Value::Object(claims.clone()),
            decision
        );
    }
}

/// A token whose lifetime exceeds `max_lifetime` is refused for that, a final reason,
/// even when it is also expired or not yet valid.
#[test]
fn max_lifetime_is_judged_before_the_clock() {
    let harness = harness();
    let now = now();
    for (iat, exp) in [
        (now - 5_000, now - 4_000),
        (now + 4_000, now + 5_000),
        (now - 10, now + 10_000),
    ] {
        let mut claims = claims();
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        let access = sluis::doors::envoy::access_request(bearer_check(&token(&claims)));
        let decision = harness
            .runtime
            .block_on(harness.engine.decide(&access))
            .unwrap();
        assert!(!decision.is_allow(), "{decision:?}");
        assert!(
            decision
                .reason
                .contains("token lifetime 1000s exceeds the maximum of 600s")
                || decision
                    .reason
                    .contains("token lifetime 10010s exceeds the maximum of 600s"),
            "{iat} {exp}: {}",
            decision.reason
        );
    }
}
