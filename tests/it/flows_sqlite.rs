//! The flows API against a real Sluis with a SQLite store (`sqlite:flows.db` in a temp
//! dir): create, get, list with paging, revoke, import and export over HTTP on the admin
//! listener; decisions of the eOverdracht receiver policy over gRPC; the admin token; and
//! durability of every acknowledged write across a `kill -9` of `sluis serve`.

use sluis_test_kit as kit;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::flows::*;
use kit::*;
use serde_json::{Value, json};

const SQLITE: &str = r#"{url: "sqlite:flows.db"}"#;

async fn start() -> (Setup, Server, Admin) {
    let setup = setup(&config(SQLITE, TOKEN_ADMIN));
    let server = Server::start(&setup.config_path()).await;
    let admin = Admin::authorized(server.admin);
    (setup, server, admin)
}

fn ids(flows: &[Value]) -> Vec<String> {
    flows
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn create_is_idempotent_by_id_and_refuses_other_content() {
    let (_setup, server, admin) = start().await;
    let transfer = flow("transfer-1", "Patient/1");

    let first = admin.create(&transfer).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body, json!({"id": "transfer-1", "created": true}));
    assert_eq!(first.headers["location"], "/v1/flows/transfer-1");

    let again = admin.create(&transfer).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, json!({"id": "transfer-1", "created": false}));

    let mut other = transfer.clone();
    other["resources"][0]["path"] = "Patient/2".into();
    let conflict = admin.create(&other).await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);
    assert_eq!(conflict.body["error"], "conflict");
    assert!(
        conflict.body["message"]
            .as_str()
            .unwrap()
            .contains("`transfer-1`"),
        "{}",
        conflict.text
    );

    // Stored as first created, the FHIR reference as a path.
    let stored = admin.get("/v1/flows/transfer-1").await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    let mut expected = transfer.clone();
    expected["resources"][0]["path"] = "/Patient/1".into();
    assert_eq!(stored.body, expected);

    // Ids of Nuts credentials hold `:` and `#`: the Location is a usable, encoded path.
    let nuts = flow("did:nuts:sender#credential-1", "Patient/3");
    let created = admin.create(&nuts).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let location = created.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/v1/flows/did%3Anuts%3Asender%23credential-1");
    let fetched = admin.get(&location).await;
    assert_eq!(fetched.status, 200, "{}", fetched.text);
    assert_eq!(fetched.body["id"], "did:nuts:sender#credential-1");

    let missing = admin.get("/v1/flows/no-such-flow").await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(missing.body["error"], "not_found");
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap()
            .contains("`no-such-flow`")
    );
    let revoke_missing = admin.revoke("no-such-flow").await;
    assert_eq!(revoke_missing.status, 404, "{}", revoke_missing.text);
    server.stop().await;
}

/// 24 flows over two actors, two purposes and two patients (or none).
fn listing_flows() -> Vec<Value> {
    (0..24)
        .map(|i| {
            let mut flow = flow(&format!("flow-{i:02}"), &format!("Patient/{i}"));
            if i % 3 == 0 {
                flow["actor"] = "did:web:other.example.org".into();
            }
            if i % 2 == 1 {
                flow["purpose"] = "mCSD".into();
            }
            match i % 4 {
                0 => flow["patient"] = "urn:oid:2.16.840.1.113883.2.4.6.3:123456780".into(),
                1 => flow["patient"] = "urn:oid:2.16.840.1.113883.2.4.6.3:999999990".into(),
                _ => {}
            }
            flow
        })
        .collect()
}

