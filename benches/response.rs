//! Judging an upstream's answer in the engine, without any network: `Engine::judge_response`
//! on a 100-entry mCSD search Bundle (Organizations; a third of them foreign, every tenth
//! marked restricted in `meta.security`), under the grant of an allowed request, the way
//! the ext_proc door calls it. The figure includes opening the grant, parsing the Bundle,
//! the response rules per entry and writing the filtered Bundle.
//!
//! - `response/judge/mcsd-100`: the whole operation; per entry = median / 100.
//! - `response/parse/mcsd-100`: `serde_json::from_slice` of the same body alone, for scale.
//!
//! Run: `cargo bench --bench response -- --warm-up-time 1 --measurement-time 3`.
//! Instruction counts: `SLUIS_BENCH_COUNT=2000 valgrind --tool=callgrind
//! target/release/deps/response-* --bench` judges the Bundle that many times and exits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use serde_json::{Value, json};

use sluis_core::authn::Authenticator;
use sluis_core::authn::settings::AuthnSettings;
use sluis_core::decision::Outcome;
use sluis_core::engine::Engine;
use sluis_core::policy::{LoadSettings, PolicySet};
use sluis_core::request::AccessRequest;
use sluis_core::response::{ResponseParts, ResponseVerdict};

/// The server's allocator (`src/main.rs`): a decision allocates many small CEL values, and
/// its cost depends on the allocator; the figures are what `sluis serve` pays.
/// (Until session 11 the benches ran on the system allocator: BENCHMARKS.md has both.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTRIES: usize = 100;

/// The mCSD response rules of `policy/care-services-mcsd.yaml`'s design, with the
/// requester's URA from the request context (an anonymous policy: no token to verify).
const POLICY: &str = r#"
policies:
  - id: mcsd-response
    anonymous: true
    rules: [{id: open, allow: "'ura' in request.context"}]
    response_rules:
      resource_types: [Organization, Location, Practitioner, PractitionerRole, HealthcareService]
      rules:
        - id: restricted
          withhold: >-
            has(entry.resource.meta) && has(entry.resource.meta.security)
            && entry.resource.meta.security.exists(s, s.code == 'R')
        - id: own-organization
          keep: >-
            entry.resource.resourceType == 'Organization' &&
            entry.resource.identifier.exists(i, i.system == 'http://fhir.nl/fhir/NamingSystem/ura'
              && i.value == request.context['ura'])
"#;

fn engine() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), POLICY).unwrap();
    let settings = LoadSettings {
        policies: vec!["p.yaml".into()],
        base_dir: dir.path().to_owned(),
        ..LoadSettings::default()
    };
    let policies = PolicySet::load(&settings).unwrap();
    let authn = Authenticator::new(&AuthnSettings::default(), Arc::default()).unwrap();
    Engine::new(policies, authn).with_grant_secret(b"bench secret")
}

/// A searchset of `ENTRIES` Organizations as an mCSD directory returns them.
fn bundle() -> Vec<u8> {
    let entries: Vec<Value> = (0..ENTRIES)
        .map(|i| {
            let ura = if i % 3 == 0 { "11111111" } else { "24173480" };
            let mut resource = json!({
                "resourceType": "Organization",
                "id": format!("org-{i}"),
                "meta": {"lastUpdated": "2026-11-01T10:00:00Z"},
                "identifier": [
                    {"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": format!("0{i:07}")},
                    {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": ura},
                ],
                "active": true,
                "type": [{"coding": [{"system": "http://nictiz.nl/fhir/NamingSystem/organization-type", "code": "Z3", "display": "Huisartspraktijk"}]}],
                "name": format!("Huisartsenpraktijk {i}"),
                "telecom": [{"system": "phone", "value": "+31 20 123 4567"}],
                "address": [{"line": ["Dorpsstraat 1"], "city": "Amsterdam", "postalCode": "1011AA", "country": "NL"}],
            });
            if i % 10 == 5 {
                resource["meta"]["security"] = json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]);
            }
            json!({
                "fullUrl": format!("https://directory.example.org/fhir/Organization/org-{i}"),
                "resource": resource,
                "search": {"mode": "match"},
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": ENTRIES,
        "link": [{"relation": "self", "url": "https://directory.example.org/fhir/Organization?name=x"}],
        "entry": entries,
    }))
    .unwrap()
}

fn grant(engine: &Engine) -> String {
    let request = AccessRequest {
        method: "GET".into(),
        path: "/fhir/Organization".into(),
        query: "name=x".into(),
        context: [("ura".to_string(), "24173480".to_string())]
            .into_iter()
            .collect(),
        ..AccessRequest::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    match runtime.block_on(engine.decide(&request)).unwrap().outcome {
        Outcome::Allow(allow) => allow.response_grant.expect("a response grant"),
        Outcome::Deny(deny) => panic!("denied: {deny:?}"),
    }
}

fn judge(engine: &Engine, grant: &str, headers: &[(String, String)], body: &[u8]) -> usize {
    let decided = engine
        .judge_response(
            Some(grant),
            &ResponseParts {
                status: 200,
                headers,
                body,
                from_upstream: true,
            },
        )
        .now_or_never()
        .expect("judged at once without a decision log");
    match decided.verdict {
        ResponseVerdict::Filter { body, .. } => body.len(),
        other => panic!("not filtered: {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let engine = engine();
    let grant = grant(&engine);
    let body = bundle();
    let headers = vec![(
        "content-type".to_string(),
        "application/fhir+json".to_string(),
    )];
    // 100 entries: 34 foreign, 7 of the rest restricted: 59 kept.
    let decided = engine
        .judge_response(
            Some(&grant),
            &ResponseParts {
                status: 200,
                headers: &headers,
                body: &body,
                from_upstream: true,
            },
        )
        .now_or_never()
        .expect("judged at once without a decision log");
    assert_eq!((decided.kept, decided.withheld), (59, 41), "{decided:?}");
    if let Ok(count) = std::env::var("SLUIS_BENCH_COUNT") {
        let count: usize = count.parse().expect("SLUIS_BENCH_COUNT: a number");
        for _ in 0..count {
            black_box(judge(&engine, &grant, &headers, &body));
        }
        std::process::exit(0);
    }
    c.bench_function("response/judge/mcsd-100", |b| {
        b.iter(|| judge(&engine, &grant, &headers, black_box(&body)))
    });
    c.bench_function("response/parse/mcsd-100", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).unwrap())
    });
}

criterion_group!(group, benches);
criterion_main!(group);
