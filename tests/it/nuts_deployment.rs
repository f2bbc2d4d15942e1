//! The Nuts-shaped deployment of `examples/nuts/` end to end: real NGINX on
//! `examples/nuts/nginx.conf` in front of a FHIR server, Sluis on
//! `examples/nuts/standalone.yaml` as PEP and PDP in one (introspection at a Nuts node
//! stand-in, DPoP proofs checked locally, the `policy/nl` use-case policies, Mitz and the
//! data holder's FHIR server as stand-ins from the test kit), and knooppunt's `/pdp` door
//! reached through the same NGINX as a knooppunt PEP reaches it.
//!
//! Without NGINX (`scripts/install-nginx.sh`) the test says so and passes, unless
//! `SLUIS_REQUIRE_NGINX=1`.

use sluis_test_kit as kit;

use kit::gateway::*;
use kit::mitz::MitzStandIn;
use kit::nuts::*;
use kit::*;
use serde_json::{Value, json};
use sluis_core::sources::mitz::MitzDecision;

const NUTS_ISS: &str = "https://nuts.example.org";
/// The requesting care organisation.
const URA: &str = "24173480";

/// `examples/nuts/standalone.yaml` with its placeholders pointed at the stand-ins.
fn standalone_config(node: std::net::SocketAddr, sources: &str) -> String {
    let example = std::fs::read_to_string(repo_path("examples/nuts/standalone.yaml")).unwrap();
    let endpoint = "https://nuts-node:8443/internal/auth/v2/accesstoken/introspect";
    assert!(
        example.contains(endpoint),
        "the example's node endpoint moved"
    );
    let (head, rest) = example.split_once("\nsources:\n").unwrap();
    let (_, tail) = rest.split_once("\ndoors:\n").unwrap();
    format!("{head}\n{sources}\ndoors:\n{tail}")
        .replace(
            endpoint,
            &format!("http://{node}{INTROSPECTION_PATH}\n      allow_insecure_http: true"),
        )
        .replace(
            "../../policy/nl",
            &repo_path("policy/nl").display().to_string(),
        )
}