#[tokio::test]
async fn listing_filters_and_pages_until_exhausted() {
    let (_setup, server, admin) = start().await;
    let flows = listing_flows();
    // Registered in another order than the listing's, which is by id.
    for flow in flows.iter().rev() {
        assert_eq!(admin.create(flow).await.status, 201);
    }
    let matching = |filter: &dyn Fn(&Value) -> bool| -> Vec<String> {
        let mut ids: Vec<String> = ids(&flows
            .iter()
            .filter(|f| filter(f))
            .cloned()
            .collect::<Vec<_>>());
        ids.sort();
        ids
    };
    let patient = "urn:oid:2.16.840.1.113883.2.4.6.3:123456780";
    let cases: Vec<(String, Vec<String>)> = vec![
        (String::new(), matching(&|_| true)),
        (
            format!("actor={}", encode(RECEIVER)),
            matching(&|f| f["actor"] == RECEIVER),
        ),
        ("purpose=mCSD".into(), matching(&|f| f["purpose"] == "mCSD")),
        (
            format!("patient={}", encode(patient)),
            matching(&|f| f["patient"] == patient),
        ),
        (
            format!(
                "actor={}&purpose=eOverdracht&patient={}",
                encode(RECEIVER),
                encode(patient)
            ),
            matching(&|f| {
                f["actor"] == RECEIVER && f["purpose"] == "eOverdracht" && f["patient"] == patient
            }),
        ),
        ("actor=did%3Aweb%3Anobody".into(), Vec::new()),
    ];
    for (query, expected) in &cases {
        // Page sizes that divide the count, that do not, of one, and larger than all.
        for page_size in [1, 4, 5, 6, 100] {
            let listed = admin.list_all(query, page_size).await;
            assert_eq!(&listed, expected, "`{query}` in pages of {page_size}");
        }
    }
    assert_eq!(cases[0].1.len(), 24);
    assert!(cases[4].1.len() >= 2, "{:?}", cases[4].1);

    // Without page_size: one page of at most 100, the whole flow each.
    let all = admin.get("/v1/flows").await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert!(all.body.get("next_page_token").is_none(), "{}", all.text);
    let first = &all.body["flows"][0];
    assert_eq!(first["id"], "flow-00");
    assert_eq!(first["patient"], patient);
    assert_eq!(first["resources"][0]["path"], "/Patient/0");

    for bad in [
        "page_size=0",
        "page_size=5000",
        "page_size=1001",
        "page_size=-1",
        "page_size=ten",
    ] {
        let reply = admin.get(&format!("/v1/flows?{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
        assert_eq!(reply.body["error"], "invalid_flow", "{bad}");
    }
    let reply = admin.get("/v1/flows?page_size=0").await;
    assert_eq!(
        reply.body["fields"][0]["field"], "page_size",
        "{}",
        reply.text
    );
    let reply = admin.get("/v1/flows?page_size=1000").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = admin.get("/v1/flows?actr=x").await;
    assert_eq!(reply.status, 400, "an unknown parameter: {}", reply.text);
    server.stop().await;
}

#[tokio::test]
async fn validation_errors_name_every_field() {
    let (_setup, server, admin) = start().await;
    let bad = json!({
        "id": "",
        "purpose": "eOverdracht",
        "actor": "",
        "resources": [
            {"path": "patient/../x", "operations": ["read", "steal"]},
            {"path": "/Task/1", "operations": []},
        ],
        "scopes": [""],
        "valid_from": "2031-01-01T00:00:00Z",
        "valid_until": "2030-01-01T00:00:00Z",
    });
    let reply = admin.create(&bad).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.body["error"], "invalid_flow");
    let fields = reply.body["fields"].as_array().unwrap();
    let named: Vec<&str> = fields
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        [
            "id",
            "actor",
            "scopes[0]",
            "resources[0].path",
            "resources[0].operations[1]",
            "resources[1].operations",
            "valid_until",
        ],
        "{}",
        reply.text
    );
    assert!(
        fields
            .iter()
            .all(|f| !f["message"].as_str().unwrap().is_empty()),
        "{}",
        reply.text
    );
    assert!(
        fields[4]["message"].as_str().unwrap().contains("`steal`"),
        "{}",
        reply.text
    );

    // Malformed input: the field that is wrong, or what is wrong with the body.
    let mut wrong_type = flow("t", "Patient/1");
    wrong_type["resources"][0]["operations"] = "read".into();
    let reply = admin.create(&wrong_type).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.body["fields"][0]["field"], "resources[0].operations");

    let mut unknown = flow("t", "Patient/1");
    unknown["colour"] = "blue".into();
    let reply = admin.create(&unknown).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{}",
        reply.text
    );

    let mut missing = flow("t", "Patient/1");
    missing.as_object_mut().unwrap().remove("actor");
    let reply = admin.create(&missing).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("actor"),
        "{}",
        reply.text
    );

    for (body, expected) in [
        ("{\"id\": \"t\", ", "the body is not JSON"),
        ("", "the body is not JSON"),
        ("[1, 2]", ""),
    ] {
        let reply = admin
            .send(
                admin
                    .request(reqwest::Method::POST, "/v1/flows")
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_eq!(reply.status, 400, "`{body}`: {}", reply.text);
        assert_eq!(
            reply.body["error"], "invalid_flow",
            "`{body}`: {}",
            reply.text
        );
        assert!(
            reply.body["fields"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with(expected),
            "`{body}`: {}",
            reply.text
        );
    }

    assert!(
        admin.list_all("", 100).await.is_empty(),
        "nothing was written"
    );
    server.stop().await;
}

#[tokio::test]
async fn import_writes_all_or_nothing() {
    let (_setup, server, admin) = start().await;
    let a = flow("a", "Patient/a");
    let b = flow("b", "Patient/b");
    let mut invalid = flow("c", "Patient/c");
    invalid["actor"] = "".into();
    let d = flow("d", "Patient/d");

    // One invalid flow: nothing is written, and the error says which one.
    let reply = admin
        .post("/v1/flows/import", &json!([a, b, invalid, d]))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(
        reply.body["fields"][0]["field"], "[2].actor",
        "{}",
        reply.text
    );
    assert!(admin.list_all("", 100).await.is_empty());

    // The same id twice in one import.
    let reply = admin.post("/v1/flows/import", &json!([a, b, a])).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.body["fields"][0]["field"], "[2].id", "{}", reply.text);
    assert!(admin.list_all("", 100).await.is_empty());

    // A flow that conflicts with a stored one.
    let x = flow("x", "Patient/x");
    assert_eq!(admin.create(&x).await.status, 201);
    let mut x_changed = x.clone();
    x_changed["purpose"] = "mCSD".into();
    let reply = admin
        .post("/v1/flows/import", &json!([a, x_changed, b]))
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.body["error"], "conflict");
    assert_eq!(admin.list_all("", 100).await, ["x"]);

    // A conflict in a later statement of a large import undoes the earlier ones too.
    let mut many: Vec<Value> = (0..1500)
        .map(|i| flow(&format!("bulk-{i:04}"), &format!("Patient/{i}")))
        .collect();
    many[1400] = x_changed.clone();
    let reply = admin.post("/v1/flows/import", &json!(many)).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(admin.list_all("", 1000).await, ["x"]);

    // A line that is not JSON in NDJSON.
    let ndjson = format!("{a}\n{{\"id\": \n{b}\n");
    let reply = admin.import_ndjson(ndjson).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2 is not JSON"),
        "{}",
        reply.text
    );
    assert_eq!(admin.list_all("", 100).await, ["x"]);

    // Valid, with a flow identical to a stored one: the others are created.
    let reply = admin.post("/v1/flows/import", &json!([a, x, b])).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"created": 2, "unchanged": 1}));
    assert_eq!(admin.list_all("", 100).await, ["a", "b", "x"]);
    let reply = admin.post("/v1/flows/import", &json!([a, x, b])).await;
    assert_eq!(reply.body, json!({"created": 0, "unchanged": 3}));

    many[1400] = flow("bulk-1400", "Patient/1400");
    let reply = admin.post("/v1/flows/import", &json!(many)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"created": 1500, "unchanged": 0}));
    assert_eq!(admin.list_all("", 1000).await.len(), 1503);

    // Imported flows decide at once.
    let token = nuts_token(RECEIVER);
    for resource in ["Patient/a", "Patient/0", "Patient/1499"] {
        let answer = server.check(read(&token, resource)).await;
        assert_eq!(answer.status, 200, "{resource}: {answer:?}");
    }
    server.stop().await;
}

