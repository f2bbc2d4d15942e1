//! Policy semantics: selection, deny overrides allow, default deny, failing closed, and
//! what an allow does to the request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use super::*;
use crate::authn::Identity;

fn set(policies: &str) -> Result<PolicySet, Vec<LoadError>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), policies).unwrap();
    let config = LoadSettings {
        policies: vec!["p.yaml".into()],
        issuers: vec!["test".into()],
        base_dir: dir.path().to_owned(),
        ..LoadSettings::default()
    };
    PolicySet::load(&config)
}

fn errors(policies: &str) -> Vec<String> {
    set(policies)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn identity(scopes: &[&str]) -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("act".into(), serde_json::json!({"sub": "bob"}));
    Identity {
        client_id: Some("app".into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims,
        payload_json: r#"{"sub":"alice"}"#.into(),
        ..Identity::for_tests("test", "https://i", Some("alice"))
    }
}

fn request(method: &str, target: &str) -> AccessRequest {
    let mut request = AccessRequest {
        method: method.into(),
        host: "api.example.org:8443".into(),
        ..Default::default()
    };
    request.set_target(target);
    request
}

const POLICIES: &str = r#"
policies:
  - id: first
    match: {paths: ["/a/**"], methods: [get]}
    issuers: [test]
    rules:
      - {id: broken-allow, allow: "token.claims.nope.deeper == 1"}
      - {id: allow-all, allow: "true"}
      - {id: deny-bob, deny: "token.act.sub == 'bob' && request.path == '/a/bob'", status: 404, message: gone}
    response:
      set_headers:
        x-user: token.sub
        x-maybe: "null"
        x-actor: token.act.sub
      remove_headers: [X-Debug]
      forward_claims: claims
      set_query: {tenant: "'t1'"}
      remove_query: [debug]
  - id: second
    match: {hosts: ["*.example.org"], paths: ["/a/**"]}
    issuers: [test]
    rules:
      - {id: broken-deny, deny: "token.claims.nope.deeper == 1"}
      - {id: allow-all, allow: "true"}
  - id: uniform
    match: {paths: ["/u/**"]}
    issuers: [test]
    scopes: [needed]
    rules:
      - {id: never, allow: "false"}
    deny_response: {status: 404, headers: {content-type: text/plain}, body: "not found"}
"#;

#[test]
fn first_matching_policy_decides() {
    let set = set(POLICIES).unwrap();
    assert_eq!(&*set.select(&request("GET", "/a/x")).unwrap().id, "first");
    assert_eq!(&*set.select(&request("POST", "/a/x")).unwrap().id, "second");
    assert!(set.select(&request("GET", "/b")).is_err());
}

#[test]
fn the_gateway_can_name_the_policy() {
    let set = set(POLICIES).unwrap();
    let mut named = request("GET", "/anything");
    named
        .context
        .insert(crate::request::POLICY_CONTEXT_KEY.into(), "uniform".into());
    assert_eq!(&*set.select(&named).unwrap().id, "uniform");
    named
        .context
        .insert(crate::request::POLICY_CONTEXT_KEY.into(), "missing".into());
    assert!(set.select(&named).unwrap_err().contains("`missing`"));
}

#[test]
fn deny_overrides_allow() {
    let set = set(POLICIES).unwrap();
    let policy = set.get("first").unwrap();
    let decision = policy.evaluate(
        &request("GET", "/a/bob"),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(&*decision.rule, "deny-bob");
    assert_eq!(decision.status(), 404);
    match decision.outcome {
        Outcome::Deny(deny) => {
            assert_eq!(deny.body, r#"{"error":"access_denied","message":"gone"}"#)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failing_allow_rule_does_not_allow_and_the_next_one_decides() {
    let set = set(POLICIES).unwrap();
    let decision = set.get("first").unwrap().evaluate(
        &request("GET", "/a/x"),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert!(decision.is_allow(), "{decision:?}");
    assert_eq!(&*decision.rule, "allow-all");
}

#[test]
fn a_failing_deny_rule_denies() {
    let set = set(POLICIES).unwrap();
    let decision = set.get("second").unwrap().evaluate(
        &request("POST", "/a/x"),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(decision.status(), 403);
    assert_eq!(&*decision.rule, "broken-deny");
    assert!(
        decision.reason.contains("failing closed"),
        "{}",
        decision.reason
    );
}

#[test]
fn allow_sets_and_strips_headers_and_query() {
    let set = set(POLICIES).unwrap();
    let mut request = request("GET", "/a/x?debug=1");
    request.headers.insert("x-sluis-spoofed".into(), "1".into());
    request.headers.insert("x-user".into(), "mallory".into());
    let decision =
        set.get("first")
            .unwrap()
            .evaluate(&request, Some(&identity(&[])), &FlowIndex::new(), None);
    let Outcome::Allow(allow) = decision.outcome else {
        panic!("{decision:?}")
    };
    assert_eq!(
        allow.set_headers,
        vec![
            ("x-actor".to_string(), "bob".to_string()),
            ("x-user".to_string(), "alice".to_string()),
            ("claims".to_string(), r#"{"sub":"alice"}"#.to_string()),
        ]
    );
    // authorization by default; the policy's own; every x-sluis-* the client sent; and a
    // header whose value is null this time, so a client copy cannot pass for ours.
    for removed in ["authorization", "x-debug", "x-sluis-spoofed", "x-maybe"] {
        assert!(
            allow.remove_headers.contains(&removed.to_string()),
            "{removed}: {allow:?}"
        );
    }
    // Set headers are overwritten, never also removed (Envoy would drop our value).
    assert!(!allow.remove_headers.contains(&"x-user".to_string()));
    assert_eq!(
        allow.set_query,
        vec![("tenant".to_string(), "t1".to_string())]
    );
    assert_eq!(allow.remove_query, vec!["debug".to_string()]);
}

#[test]
fn a_shadow_policy_lets_through_without_vouching_for_anything() {
    let set =
        set(&POLICIES.replace("  - id: first\n", "  - id: first\n    mode: shadow\n")).unwrap();
    let first = set.get("first").unwrap();
    assert!(first.is_shadow());
    assert!(!set.get("second").unwrap().is_shadow());
    assert_eq!(set.shadow_warnings().len(), 1);
    let mut request = request("GET", "/a/x?debug=1");
    request.headers.insert("x-sluis-spoofed".into(), "1".into());
    request.headers.insert("x-user".into(), "mallory".into());
    let allow = first.pass_through(&request);
    // Nothing set, the query untouched; everything an allow removes is removed, and so is
    // every client copy of a header the policy sets (`claims` included).
    assert!(allow.set_headers.is_empty() && allow.set_query.is_empty());
    assert!(allow.remove_query.is_empty());
    for removed in [
        "authorization",
        "x-debug",
        "x-sluis-spoofed",
        "x-user",
        "x-maybe",
        "x-actor",
        "claims",
    ] {
        assert!(
            allow.remove_headers.contains(&removed.to_string()),
            "{removed}: {allow:?}"
        );
    }
    // A policy that keeps the token for its upstream keeps it in shadow mode too.
    let set = self::set(
        "policies:\n  - {id: k, mode: shadow, issuers: [test], rules: [{id: r, allow: 'true'}], response: {keep_authorization: true}}\n",
    )
    .unwrap();
    let allow = set.get("k").unwrap().pass_through(&request);
    assert!(!allow.remove_headers.contains(&"authorization".to_string()));
}

#[test]
fn uniform_denials_hide_the_reason() {
    let set = set(POLICIES).unwrap();
    let policy = set.get("uniform").unwrap();
    let expected = Deny {
        status: 404,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: "not found".into(),
    };
    let by_rule = policy.evaluate(
        &request("GET", "/u/1"),
        Some(&identity(&["needed"])),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(by_rule.outcome, Outcome::Deny(expected.clone()));
    let by_scope = policy.deny_scopes(&["needed"]);
    assert_eq!(by_scope.outcome, Outcome::Deny(expected));
    // ...while the log still knows why.
    assert_ne!(by_rule.reason, by_scope.reason);
}

#[test]
fn header_values_cannot_smuggle_lines() {
    let set = set(r#"
policies:
  - id: p
    issuers: [test]
    rules: [{id: a, allow: "true"}]
    response: {set_headers: {x-user: "'a\\r\\nx-admin: yes'"}}
"#)
    .unwrap();
    let decision = set.get("p").unwrap().evaluate(
        &request("GET", "/"),
        Some(&identity(&[])),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(decision.status(), 403);
    assert!(decision.reason.contains("control or non-ASCII characters"));
}

#[test]
fn load_errors_name_file_policy_rule_and_line() {
    let errs = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r1\n        allow: 'request.method =='\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    // The line of `allow:`, and the column inside the quoted expression where the CEL
    // parser stopped (the end of the text).
    assert!(
        errs[0].contains("p.yaml:6:34: policy `p` rule `r1`: invalid CEL"),
        "{errs:?}"
    );

    let errs = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r1\n        allow: 'tokn.sub == 1'\n",
    );
    assert!(errs[0].contains("unknown variable `tokn`"), "{errs:?}");

    let errs = errors("policies:\n  - id: p\n    issuers: [test]\n    rulez: []\n");
    assert!(
        errs[0].contains("p.yaml:4:5: policy `p`: unknown field `rulez`"),
        "{errs:?}"
    );

    let errs = errors(
        "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r\n        alow: 'true'\n",
    );
    assert!(
        errs[0].contains("p.yaml:6:9: policy `p` rule `r`: unknown field `alow`"),
        "{errs:?}"
    );

    let errs = errors("policies:\n  - id: p\n    issuers: [nope]\n    rules: []\n");
    assert!(
        errs[0].contains("p.yaml:3:15: policy `p`: issuer `nope` is not configured"),
        "{errs:?}"
    );

    let errs = errors("policies:\n  - id: p\n    rules: []\n");
    assert!(errs[0].contains("anonymous: true"), "{errs:?}");

    let errs = errors("policies: [\n  - id: p\n");
    assert!(
        errs[0].starts_with(&format!("{}", Path::new("p.yaml").display()))
            || errs[0].contains("p.yaml:"),
        "{errs:?}"
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let errs = errors(
        r#"
policies:
  - id: p
    issuers: [test]
    rules:
      - {id: a, allow: "nope"}
      - {id: b, deny: "1 +"}
      - {id: a, allow: "true"}
  - id: p
    issuers: [test]
"#,
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("duplicate rule id")));
    assert!(errs.iter().any(|e| e.contains("duplicate policy id")));
}

fn evaluation(subject: &str, action: &str, resource_type: &str) -> AccessRequest {
    AccessRequest {
        evaluation: Some(crate::request::Evaluation {
            subject: serde_json::json!({"type": "user", "id": subject}),
            action: serde_json::json!({"name": action}),
            resource: serde_json::json!({"type": resource_type, "id": "r-1", "properties": {"owner": subject}}),
            context: serde_json::json!({"ip": "10.0.0.1"}),
        }),
        ..Default::default()
    }
}

const EVALUATION_POLICIES: &str = r#"
policies:
  - id: http
    anonymous: true
    rules: [{id: all, allow: "true"}]
  - id: docs
    match: {evaluation: {actions: [read, write], resource_types: [doc]}}
    anonymous: true
    data: {admins: [alice], limits: {write: 2}}
    rules:
      - id: admin
        allow: subject.id in data.admins
      - id: owner-reads
        allow: action.name == 'read' && resource.properties.owner == subject.id && context.ip.startsWith('10.')
  - id: any-evaluation
    match: {evaluation: {}}
    anonymous: true
    rules:
      - id: no-request
        allow: request.method == '' && token == null && data == null && subject.type == 'user'
"#;

#[test]
fn evaluations_go_only_to_policies_that_match_evaluations() {
    let set = set(EVALUATION_POLICIES).unwrap();
    let chosen = |request: &AccessRequest| set.select(request).map(|p| p.id.to_string());
    // An HTTP request never reaches an evaluation policy; an evaluation never an HTTP one.
    assert_eq!(chosen(&request("GET", "/x")), Ok("http".into()));
    assert_eq!(chosen(&evaluation("bob", "read", "doc")), Ok("docs".into()));
    assert_eq!(
        chosen(&evaluation("bob", "delete", "doc")),
        Ok("any-evaluation".into())
    );
    assert_eq!(
        chosen(&evaluation("bob", "read", "folder")),
        Ok("any-evaluation".into())
    );
    assert_eq!(
        set.policies[0].mismatch(&evaluation("bob", "read", "doc")),
        Some("an evaluation")
    );
    assert_eq!(
        set.policies[1].mismatch(&request("GET", "/x")),
        Some("not an evaluation")
    );
    assert_eq!(
        set.policies[1].mismatch(&evaluation("b", "x", "doc")),
        Some("action")
    );
    assert_eq!(
        set.policies[1].mismatch(&evaluation("b", "read", "x")),
        Some("resource type")
    );
}

#[test]
fn rules_read_the_evaluation_and_the_policy_data() {
    let set = set(EVALUATION_POLICIES).unwrap();
    let decide = |request: &AccessRequest| {
        let policy = set.select(request).unwrap();
        policy.evaluate(request, None, &FlowIndex::new(), None)
    };
    let alice = decide(&evaluation("alice", "write", "doc"));
    assert_eq!((alice.is_allow(), &*alice.rule), (true, "admin"));
    let bob = decide(&evaluation("bob", "read", "doc"));
    assert_eq!((bob.is_allow(), &*bob.rule), (true, "owner-reads"));
    assert!(!decide(&evaluation("bob", "write", "doc")).is_allow());
    // Without `data`, `data` is null; the HTTP fields of an evaluation are empty.
    let other = decide(&evaluation("bob", "delete", "doc"));
    assert_eq!((other.is_allow(), &*other.rule), (true, "no-request"));
}

#[test]
fn evaluation_policies_are_checked_at_load() {
    let errors = errors(
        r#"
policies:
  - id: mixed
    match: {paths: ["/x"], evaluation: {}}
    anonymous: true
    rules: [{id: a, allow: "true"}]
  - id: with-token
    match: {evaluation: {actions: [read]}}
    issuers: [test]
    rules: [{id: a, allow: "subject.id == token.sub"}]
  - id: bad-data
    anonymous: true
    data: {[1, 2]: x}
    rules: [{id: a, allow: "data != null"}]
  - id: typo
    match: {evaluation: {action: [read]}}
    anonymous: true
"#,
    );
    let text = errors.join("\n");
    assert!(
        text.contains("policy `mixed`: `match.evaluation` decides evaluations, not HTTP requests"),
        "{text}"
    );
    assert!(text.contains("policy `with-token`: a policy that matches evaluations reads the subject from the evaluation, not a token: set `anonymous: true`"), "{text}");
    assert!(text.contains("policy `bad-data`: invalid `data`"), "{text}");
    assert!(
        text.contains("policy `typo`") && text.contains("unknown field `action`"),
        "{text}"
    );
}

const CALLER_POLICIES: &str = r#"
policies:
  - id: register
    issuers: [test]
    scopes: [read]
    caller:
      uzovi: {prefix: "uzovi:", from: [client_id, sub, "claim:uzovi"]}
      agb: {prefix: "agbcode:", from: [act]}
    rules:
      - {id: not-5529, deny: "caller.uzovi == '5529'", status: 403, message: blocked}
      - {id: own, allow: "caller.uzovi != null && request.path == '/r/' + caller.uzovi"}
    response:
      set_headers:
        x-sluis-uzovi: caller.uzovi
        x-sluis-agb: caller.agb
    scope_response:
      status: 400
      headers: {content-type: application/json}
      body: '{"ErrorCode":"bad_request","Error":"Scope is not allowed"}'
    deny_response: {status: 404, body: "not found"}
"#;

fn iwlz_identity(claims: serde_json::Value) -> Identity {
    let mut identity = identity(&["read"]);
    identity.claims = claims.as_object().unwrap().clone();
    identity.sub = None;
    identity.client_id = identity
        .claims
        .get("client_id")
        .and_then(|c| c.as_str())
        .map(str::to_owned);
    identity
}

#[test]
fn caller_identifiers_are_read_by_rules_and_headers() {
    let set = set(CALLER_POLICIES).unwrap();
    let policy = set.get("register").unwrap();
    let decide = |target: &str, claims: serde_json::Value| {
        policy.evaluate(
            &request("POST", target),
            Some(&iwlz_identity(claims)),
            &FlowIndex::new(),
            None,
        )
    };
    let allowed = decide(
        "/r/5000",
        serde_json::json!({"client_id": "uzovi:5000", "act": {"sub": "agbcode:012345678"}}),
    );
    assert_eq!(&*allowed.rule, "own");
    let Outcome::Allow(allow) = &allowed.outcome else {
        panic!("{allowed:?}")
    };
    assert!(
        allow
            .set_headers
            .contains(&("x-sluis-uzovi".into(), "5000".into()))
    );
    assert!(
        allow
            .set_headers
            .contains(&("x-sluis-agb".into(), "012345678".into()))
    );
    // Another party's path, or no UZOVI at all: default deny.
    assert_eq!(
        &*decide("/r/5001", serde_json::json!({"client_id": "uzovi:5000"})).rule,
        "default-deny"
    );
    assert_eq!(
        &*decide("/r/5000", serde_json::json!({"client_id": "5000"})).rule,
        "default-deny"
    );
    // Without an AGB code the header is removed, not set.
    let Outcome::Allow(allow) =
        decide("/r/5000", serde_json::json!({"client_id": "uzovi:5000"})).outcome
    else {
        panic!()
    };
    assert!(allow.remove_headers.contains(&"x-sluis-agb".to_string()));
}

#[test]
fn conflicting_caller_sources_fail_closed() {
    let set = set(CALLER_POLICIES).unwrap();
    let policy = set.get("register").unwrap();
    // client_id says 5000, the plain claim 5529: the deny rule that reads it cannot be
    // dodged (it fails, so it denies), and no allow rule allows.
    let decision = policy.evaluate(
        &request("POST", "/r/5000"),
        Some(&iwlz_identity(
            serde_json::json!({"client_id": "uzovi:5000", "uzovi": "5529"}),
        )),
        &FlowIndex::new(),
        None,
    );
    assert_eq!(&*decision.rule, "not-5529");
    assert!(
        decision.reason.contains("failed to evaluate"),
        "{decision:?}"
    );
    assert!(!decision.is_allow());
}

#[test]
fn the_scope_response_answers_missing_scopes() {
    let policies = set(CALLER_POLICIES).unwrap();
    let decision = policies.get("register").unwrap().deny_scopes(&["read"]);
    assert_eq!(&*decision.rule, "scopes");
    let Outcome::Deny(deny) = decision.outcome else {
        panic!()
    };
    assert_eq!(deny.status, 400);
    assert_eq!(
        deny.body,
        r#"{"ErrorCode":"bad_request","Error":"Scope is not allowed"}"#
    );
    assert_eq!(
        deny.headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    // Without one, RFC 6750's 403 stays the default.
    let decision = set(POLICIES)
        .unwrap()
        .get("first")
        .unwrap()
        .deny_scopes(&["x"]);
    assert_eq!(decision.status(), 403);
}

#[test]
fn caller_mistakes_fail_the_load() {
    let text = errors(
        r#"
policies:
  - id: no-block
    issuers: [test]
    rules: [{id: r, allow: "caller.uzovi == '1'"}]
  - id: undefined
    issuers: [test]
    caller: {uzovi: {from: [sub]}}
    rules: [{id: r, allow: "caller.agb == '1'"}]
    flows: {actor: caller.ura}
  - id: anonymous
    anonymous: true
    caller: {uzovi: {from: [sub]}}
    scope_response: {status: 200}
  - id: bad-source
    issuers: [test]
    caller: {uzovi: {from: [subject]}}
"#,
    )
    .join("\n");
    for expected in [
        "policy `no-block`: reads `caller` but has no `caller` block",
        "policy `undefined`: reads `caller.agb`, which the `caller` block does not define (defined: uzovi)",
        "policy `undefined`: reads `caller.ura`",
        "policy `anonymous`: an anonymous policy has no token to find its `caller` in",
        "policy `anonymous`: scope_response status 200 is not a 4xx or 5xx",
        "policy `bad-source`: caller identifier `uzovi`: `subject` is not a source",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

/// `valid_header_name` before it asked `http::HeaderName`: the RFC 9110 token characters,
/// and not a name the gateway owns.
fn hand_written_header_name(name: &str) -> bool {
    const RESERVED: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
    ];
    !name.is_empty()
        && !RESERVED.contains(&name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn header_names_are_checked_by_http_as_before(name in "[ -~\\t\\u{80}-\\u{ff}]{0,12}|host|te|x-[a-zA-Z0-9]{0,6}") {
        proptest::prop_assert_eq!(super::valid_header_name(&name), hand_written_header_name(&name));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20000))]

    /// The literal prefix only ever passes over paths the glob would not match: selection
    /// is the glob's alone.
    #[test]
    fn a_path_without_the_literal_prefix_never_matches_the_glob(
        pattern in "[/a.b*?{},\\[\\]!\\\\-]{0,10}",
        path in "[/a.b-]{0,8}",
    ) {
        if !path.starts_with(super::literal_prefix(&pattern)) {
            proptest::prop_assert!(!fast_glob::glob_match(pattern.as_str(), path.as_str()));
        }
    }

    /// Selection by comparing text is selection by `fast_glob`, whatever the pattern.
    #[test]
    fn a_path_glob_matches_what_fast_glob_matches(
        pattern in "[/a.b*?{},\\[\\]!\\\\-]{0,10}|(/[ab.]{0,3}){0,3}(/\\*\\*|/\\*|/)?",
        path in "[/a.b-]{0,8}|(/[ab.]{0,3}){0,4}/?",
    ) {
        proptest::prop_assert_eq!(
            super::PathGlob::of(&pattern).matches(&pattern, &path),
            fast_glob::glob_match(pattern.as_str(), path.as_str()),
            "{:?}", super::PathGlob::of(&pattern)
        );
    }

    #[test]
    fn a_path_below_a_plain_prefix_is_judged_by_the_glob(
        prefix in "(/[ab.]{1,3}){1,3}",
        rest in "(/\\*\\*|/\\*|/[ab]|/\\{a,b\\}){0,2}",
        path in "(/[ab.]{1,3}){0,4}/?",
    ) {
        let pattern = format!("{prefix}{rest}");
        if fast_glob::glob_match(pattern.as_str(), path.as_str()) {
            proptest::prop_assert!(path.starts_with(super::literal_prefix(&pattern)));
        }
    }
}

#[test]
fn literal_prefixes_stop_at_the_first_special_character() {
    assert_eq!(
        super::literal_prefix("/eoverdracht/fhir/**"),
        "/eoverdracht/fhir"
    );
    assert_eq!(super::literal_prefix("/mcsd"), "/mcsd");
    assert_eq!(
        super::literal_prefix("/bgz/fhir/Patient/*/*"),
        "/bgz/fhir/Patient"
    );
    assert_eq!(super::literal_prefix("/a/{b,c}"), "/a");
    assert_eq!(super::literal_prefix("/a\\*"), "/a");
    assert_eq!(super::literal_prefix("!/admin/**"), "");
    assert_eq!(super::literal_prefix("**"), "");
    assert!(matches!(
        super::PathGlob::of("/mcsd"),
        super::PathGlob::Exact
    ));
    assert!(
        matches!(super::PathGlob::of("/eoverdracht/fhir/**"), super::PathGlob::Below(b) if &*b == "/eoverdracht/fhir/")
    );
    assert!(matches!(
        super::PathGlob::of("/bgz/fhir/Patient/*"),
        super::PathGlob::Glob(_)
    ));
    for pattern in [
        "/eoverdracht/fhir/**",
        "/mcsd",
        "/mcsd/**",
        "/fhir",
        "/a/",
        "/a//**",
    ] {
        for path in [
            "/eoverdracht/fhir/Patient/123",
            "/eoverdracht/fhir/",
            "/eoverdracht/fhir",
            "/eoverdracht/fhir//x",
            "/eoverdracht/fhirx/Patient",
            "/eoverdracht/fhir/../admin",
            "/mcsd",
            "/mcsd/",
            "/mcsd/Organization",
            "/fhir",
            "/fhir/",
            "/a/",
            "/a//b",
            "/a",
            "",
        ] {
            assert_eq!(
                super::PathGlob::of(pattern).matches(pattern, path),
                fast_glob::glob_match(pattern, path),
                "{pattern} {path}"
            );
        }
    }
    // A policy is still chosen by its glob alone.
    let policies = set(r#"
policies:
  - id: below
    match: {paths: ["/fhir/**"]}
    issuers: [test]
    rules: [{id: r, allow: "true"}]
"#)
    .unwrap();
    for path in ["/fhir", "/fhir/", "/fhir/Patient/1", "/fhirx", "/other", ""] {
        let request = AccessRequest {
            path: path.into(),
            method: "GET".into(),
            ..Default::default()
        };
        let chosen = policies.select(&request).is_ok();
        assert_eq!(chosen, fast_glob::glob_match("/fhir/**", path), "{path}");
        if path == "/fhir/Patient/1" {
            assert!(chosen);
        }
    }
}

/// The diagnostics for one policy file `p.yaml`, as `policy::validate` returns them.
fn diagnostics(policies: &str) -> Vec<Diagnostic> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), policies).unwrap();
    validate(&LoadSettings {
        policies: vec![dir.path().join("p.yaml")],
        issuers: vec!["test".into()],
        ..LoadSettings::default()
    })
}

fn rule(condition: &str) -> String {
    format!(
        "policies:\n  - id: p\n    issuers: [test]\n    rules:\n      - id: r\n        allow: {condition}\n"
    )
}

#[test]
fn an_unknown_function_is_refused_at_load_with_the_near_name() {
    let found = diagnostics(&rule("request.path.startswith('/api')"));
    assert_eq!(found.len(), 1, "{found:?}");
    let d = &found[0];
    assert_eq!(d.kind, DiagnosticKind::CelUnknownFunction);
    assert_eq!(
        (d.policy.as_deref(), d.rule.as_deref()),
        (Some("p"), Some("r"))
    );
    assert_eq!((d.line, d.column), (Some(6), Some(9)), "the `allow:` key");
    assert!(
        d.message
            .ends_with("unknown function `startswith` (did you mean `startsWith`?)"),
        "{d}"
    );

    let found = diagnostics(&rule("token.scopes.containsAl(['a'])"));
    assert!(
        found[0].message.contains("(did you mean `containsAll`?)"),
        "{found:?}"
    );
    let found = diagnostics(&rule("frobnicate(request.path)"));
    assert_eq!(found[0].kind, DiagnosticKind::CelUnknownFunction);
    assert!(
        found[0].message.ends_with("unknown function `frobnicate`"),
        "{found:?}"
    );
    // A global-only CEL function called as a method is as undefined as at run time.
    let found = diagnostics(&rule("request.path.timestamp()"));
    assert_eq!(
        found[0].kind,
        DiagnosticKind::CelUnknownFunction,
        "{found:?}"
    );
}

#[test]
fn known_functions_and_macros_pass() {
    for condition in [
        "request.path.startsWith('/api') && request.path.endsWith('x')",
        "request.path.matchesGlob('/api/**') || request.path.matches('^/a')",
        "token.scopes.containsAll(['a']) || token.scopes.containsAny(['b'])",
        "size(token.scopes) > 0 && token.scopes.size() > 0 && string(1) == '1'",
        "token.scopes.exists(s, s == 'a') && token.scopes.all(s, s != '') && has(token.sub)",
        "timestamp('2026-01-01T00:00:00Z') < now && duration('1h') > duration('1m')",
        "smartPermits(token.scopes, request, '/fhir')",
        "int('1') == 1 && 'a' in ['a'] && !false && -1 < 0",
    ] {
        let found = diagnostics(&rule(&format!("\"{condition}\"")));
        assert!(found.is_empty(), "{condition}: {found:?}");
    }
}

#[test]
fn every_unknown_key_of_a_policy_is_reported_at_once_with_its_line() {
    // Three unknown keys in the policy (one nested in `match`), two in one rule: each at
    // its own line, with a guess when a known name is near, in one answer.
    let found = diagnostics(concat!(
        "policies:\n",
        "  - id: p\n",
        "    issuers: [test]\n",
        "    scope: [read]\n",
        "    match:\n",
        "      paths: ['/a']\n",
        "      hostz: [x]\n",
        "    colour: blue\n",
        "    rules:\n",
        "      - id: r\n",
        "        alow: 'true'\n",
        "        mesage: no\n",
        "  - id: q\n",
        "    issuers: [test]\n",
        "    rulez: []\n",
    ));
    let unknown: Vec<(Option<usize>, &str)> = found
        .iter()
        .filter(|d| d.kind == DiagnosticKind::UnknownField)
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    let expect = [
        (4, "unknown field `scope` (did you mean `scopes`?)"),
        (7, "unknown field `hostz` (did you mean `hosts`?)"),
        (8, "unknown field `colour`, expected"),
        (11, "unknown field `alow` (did you mean `allow`?)"),
        (12, "unknown field `mesage` (did you mean `message`?)"),
        (15, "unknown field `rulez` (did you mean `rules`?)"),
    ];
    assert_eq!(unknown.len(), expect.len(), "{found:#?}");
    for (line, start) in expect {
        assert!(
            unknown
                .iter()
                .any(|(at, message)| *at == Some(line) && message.starts_with(start)),
            "line {line}: {start}: {found:#?}"
        );
    }
    // Nothing else: no consequence of the keys left out (a rule without `allow`).
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    // The rule's problems name it.
    assert!(
        found
            .iter()
            .filter(|d| d.line == Some(11) || d.line == Some(12))
            .all(|d| d.rule.as_deref() == Some("r")),
        "{found:#?}"
    );

    // An unknown key and a wrong value: both reported.
    let found = diagnostics(
        "policies:\n  - id: p\n    issuers: [test]\n    colour: blue\n    anonymous: maybe\n",
    );
    let kinds: Vec<DiagnosticKind> = found.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [DiagnosticKind::UnknownField, DiagnosticKind::InvalidValue],
        "{found:#?}"
    );
}

#[test]
fn diagnostics_are_typed_and_located_by_the_yaml_parser() {
    // A policy id used twice: at the second `id:`.
    let found = diagnostics(
        "policies:\n  - id: p\n    issuers: [test]\n  # a comment\n  - id: p\n    issuers: [test]\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, DiagnosticKind::DuplicateId);
    assert_eq!((found[0].line, found[0].column), (Some(5), Some(5)));

    // The rule is found by its place, not by searching for its id: both rules are `r`
    // in different policies, and the second one's condition is reported.
    let found = diagnostics(
        "policies:\n  - id: a\n    issuers: [test]\n    rules: [{id: r, allow: 'true'}]\n  - id: b\n    issuers: [test]\n    rules:\n      - id: r\n        deny: 'nope('\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, DiagnosticKind::CelParse);
    assert_eq!(found[0].line, Some(9), "{}", found[0]);

    // A one-line expression: where the CEL parser stopped, inside the quotes.
    let found = diagnostics(&rule("'1 + )'"));
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(6), Some(21)),
        "the `)`"
    );

    // An expression over several lines: the line of its key, and where in it.
    let found = diagnostics(&rule(
        "|\n          request.path == '/'\n            && ==\n",
    ));
    assert_eq!(found[0].kind, DiagnosticKind::CelParse);
    assert_eq!(found[0].line, Some(6), "{}", found[0]);
    assert!(found[0].message.contains("(line 2, column"), "{}", found[0]);

    // A nested unknown key, and a value of the wrong type, at their keys.
    let found = diagnostics(
        "policies:\n  - id: p\n    issuers: [test]\n    match:\n      paths: ['/a']\n      hostz: [x]\n",
    );
    assert_eq!(found[0].kind, DiagnosticKind::UnknownField);
    assert_eq!((found[0].line, found[0].column), (Some(6), Some(7)));
    let found = diagnostics("policies:\n  - id: p\n    issuers: [test]\n    anonymous: maybe\n");
    assert_eq!(found[0].kind, DiagnosticKind::InvalidValue, "{found:?}");
    assert_eq!(found[0].line, Some(4), "{}", found[0]);

    // A response header expression, at its own key.
    let found = diagnostics(
        "policies:\n  - id: p\n    issuers: [test]\n    response:\n      set_headers:\n        X-User: token.sub +\n",
    );
    assert_eq!(found[0].kind, DiagnosticKind::CelParse, "{found:?}");
    assert_eq!(found[0].line, Some(6), "{}", found[0]);

    // The YAML itself.
    let found = diagnostics("policies:\n  - id: p\n    issuers: [test\n");
    assert_eq!(found[0].kind, DiagnosticKind::Syntax);
    assert!(found[0].line.is_some());

    // A good set has none.
    assert!(diagnostics(&rule("'true'")).is_empty());
}

#[test]
fn narrowing_and_graphql_problems_are_located_at_their_own_keys() {
    let narrowing = |block: &str| {
        diagnostics(&format!(
            "policies:\n  - id: p\n    issuers: [test]\n    narrowing:\n{block}"
        ))
    };
    // An unknown resource type, at its own key (line 6), not at `narrowing:` (line 4).
    let found = narrowing("      resources:\n        patient:\n          organization: \"'x'\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(6), Some(9)),
        "{}",
        found[0]
    );
    // A parameter Sluis may not set, at the parameter.
    let found = narrowing("      resources:\n        Patient:\n          _include: \"'x'\"\n");
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(7), Some(11)),
        "{}",
        found[0]
    );
    // A CEL mistake in a one-line value: inside the value, where the parser stopped.
    let found =
        narrowing("      resources:\n        Patient:\n          organization: \"1 + )\"\n");
    assert_eq!(found[0].kind, DiagnosticKind::CelParse, "{found:?}");
    assert_eq!(found[0].line, Some(7), "{}", found[0]);
    assert!(found[0].column > Some(11), "{}", found[0]);
    // A bad base path, at `base_path`.
    let found = narrowing(
        "      base_path: fhir\n      resources:\n        Patient: {organization: \"'x'\"}\n",
    );
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(5), Some(7)),
        "{}",
        found[0]
    );

    let graphql = |block: &str| {
        diagnostics(&format!(
            "policies:\n  - id: p\n    issuers: [test]\n    graphql:\n{block}"
        ))
    };
    // A limit of 0, at the limit.
    let found = graphql("      limits:\n        max_depth: 0\n");
    assert_eq!(
        (found[0].line, found[0].column),
        (Some(6), Some(9)),
        "{}",
        found[0]
    );
    // A template file that cannot be read: at the second template's `file`.
    let found = graphql(
        "      templates:\n        - file: missing-a.graphql\n          name: a\n        - name: b\n          file: missing-b.graphql\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (found[1].line, found[1].column),
        (Some(9), Some(11)),
        "{}",
        found[1]
    );
}

proptest::proptest! {
    /// Whatever a condition holds, validation answers with diagnostics (never a panic),
    /// and every position it gives is inside the file.
    #[test]
    fn any_condition_is_validated_with_positions_inside_the_file(
        condition in "[a-zA-Z0-9_.()'\" =!<>&|\\[\\],+-]{0,40}",
    ) {
        let text = rule(&format!("'{}'", condition.replace('\'', "''")));
        let lines = text.lines().count();
        for d in diagnostics(&text) {
            if let Some(line) = d.line {
                proptest::prop_assert!(line >= 1 && line <= lines, "{d}");
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any unknown keys, in a policy and in its rule, are each reported once at their own
    /// line, in one answer, and nothing else is.
    #[test]
    fn any_unknown_keys_are_each_reported_at_their_line(
        policy_keys in proptest::collection::btree_set("x_[a-z]{1,8}", 0..6),
        rule_keys in proptest::collection::btree_set("y_[a-z]{1,8}", 0..6),
    ) {
        let mut text = String::from("policies:\n  - id: p\n    issuers: [test]\n");
        let mut expected = Vec::new();
        for key in &policy_keys {
            text.push_str(&format!("    {key}: 1\n"));
            expected.push(text.lines().count());
        }
        text.push_str("    rules:\n      - id: r\n        allow: 'true'\n");
        for key in &rule_keys {
            text.push_str(&format!("        {key}: [a]\n"));
            expected.push(text.lines().count());
        }
        let found = diagnostics(&text);
        let mut lines: Vec<usize> = found
            .iter()
            .filter(|d| d.kind == DiagnosticKind::UnknownField)
            .filter_map(|d| d.line)
            .collect();
        lines.sort_unstable();
        proptest::prop_assert_eq!(&lines, &expected, "{:#?}", found);
        proptest::prop_assert_eq!(found.len(), expected.len(), "{:#?}", found);
    }
}

/// The repository's example policies, loaded with the config's directory spelled `base`.
fn example_version(base: &Path) -> String {
    let config = LoadSettings {
        policies: vec!["../policy".into()],
        issuers: vec!["nuts-node".into(), "iwlz-auth".into(), "smart-as".into()],
        base_dir: base.to_owned(),
        ..LoadSettings::default()
    };
    PolicySet::load(&config).unwrap().version
}

#[test]
fn the_version_does_not_depend_on_how_the_config_path_is_written() {
    // Unit tests run in crates/sluis-core; the examples are two levels up.
    let absolute = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let spellings = [
        PathBuf::from("../../examples"),
        PathBuf::from("./../../examples"),
        absolute.clone(),
        absolute.join("../examples"),
    ];
    let versions: Vec<String> = spellings.iter().map(|b| example_version(b)).collect();
    assert!(
        versions.iter().all(|v| *v == versions[0]),
        "{spellings:?} gave {versions:?}"
    );

    // The same files elsewhere: the same version.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    copy_dir(&absolute.join("../policy"), &dir.path().join("policy"));
    assert_eq!(example_version(&dir.path().join("examples")), versions[0]);

    // One byte of content, or a file's name, changes it.
    let eo = dir.path().join("policy/eoverdracht-receiver.yaml");
    let text = std::fs::read_to_string(&eo).unwrap();
    std::fs::write(&eo, format!("{text}\n")).unwrap();
    let edited = example_version(&dir.path().join("examples"));
    assert_ne!(edited, versions[0]);
    std::fs::rename(&eo, dir.path().join("policy/eoverdracht.yaml")).unwrap();
    let renamed = example_version(&dir.path().join("examples"));
    assert_ne!(renamed, edited);
}

#[test]
fn the_version_depends_on_the_order_of_the_configured_entries() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |id: &str| {
        format!(
            "policies:\n  - id: {id}\n    match: {{paths: [\"/{id}/**\"]}}\n    issuers: [test]\n    rules:\n      - {{id: all, allow: \"true\"}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), policy("a")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), policy("b")).unwrap();
    let version = |entries: [&str; 2]| {
        let config = LoadSettings {
            policies: entries.iter().map(PathBuf::from).collect(),
            issuers: vec!["test".into()],
            base_dir: dir.path().to_owned(),
            ..LoadSettings::default()
        };
        PolicySet::load(&config).unwrap().version
    };
    assert_ne!(version(["a.yaml", "b.yaml"]), version(["b.yaml", "a.yaml"]));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn selectors_are_checked_at_load_and_their_policies_never_match() {
    let good = r#"
policies:
  - id: sel
    match: {paths: ["/fhir/**"]}
    issuers: [test]
    select: {by_scope: [a, b], normalize: knooppunt}
  - {id: a, issuers: [test], rules: [{id: r, allow: "true"}]}
  - {id: b, issuers: [test], rules: []}
  - {id: other, issuers: [test], rules: []}
"#;
    let set = set(good).unwrap();
    // `a` and `b` have no `match` (every path), but only a scope chooses them; `sel`
    // is first for its paths, and `other` for the rest.
    assert_eq!(&*set.select(&request("GET", "/fhir/x")).unwrap().id, "sel");
    assert_eq!(&*set.select(&request("GET", "/y")).unwrap().id, "other");
    assert_eq!(
        spec::ScopeNormalize::Knooppunt.apply("MCSD-Update"),
        "mcsd_update"
    );
    let bad = r#"
policies:
  - id: sel
    issuers: [test]
    select: {by_scope: [missing, matched, selecting, shadowed, narrow]}
  - {id: matched, match: {paths: ["/m"]}, issuers: [test], rules: []}
  - {id: selecting, issuers: [test], select: {by_scope: [matched]}}
  - {id: shadowed, mode: shadow, issuers: [test], rules: []}
  - {id: narrow, issuers: [], anonymous: true, rules: []}
"#;
    let own_rules = "policies:\n  - {id: sel, issuers: [test], select: {by_scope: [a]}, rules: [{id: r, allow: \"true\"}]}\n  - {id: a, issuers: [test]}\n";
    assert!(errors(own_rules).join("\n").contains(
        "a policy with `select` decides through the policies it selects: it cannot have `rules`"
    ));
    let errors = errors(bad).join("\n");
    for expected in [
        "names policy `missing`, which is not loaded",
        "names policy `matched`, which has a `match`",
        "names policy `selecting`, which selects policies itself",
        "names policy `shadowed`, which is in shadow mode",
        "names policy `narrow`, which does not accept issuer `test`",
    ] {
        assert!(errors.contains(expected), "{expected} not in {errors}");
    }
}

mod fhir;
