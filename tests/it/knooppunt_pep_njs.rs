//! A knooppunt-shaped PEP in real NGINX with njs (`examples/nuts/pep-nginx.conf` and
//! `pep.js`, run as shipped with the addresses replaced) in front of Sluis's `/pdp` door:
//! the token introspected at the Nuts node stand-in, DPoP proofs checked by the node, the
//! PDP asked in knooppunt's shape. Its decisions must equal the forward-auth door's for
//! the same request and identity.
//!
//! Without NGINX or its njs module (`scripts/install-nginx.sh`) the test says so and
//! passes, unless `SLUIS_REQUIRE_NGINX=1` (scripts/test.sh sets it).

use sluis_test_kit as kit;

use std::path::Path;

use kit::gateway::*;
use kit::mitz::MitzStandIn;
use kit::nuts::*;
use kit::*;

use crate::knooppunt_pdp::{config, introspection};
use serde_json::{Value, json};

const URA: &str = "24173480";
const NJS_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_js_module.so";

/// The shipped server block with the node's address and `js_path` moved as well.
fn pep_block(listen: u16, sluis: std::net::SocketAddr, upstream: u16, node: &str) -> String {
    let block = example_on("examples/nuts/pep-nginx.conf", listen, sluis, upstream);
    assert!(block.contains("http://nuts-node:8081/"), "the node moved");
    assert!(
        block.contains("js_path \"/etc/nginx/njs/\";"),
        "js_path moved"
    );
    // Another data holder than the Mitz source's default, to see the PEP's reach Mitz.
    assert!(
        block.contains("set $pep_data_holder_ura 00000659;"),
        "the holder moved"
    );
    block
        .replace(
            "set $pep_data_holder_ura 00000659;",
            "set $pep_data_holder_ura 00000666;",
        )
        .replace("http://nuts-node:8081/", &format!("http://{node}/"))
        .replace(
            "js_path \"/etc/nginx/njs/\";",
            &format!("js_path \"{}/\";", repo_path("examples/nuts").display()),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_njs_pep_in_nginx_asks_pdp_and_agrees_with_forward_auth() {
    let Some(nginx) = system_binary("nginx") else {
        return;
    };
    let Some(njs) = nginx_extra(NJS_MODULE) else {
        return;
    };
    let node = NutsNode::default();
    let node_address = node.start().await;
    let holder = HolderFhir::new(vec![
        patient("p1", "999999990"),
        patient("p2", "900186021"),
        eoverdracht_consent("c1", URA, &["Task/t1"]),
    ]);
    let holder_url = holder.start().await;
    let mitz = MitzStandIn::start().await;
    mitz.set_reply_for("900186021", sluis_core::sources::mitz::MitzDecision::Deny);
    let (upstream_port, seen) = upstream().await;
    let setup = Setup::new(
        &config(
            node_address,
            r#""127.0.0.1/32""#,
            &sources_yaml(&holder_url, &mitz),
        ),
        &[],
    );
    let sluis = Server::start(&setup.config_path()).await;
    let listen = free_port();
    let _nginx = start_nginx_with(
        &nginx,
        &pep_block(listen, sluis.http, upstream_port, &node_address.to_string()),
        setup.dir.path(),
        &[Path::new(&njs)],
    );
    wait_for_port("nginx", listen).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{listen}");

    // (scope, extra claims, method, path, query): allowed and denied by the use-case
    // policies, through the PEP and through forward-auth.
    let cases: Vec<(&str, Value, &str, &str, &str)> = vec![
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/fhir/Organization",
            "name:contains=Zorg",
        ),
        ("mcsd_query", json!({}), "GET", "/fhir/Location/loc-1", ""),
        (
            "mcsd_query",
            json!({}),
            "GET",
            "/fhir/Patient",
            "name=Jansen",
        ),
        (
            "mcsd_query",
            json!({}),
            "DELETE",
            "/fhir/Organization/org-1",
            "",
        ),
        (
            "mcsd_query",
            json!({"organization_ura": null}),
            "GET",
            "/fhir/Organization",
            "",
        ),
        (
            "mcsd_update",
            json!({}),
            "GET",
            "/fhir/Organization/_history",
            "_since=2026-01-01T00:00:00Z",
        ),
        ("eoverdracht_receiver", json!({}), "POST", "/fhir", ""),
        (
            "eoverdracht_receiver",
            json!({}),
            "GET",
            "/fhir/Task/t1",
            "",
        ),
        ("eoverdracht_sender", json!({}), "GET", "/fhir/Task/t1", ""),
        ("eoverdracht_sender", json!({}), "GET", "/fhir/Task/t2", ""),
        (
            "bgz",
            json!({}),
            "GET",
            "/fhir/Condition",
            "patient=Patient/p1",
        ),
        (
            "bgz",
            json!({}),
            "GET",
            "/fhir/Condition",
            "patient=Patient/p2",
        ),
        ("bgz", json!({}), "GET", "/fhir/Condition", ""),
        (
            "pzp_gf",
            json!({}),
            "GET",
            "/fhir/Patient",
            "identifier=http://fhir.nl/fhir/NamingSystem/bsn|999999990",
        ),
        ("", json!({"scope": null}), "GET", "/fhir/Organization", ""),
    ];
    let mut failures = Vec::new();
    let mut allowed = 0;
    for (index, (scope, extra, method, path, query)) in cases.iter().enumerate() {
        let token = format!("pep-token-{index}");
        node.register(&token, introspection(scope, extra.clone()));
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let through_pep = client
            .request(method.parse().unwrap(), format!("{base}{target}"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(if *method == "POST" { "{}" } else { "" })
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let forward = client
            .get(format!("http://{}/decisions", sluis.http))
            .bearer_auth(&token)
            .header("x-original-method", *method)
            .header("x-original-uri", &target)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if through_pep == 200 {
            allowed += 1;
        }
        if through_pep != forward {
            failures.push(format!(
                "{scope} {method} {target}: pep {through_pep}, forward-auth {forward}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(allowed >= 6 && allowed < cases.len(), "{allowed} allowed");
    // What reached the FHIR server: the allowed requests, without the token.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), allowed);
        for request in seen.iter() {
            assert!(
                request["headers"].get("authorization").is_none(),
                "{request}"
            );
        }
        assert!(
            seen.iter()
                .any(|r| r["uri"] == "/fhir/Condition?patient=Patient/p1"),
            "{seen:?}"
        );
    }
    // The question to Mitz names the data holder this PEP serves, not the source's default
    // (which forward-auth, without a context, asks about).
    node.register("pzp", introspection("pzp_gf", json!({})));
    let response = client
        .get(format!(
            "{base}/fhir/Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|123456782"
        ))
        .bearer_auth("pzp")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let asked = mitz.last_request().expect("Mitz was asked");
    assert_eq!(asked.question.author_ura, "00000666");

    // Not active, no token: 401 from the PEP, the PDP never asked.
    for authorization in [Some("Bearer unknown-token"), None] {
        let mut request = client.get(format!("{base}/fhir/Organization"));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }

    // A DPoP-bound token: the node checks the proof; the same proof twice, a proof for
    // another URL, or the token as Bearer is a 401.
    node.register(
        "bound",
        introspection("mcsd_query", json!({"cnf": {"jkt": kit::dpop::jkt()}})),
    );
    let url = format!("{base}/fhir/Organization");
    let proof = kit::dpop::proof("GET", &url, "bound", 0, "pep-proof-1");
    let send = |authorization: &str, proof: Option<&str>| {
        let mut request = client
            .get(&url)
            .header("authorization", authorization.to_owned());
        if let Some(proof) = proof {
            request = request.header("dpop", proof.to_owned());
        }
        request.send()
    };
    assert_eq!(
        send("DPoP bound", Some(&proof)).await.unwrap().status(),
        200
    );
    assert_eq!(node.dpop_validated(), 1);
    assert_eq!(
        send("DPoP bound", Some(&proof)).await.unwrap().status(),
        401
    );
    let elsewhere = kit::dpop::proof(
        "GET",
        &format!("{base}/fhir/Location"),
        "bound",
        0,
        "pep-proof-2",
    );
    assert_eq!(
        send("DPoP bound", Some(&elsewhere)).await.unwrap().status(),
        401
    );
    assert_eq!(send("Bearer bound", None).await.unwrap().status(), 401);
    assert_eq!(send("DPoP bound", None).await.unwrap().status(), 401);

    // The PDP gone: 502, never an allow.
    node.register("late", introspection("mcsd_query", json!({})));
    sluis.stop().await;
    let response = client
        .get(format!("{base}/fhir/Organization"))
        .bearer_auth("late")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
}