async fn export(admin: &Admin) -> String {
    let reply = admin.get("/v1/flows/export").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    reply.text
}

#[tokio::test]
async fn ndjson_export_imports_into_another_sluis_unchanged() {
    let (_setup, server, admin) = start().await;
    let mut detailed = flow("detailed", "Composition/abc");
    detailed["resources"] = json!([
        {"path": "Composition/abc", "operations": ["read", "document"]},
        {"path": "/Observation/*", "operations": ["GET", "search"]},
    ]);
    detailed["patient"] = "urn:oid:2.16.840.1.113883.2.4.6.3:123456780".into();
    detailed["valid_from"] = "2024-01-01T00:00:00Z".into();
    detailed["valid_until"] = "2099-01-01T00:00:00Z".into();
    detailed["attributes"] = json!({"legalBase": {"consentType": "implied"}, "n": 1});
    let imported: Vec<Value> = [
        detailed,
        flow("plain-1", "Patient/1"),
        flow("plain-2", "Patient/2"),
    ]
    .into_iter()
    .collect();
    let ndjson: String = imported.iter().map(|f| format!("{f}\n")).collect();
    let reply = admin.import_ndjson(ndjson).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"created": 3, "unchanged": 0}));
    assert_eq!(
        admin.create(&flow("created", "Patient/3")).await.status,
        201
    );
    assert_eq!(admin.revoke("plain-1").await.status, 200);

    // Write order: the revoke is the last write.
    let exported = export(&admin).await;
    let lines: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(ids(&lines), ["detailed", "plain-2", "created", "plain-1"]);
    assert!(lines[3]["revoked_at"].is_string(), "{exported}");
    for line in &lines {
        let stored = admin
            .get(&format!("/v1/flows/{}", line["id"].as_str().unwrap()))
            .await;
        assert_eq!(&stored.body, line);
    }

    // Into an empty Sluis: the same flows, in the same order, revocation included.
    let (_setup2, server2, admin2) = start().await;
    let reply = admin2.import_ndjson(exported.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"created": 4, "unchanged": 0}));
    assert_eq!(export(&admin2).await, exported);
    let reply = admin2.import_ndjson(exported.clone()).await;
    assert_eq!(reply.body, json!({"created": 0, "unchanged": 4}));

    let token = nuts_token(RECEIVER);
    for (resource, status) in [
        ("Composition/abc/$document", 200),
        ("Observation/7", 200),
        ("Patient/2", 200),
        ("Patient/3", 200),
        ("Patient/1", 403),
    ] {
        let answer = server2.check(read(&token, resource)).await;
        assert_eq!(answer.status, status, "{resource}: {answer:?}");
    }
    server2.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_flow_denies_at_once() {
    let (_setup, server, admin) = start().await;
    let token = nuts_token(RECEIVER);
    let other = nuts_token("did:web:other.example.org");
    let patient = || read(&token, "Patient/1");

    assert_eq!(server.check(patient()).await.status, 403, "no flow yet");
    let transfer = flow("transfer-1", "Patient/1");
    assert_eq!(admin.create(&transfer).await.status, 201);
    // The create answered after this replica's index had the flow: no waiting.
    let allowed = server.check(patient()).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-sluis-client-id"), Some(RECEIVER));
    assert_eq!(server.check(read(&token, "Patient/2")).await.status, 403);
    assert_eq!(server.check(read(&other, "Patient/1")).await.status, 403);

    let revoked = admin.revoke("transfer-1").await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.body["id"], "transfer-1");
    let revoked_at = revoked.body["revoked_at"].as_str().unwrap().to_owned();
    assert_eq!(server.check(patient()).await.status, 403);

    // Revoking again changes nothing; the flow stays on record.
    let again = admin.revoke("transfer-1").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["revoked_at"], revoked_at.as_str());
    let stored = admin.get("/v1/flows/transfer-1").await;
    assert_eq!(stored.body["revoked_at"], revoked_at.as_str());

    // Creating it again does not undo the revocation.
    let recreate = admin.create(&transfer).await;
    assert_eq!(recreate.status, 200, "{}", recreate.text);
    assert_eq!(recreate.body["created"], false);
    assert_eq!(server.check(patient()).await.status, 403);

    let ready: Value = reqwest::get(format!("http://{}/readyz", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["flows"],
        json!({"loaded": true, "count": 0, "version": 2}),
        "{ready}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_flows_api_needs_the_admin_token() {
    let (_setup, server, admin) = start().await;
    let transfer = flow("transfer-1", "Patient/1");
    let anonymous = Admin::new(server.admin, None);
    let wrong = Admin::new(server.admin, Some("not-the-admin-token-0123456789"));
    for client in [&anonymous, &wrong] {
        for (method, path) in [
            (reqwest::Method::POST, "/v1/flows"),
            (reqwest::Method::GET, "/v1/flows"),
            (reqwest::Method::GET, "/v1/flows/transfer-1"),
            (reqwest::Method::POST, "/v1/flows/transfer-1/revoke"),
            (reqwest::Method::POST, "/v1/flows/import"),
            (reqwest::Method::GET, "/v1/flows/export"),
        ] {
            let reply = client
                .send(
                    client
                        .request(method.clone(), path)
                        .json(&json!([transfer])),
                )
                .await;
            assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text);
            assert_eq!(reply.body["error"], "unauthorized");
            assert_eq!(
                reply.headers["www-authenticate"],
                "Bearer realm=\"sluis-admin\""
            );
        }
    }
    // The right token in another scheme is no bearer token.
    let basic = admin
        .send(
            reqwest::Client::new()
                .get(format!("{}/v1/flows", admin.base))
                .header("authorization", format!("Basic {ADMIN_TOKEN}")),
        )
        .await;
    assert_eq!(basic.status, 401, "{}", basic.text);

    assert!(
        admin.list_all("", 100).await.is_empty(),
        "nothing was written"
    );
    assert_eq!(admin.create(&transfer).await.status, 201);
    // Health and readiness stay open.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn allow_anonymous_opens_the_api_and_no_token_closes_it() {
    let open = setup(&config(SQLITE, "{allow_anonymous: true}"));
    let server = Server::start(&open.config_path()).await;
    let anonymous = Admin::new(server.admin, None);
    let created = anonymous.create(&flow("transfer-1", "Patient/1")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(anonymous.list_all("", 10).await, ["transfer-1"]);
    server.stop().await;

    let closed = setup(&config(SQLITE, "{}"));
    let server = Server::start(&closed.config_path()).await;
    for client in [
        Admin::new(server.admin, None),
        Admin::authorized(server.admin),
    ] {
        let reply = client.get("/v1/flows").await;
        assert_eq!(reply.status, 401, "{}", reply.text);
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .contains("configure `admin.token`"),
            "{}",
            reply.text
        );
    }
    server.stop().await;
}