/// The introspection answer for an active token with `scope`, bound to the DPoP fixture
/// key when `bound`.
fn introspection(scope: &str, bound: bool) -> Value {
    let mut claims = json!({
        "active": true, "iss": NUTS_ISS, "client_id": "https://requester.example.org",
        "scope": scope, "organization_ura": URA, "organization_facility_type": "Z3",
        "subject_role": "01.015", "exp": now() + 600, "iat": now() - 10,
    });
    if bound {
        claims["cnf"] = json!({"jkt": kit::dpop::jkt()});
    }
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_and_sluis_replace_knooppunts_pep_and_pdp() {
    let Some(nginx) = system_binary("nginx") else {
        return;
    };
    let node = NutsNode::default();
    let node_address = node.start().await;
    let holder = HolderFhir::new(vec![
        patient("p1", "900186021"),
        patient("p2", "999999990"),
        eoverdracht_consent("c1", URA, &["Task/t1", "Composition/c1"]),
    ]);
    let holder_url = holder.start().await;
    let mitz = MitzStandIn::start().await;
    mitz.set_reply_for("999999990", MitzDecision::Deny);

    let (upstream_port, seen) = upstream().await;
    let setup = Setup::new(
        &standalone_config(node_address, &sources_yaml(&holder_url, &mitz)),
        &[],
    );
    let sluis = Server::start(&setup.config_path()).await;
    let listen = free_port();
    let _nginx = start_nginx_on(
        &nginx,
        "examples/nuts/nginx.conf",
        setup.dir.path(),
        listen,
        sluis.http,
        upstream_port,
    );
    wait_for_port("nginx", listen).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{listen}");

    // BgZ with a DPoP-bound token: each request with a fresh proof for its URL.
    node.register("bgz-token", introspection("bgz", true));
    let mut proofs = 0;
    let mut dpop = |method: &str, path: &str, query: &str| {
        proofs += 1;
        let proof = kit::dpop::proof(
            method,
            &format!("{base}{path}"),
            "bgz-token",
            0,
            &format!("proof-{proofs}"),
        );
        let url = if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        };
        client
            .request(method.parse().unwrap(), url)
            .header("authorization", "DPoP bgz-token")
            .header("dpop", proof)
            .header("x-sluis-policy", "spoofed")
    };
    // The replay cache refuses proofs that could predate it (a restart forgets which were
    // used), so the first proofs after start are refused until the clock passes that.
    let mut warm = false;
    for _ in 0..100 {
        let response = dpop("GET", "/fhir/Condition", "patient=Patient/p1")
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            warm = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(warm, "no fresh DPoP proof was accepted");
    seen.lock().unwrap().clear();
    let allowed = [
        ("/fhir/Condition", "patient=Patient/p1"),
        (
            "/fhir/Coverage",
            "patient=Patient/p1&_include=Coverage:payor:Organization&_include=Coverage:payor:Patient",
        ),
        (
            "/fhir/Observation/$lastn",
            "patient=Patient/p1&category=http://snomed.info/sct|384821006,http://snomed.info/sct|118228005",
        ),
    ];
    for (path, query) in allowed {
        let response = dpop("GET", path, query).send().await.unwrap();
        let status = response.status();
        let challenge = format!("{:?}", response.headers().get("www-authenticate"));
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{path}?{query}: {challenge} {body}");
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let headers = &seen[0]["headers"];
        assert_eq!(
            seen[0]["uri"], "/fhir/Condition?patient=Patient/p1",
            "{seen:?}"
        );
        for header in ["authorization", "dpop", "x-sluis-policy"] {
            assert!(
                headers.get(header).is_none(),
                "{header} reached the FHIR server"
            );
        }
    }
    // Denied: the patient refused in Mitz; not a BgZ query; a query naming no patient.
    for (path, query, status) in [
        ("/fhir/Condition", "patient=Patient/p2", 403),
        (
            "/fhir/Coverage",
            "patient=Patient/p1&_include=Coverage:payor:Organization",
            403,
        ),
        ("/fhir/Condition", "", 403),
        ("/fhir/Patient/p1", "", 403),
    ] {
        let response = dpop("GET", path, query).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}?{query}");
    }
    // The DPoP proof is checked here, by Sluis: missing, replayed, for another URL, or
    // the bound token presented as Bearer — each a 401 with a DPoP challenge.
    let condition = format!("{base}/fhir/Condition?patient=Patient/p1");
    let used = kit::dpop::proof(
        "GET",
        &format!("{base}/fhir/Condition"),
        "bgz-token",
        0,
        "once",
    );
    let other = kit::dpop::proof(
        "GET",
        &format!("{base}/fhir/Consent"),
        "bgz-token",
        0,
        "other",
    );
    let first = client
        .get(&condition)
        .header("authorization", "DPoP bgz-token")
        .header("dpop", &used)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    for (authorization, proof, challenge) in [
        ("DPoP bgz-token", None, "DPoP proof missing"),
        ("DPoP bgz-token", Some(&used), "DPoP proof was already used"),
        (
            "DPoP bgz-token",
            Some(&other),
            "DPoP proof htu does not match the request URL",
        ),
        (
            "Bearer bgz-token",
            None,
            "token is bound to a DPoP key: present it with the DPoP scheme and a proof",
        ),
    ] {
        let mut request = client
            .get(&condition)
            .header("authorization", authorization);
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization} {proof:?}");
        let sent = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(sent.contains(challenge), "{sent}");
    }
    // A token the node does not know is inactive: 401.
    let response = client
        .get(&condition)
        .bearer_auth("unknown-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(mitz.calls(), 2, "one question per patient, cached after");

    // eOverdracht, sending side: the receiver reads and updates what a local Consent
    // grants it, nothing else. Receiving side: the notification POSTed to the base.
    node.register("sender-token", introspection("eoverdracht_sender", false));
    node.register(
        "receiver-token",
        introspection("eoverdracht_receiver", false),
    );
    for (token, method, path, status) in [
        ("sender-token", "GET", "/fhir/Task/t1", 200),
        ("sender-token", "PUT", "/fhir/Task/t1", 200),
        ("sender-token", "GET", "/fhir/Composition/c1/$document", 200),
        ("sender-token", "GET", "/fhir/Task/t2", 403),
        ("sender-token", "GET", "/fhir/Patient/p1", 403),
        ("receiver-token", "POST", "/fhir/", 200),
        ("receiver-token", "GET", "/fhir/Task/t1", 403),
    ] {
        let response = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(if method == "GET" { "" } else { "{}" })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{token} {method} {path}");
    }
    let introspected = node.calls();
    for _ in 0..3 {
        let response = client
            .get(format!("{base}/fhir/Task/t1"))
            .bearer_auth("sender-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        node.calls(),
        introspected,
        "introspection answers are cached"
    );

    // knooppunt's PEP kept in front: its PDP upstream is NGINX's /pdp. The PEP sends the
    // introspection claims as the subject, the request base-relative, and its context.
    let pep = |scope: &str, method: &str, path: &str, query: &str| {
        json!({"input": {
            "subject": introspection(scope, false),
            "request": {"method": method, "protocol": "HTTP/1.1", "path": path,
                "query": query, "header": {"accept": ["application/fhir+json"]}, "body": ""},
            "context": {"connection_type_code": "hl7-fhir-rest",
                "data_holder_organization_id": "00000659", "data_holder_facility_type": "Z3",
                "patient_bsn": ""}}})
    };
    for (body, allow) in [
        (pep("bgz", "GET", "/Condition", "patient=Patient/p1"), true),
        (pep("bgz", "GET", "/Condition", "patient=Patient/p2"), false),
        (pep("eoverdracht_sender", "GET", "/Task/t1", ""), true),
        (pep("eoverdracht_sender", "GET", "/Task/t2", ""), false),
    ] {
        let response = client
            .post(format!("{base}/pdp"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["allow"], allow, "{body} → {answer}");
    }
    // The PEP's context BSN must be the named patient's.
    let mut body = pep("bgz", "GET", "/Condition", "patient=Patient/p1");
    body["input"]["context"]["patient_bsn"] = json!("999999990");
    let answer: Value = client
        .post(format!("{base}/pdp"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["allow"], false, "{answer}");
    assert!(
        !answer.to_string().contains("999999990"),
        "a BSN in the answer: {answer}"
    );
    sluis.stop().await;
}