/// `sluis serve` as a child process, killed when dropped.
struct Sluis {
    process: std::process::Child,
    grpc: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Sluis {
    /// Starts `sluis serve` in `setup`'s dir on free ports, logging to `log`.
    async fn start(setup: &Setup, log: &str) -> Sluis {
        let (grpc, admin) = (free_addr(), free_addr());
        std::fs::write(
            setup.config_path(),
            config_on(&grpc.to_string(), &admin.to_string(), SQLITE, TOKEN_ADMIN),
        )
        .unwrap();
        let log = std::fs::File::create(setup.dir.path().join(log)).unwrap();
        let process = std::process::Command::new(env!("CARGO_BIN_EXE_sluis"))
            .args(["serve", "--config", setup.config_path().to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let sluis = Sluis {
            process,
            grpc,
            admin,
        };
        assert!(
            wait_ready(admin, Duration::from_secs(30)).await,
            "sluis serve did not become ready"
        );
        sluis
    }

    /// SIGKILL: no shutdown code runs (`Child::kill` sends SIGKILL on Unix).
    #[cfg(unix)]
    fn kill_9(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.process.kill().unwrap();
        let status = self.process.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}

impl Drop for Sluis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[cfg(unix)]
#[tokio::test]
async fn acknowledged_flows_survive_kill_9() {
    let setup = setup(&config(SQLITE, TOKEN_ADMIN));
    let mut first = Sluis::start(&setup, "first.log").await;
    let admin = Admin::authorized(first.admin);

    let imported: Vec<Value> = (0..100)
        .map(|i| flow(&format!("imported-{i:03}"), &format!("Patient/i{i}")))
        .collect();
    let reply = admin.post("/v1/flows/import", &json!(imported)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = admin.revoke("imported-000").await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Creates one after the other until the server is gone, remembering each 201.
    let acknowledged = Arc::new(Mutex::new(Vec::<usize>::new()));
    let writer = tokio::spawn({
        let acknowledged = acknowledged.clone();
        let admin = Admin::authorized(first.admin);
        async move {
            for i in 0.. {
                let body = flow(&format!("created-{i:04}"), &format!("Patient/c{i}"));
                match admin
                    .try_send(
                        admin
                            .request(reqwest::Method::POST, "/v1/flows")
                            .json(&body),
                    )
                    .await
                {
                    Ok(reply) => {
                        assert_eq!(reply.status, 201, "{}", reply.text);
                        acknowledged.lock().unwrap().push(i);
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let enough = within(Duration::from_secs(60), || {
        let count = acknowledged.lock().unwrap().len();
        async move { count >= 30 }
    })
    .await;
    assert!(enough.is_some(), "30 creates took over a minute");
    // Mid-stream: the writer has a create outstanding.
    first.kill_9();
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer ends when the server is gone")
        .unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();

    let second = Sluis::start(&setup, "second.log").await;
    let admin = Admin::authorized(second.admin);
    let stored: BTreeSet<String> = admin.list_all("", 1000).await.into_iter().collect();
    let token = nuts_token(RECEIVER);
    let mut decider = Decider::connect(second.grpc).await;
    for i in &acknowledged {
        let id = format!("created-{i:04}");
        assert!(stored.contains(&id), "{id} was acknowledged but is gone");
        let reply = admin.get(&format!("/v1/flows/{id}")).await;
        assert_eq!(reply.status, 200, "{id}: {}", reply.text);
        assert_eq!(reply.body["resources"][0]["path"], format!("/Patient/c{i}"));
        let answer = decider.decide(read(&token, &format!("Patient/c{i}"))).await;
        assert_eq!(answer.status, 200, "{id}: {answer:?}");
    }
    for i in 1..100 {
        let answer = decider.decide(read(&token, &format!("Patient/i{i}"))).await;
        assert_eq!(answer.status, 200, "imported-{i:03}: {answer:?}");
    }
    let revoked = admin.get("/v1/flows/imported-000").await;
    assert!(revoked.body["revoked_at"].is_string(), "{}", revoked.text);
    let answer = decider.decide(read(&token, "Patient/i0")).await;
    assert_eq!(answer.status, 403, "the revoke survived: {answer:?}");
}
