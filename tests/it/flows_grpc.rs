//! The flows API over gRPC (`sluis.flows.v1.FlowService`) against a real Sluis with a
//! SQLite store, through the generated client: create (idempotent, conflicts), validation
//! naming every field, get, list with paging, revoke, all-or-nothing import (one message
//! or a stream, refused past 100,000 flows), message limits, the admin
//! token, one admin port serving gRPC and JSON alike, and no store configured.

use sluis_test_kit as kit;

use kit::*;
use serde_json::json;
use sluis::admin::grpc::pb::flow_service_client::FlowServiceClient;
use sluis::admin::grpc::pb::{
    CreateFlowRequest, Flow, GetFlowRequest, ImportFlowsRequest, ListFlowsRequest, Resource,
    RevokeFlowRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const ADMIN_TOKEN: &str = "grpc-test-admin-token-0123456789";

/// A Sluis with a SQLite store in a temp dir and `admin` as its `admin:` section; the
/// admin token file holds [`ADMIN_TOKEN`].
async fn start(store: bool, admin: &str) -> (Setup, Server) {
    let mut config = config_yaml("127.0.0.1:0", "127.0.0.1:0");
    if store {
        config.push_str("store: {url: \"sqlite:flows.db\"}\n");
    }
    config.push_str(&format!("admin: {admin}\n"));
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    std::fs::write(setup.dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

async fn server() -> (Setup, Server, Client) {
    let (setup, server) = start(true, "{token: {file: admin-token}}").await;
    let client = client(&server, Some(ADMIN_TOKEN)).await;
    (setup, server, client)
}

/// Puts `authorization: Bearer <token>` on every call, when there is a token.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

type Client = FlowServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of the admin listener: gRPC and JSON share its port.
async fn client(server: &Server, token: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{}", server.admin))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlowServiceClient::with_interceptor(channel, Bearer(token.map(str::to_owned)))
}

/// A flow of `actor` that allows reading `resource` (a FHIR reference, e.g. `Patient/1`).
fn flow(id: &str, actor: &str, resource: &str) -> Flow {
    Flow {
        id: id.into(),
        purpose: "eOverdracht".into(),
        custodian: "did:web:sender.example.org".into(),
        actor: actor.into(),
        resources: vec![Resource {
            path: resource.into(),
            operations: vec!["read".into()],
        }],
        scopes: vec!["eOverdracht-receiver".into()],
        ..Default::default()
    }
}

async fn create(client: &mut Client, flow: Flow) -> Result<bool, Status> {
    client
        .create_flow(CreateFlowRequest { flow: Some(flow) })
        .await
        .map(|r| r.into_inner().created)
}

async fn get(client: &mut Client, id: &str) -> Result<Flow, Status> {
    client
        .get_flow(GetFlowRequest { id: id.into() })
        .await
        .map(|r| r.into_inner().flow.unwrap())
}

/// Every id of a listing, following page tokens, each page at most `page_size` (0: the
/// default, 100).
async fn list_all(client: &mut Client, actor: &str, page_size: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    for _ in 0..100 {
        let page = client
            .list_flows(ListFlowsRequest {
                actor: actor.into(),
                page_size,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let most = if page_size == 0 {
            100
        } else {
            page_size as usize
        };
        assert!(page.flows.len() <= most, "{page:?}");
        ids.extend(page.flows.into_iter().map(|f| f.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
    panic!("listing did not end");
}

/// The fields a status names in its `google.rpc.BadRequest` details.
fn bad_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details: {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[tokio::test]
async fn create_is_idempotent_by_id_and_refuses_other_content() {
    let (_setup, server, mut client) = server().await;
    let mut transfer = flow("transfer-1", "did:web:receiver", "Patient/1");
    transfer.patient = Some("urn:oid:2.16.840.1.113883.2.4.6.3:123456780".into());
    transfer.valid_until = Some(prost_types::Timestamp {
        seconds: 1_893_456_000, // 2030-01-01
        nanos: 500_000_000,
    });

    let response = client
        .create_flow(CreateFlowRequest {
            flow: Some(transfer.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.id, "transfer-1");
    assert!(response.created);
    assert!(!create(&mut client, transfer.clone()).await.unwrap());

    let mut other = transfer.clone();
    other.resources[0].path = "Patient/2".into();
    let conflict = create(&mut client, other).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    assert!(conflict.message().contains("`transfer-1`"), "{conflict:?}");

    // Stored as first created, the FHIR reference as a path.
    let stored = get(&mut client, "transfer-1").await.unwrap();
    let mut expected = transfer;
    expected.resources[0].path = "/Patient/1".into();
    assert_eq!(stored, expected);

    server.stop().await;
}

#[tokio::test]
async fn an_invalid_flow_is_refused_naming_every_field() {
    let (_setup, server, mut client) = server().await;
    let mut bad = flow("", "did:web:receiver", "Composition/abc");
    bad.resources[0].operations = vec!["read".into(), "steal".into()];
    bad.resources.push(Resource {
        path: "patient/../x".into(),
        operations: vec!["read".into()],
    });
    bad.valid_from = Some(prost_types::Timestamp {
        seconds: 1_924_992_000, // 2031-01-01
        nanos: 0,
    });
    bad.valid_until = Some(prost_types::Timestamp {
        seconds: 1_893_456_000, // 2030-01-01
        nanos: 0,
    });

    let status = create(&mut client, bad).await.unwrap_err();
    assert_eq!(
        bad_fields(&status),
        [
            "flow.id",
            "flow.resources[0].operations[1]",
            "flow.resources[1].path",
            "flow.valid_until"
        ]
    );
    // The message lists them too, for clients that do not read details.
    for part in [
        "flow.id: is required",
        "flow.resources[0].operations[1]: unknown operation `steal`",
        "flow.resources[1].path: ",
        "flow.valid_until: is not after valid_from",
    ] {
        assert!(status.message().contains(part), "{part}: {status:?}");
    }

    // A timestamp no flow can have, and a number JSON cannot hold, with the rest.
    let mut odd = flow("odd", "", "Patient/1");
    odd.revoked_at = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: 2_000_000_000,
    });
    odd.attributes = Some(prost_types::Struct {
        fields: [(
            "weight".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(f64::INFINITY)),
            },
        )]
        .into(),
    });
    let status = create(&mut client, odd).await.unwrap_err();
    assert_eq!(
        bad_fields(&status),
        ["flow.revoked_at", "flow.attributes.weight", "flow.actor"]
    );

    let status = client
        .create_flow(CreateFlowRequest { flow: None })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["flow"]);
    assert!(status.message().contains("flow: is required"), "{status:?}");

    // Nothing was stored.
    assert!(list_all(&mut client, "", 10).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn get_and_revoke_answer_not_found_for_unknown_ids() {
    let (_setup, server, mut client) = server().await;
    let status = get(&mut client, "no-such-flow").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("`no-such-flow`"), "{status:?}");

    let status = client
        .revoke_flow(RevokeFlowRequest {
            id: "no-such-flow".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn export_streams_every_flow_in_write_order() {
    let (_setup, _server, mut client) = server().await;
    for (id, path) in [("a", "Patient/1"), ("b", "Patient/2"), ("c", "Patient/3")] {
        assert!(
            create(&mut client, flow(id, "did:web:receiver", path))
                .await
                .unwrap()
        );
    }
    client
        .revoke_flow(RevokeFlowRequest { id: "b".into() })
        .await
        .unwrap();
    let mut stream = client
        .export_flows(sluis::admin::grpc::pb::ExportFlowsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(flow) = stream.message().await.unwrap() {
        exported.push((flow.id, flow.revoked_at.is_some()));
    }
    // The revoke is the latest write, so `b` comes last, revoked.
    assert_eq!(
        exported,
        [
            ("a".to_string(), false),
            ("c".to_string(), false),
            ("b".to_string(), true)
        ]
    );
}

#[tokio::test]
async fn revoke_keeps_the_flow_on_record_once() {
    let (_setup, server, mut client) = server().await;
    assert!(
        create(
            &mut client,
            flow("transfer-1", "did:web:receiver", "Patient/1")
        )
        .await
        .unwrap()
    );
    let revoked = client
        .revoke_flow(RevokeFlowRequest {
            id: "transfer-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    let revoked_at = revoked.revoked_at.unwrap();
    assert!((revoked_at.seconds - now()).abs() < 60, "{revoked_at:?}");

    // Again: nothing changes, not even the time.
    let again = client
        .revoke_flow(RevokeFlowRequest {
            id: "transfer-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at));
    assert_eq!(get(&mut client, "transfer-1").await.unwrap(), revoked);
    server.stop().await;
}

#[tokio::test]
async fn listings_page_and_filter() {
    let (_setup, server, mut client) = server().await;
    let flows: Vec<Flow> = (0..7)
        .map(|i| {
            let actor = if i % 2 == 0 { "did:web:a" } else { "did:web:b" };
            flow(&format!("flow-{i}"), actor, &format!("Patient/{i}"))
        })
        .collect();
    let imported = client
        .import_flows(ImportFlowsRequest { flows })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((imported.created, imported.unchanged), (7, 0));

    let all: Vec<String> = (0..7).map(|i| format!("flow-{i}")).collect();
    assert_eq!(list_all(&mut client, "", 3).await, all);
    assert_eq!(
        list_all(&mut client, "", 0).await,
        all,
        "0: the default size"
    );
    assert_eq!(
        list_all(&mut client, "did:web:b", 2).await,
        ["flow-1", "flow-3", "flow-5"]
    );

    let page = client
        .list_flows(ListFlowsRequest {
            purpose: "eOverdracht".into(),
            patient: "urn:nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.flows.is_empty() && page.next_page_token.is_empty());

    for page_size in [-1, 1001] {
        let status = client
            .list_flows(ListFlowsRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["page_size"], "{page_size}");
    }
    server.stop().await;
}

#[tokio::test]
async fn imports_are_all_or_nothing() {
    let (_setup, server, mut client) = server().await;
    assert!(
        create(&mut client, flow("existing", "did:web:a", "Patient/1"))
            .await
            .unwrap()
    );

    // One invalid flow: none is written, and the errors name it by position.
    let mut invalid = flow("new-2", "did:web:a", "Patient/2");
    invalid.resources[0].operations = vec!["steal".into()];
    let status = client
        .import_flows(ImportFlowsRequest {
            flows: vec![flow("new-1", "did:web:a", "Patient/1"), invalid],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["flows[1].resources[0].operations[0]"]);

    // The same id twice.
    let status = client
        .import_flows(ImportFlowsRequest {
            flows: vec![
                flow("new-1", "did:web:a", "Patient/1"),
                flow("new-1", "did:web:a", "Patient/1"),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["flows[1].id"]);

    // Many bad flows: the first problems are named, and how many there are in all, in a
    // status small enough for any client's limit on trailers.
    let flows = (0..1000)
        .map(|i| {
            let mut bad = flow(&format!("bad-{i}"), "did:web:a", "Patient/1");
            bad.resources[0].operations = vec!["steal".into(); 3];
            bad
        })
        .collect();
    let status = client
        .import_flows(ImportFlowsRequest { flows })
        .await
        .unwrap_err();
    let fields = bad_fields(&status);
    assert_eq!(fields[0], "flows[0].resources[0].operations[0]");
    assert!(fields.len() < 100, "{}", fields.len());
    assert!(
        status
            .message()
            .contains(&format!("{} more (3000 in all)", 3000 - fields.len())),
        "{status:?}"
    );
    assert!(status.message().len() < 3000, "{}", status.message().len());

    // A conflict with a stored flow: none is written either.
    let status = client
        .import_flows(ImportFlowsRequest {
            flows: vec![
                flow("new-1", "did:web:a", "Patient/1"),
                flow("existing", "did:web:a", "Patient/9"),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(list_all(&mut client, "", 10).await, ["existing"]);

    let imported = client
        .import_flows(ImportFlowsRequest {
            flows: vec![
                flow("new-1", "did:web:a", "Patient/1"),
                flow("existing", "did:web:a", "Patient/1"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((imported.created, imported.unchanged), (1, 1));
    assert_eq!(list_all(&mut client, "", 10).await, ["existing", "new-1"]);
    server.stop().await;
}

/// `flows` as a stream of messages of `per` flows each.
fn in_messages(
    flows: Vec<Flow>,
    per: usize,
) -> impl futures_util::Stream<Item = ImportFlowsRequest> + Send + 'static {
    let messages: Vec<ImportFlowsRequest> = flows
        .chunks(per)
        .map(|chunk| ImportFlowsRequest {
            flows: chunk.to_vec(),
        })
        .collect();
    futures_util::stream::iter(messages)
}

#[tokio::test]
async fn streamed_imports_are_one_import_all_or_nothing() {
    let (_setup, server, mut client) = server().await;
    let many = |from: usize, to: usize| -> Vec<Flow> {
        (from..to)
            .map(|i| flow(&format!("s-{i:04}"), "did:web:a", &format!("Patient/{i}")))
            .collect()
    };

    // A bad flow in the last message: none of the messages before it is written, and the
    // flow is named by its place in the whole import.
    let mut flows = many(0, 2500);
    flows[2400].resources[0].operations = vec!["steal".into()];
    let status = client
        .import_flows_stream(in_messages(flows, 1000))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&status),
        ["flows[2400].resources[0].operations[0]"]
    );
    // A timestamp that cannot be one, which the conversion finds, is numbered the same way.
    let mut flows = many(0, 2500);
    flows[1999].valid_from = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    });
    let status = client
        .import_flows_stream(in_messages(flows, 1000))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["flows[1999].valid_from"]);
    assert!(list_all(&mut client, "", 10).await.is_empty());

    // The happy path: every message's flows, in one transaction; again changes nothing.
    for created in [2500, 0] {
        let imported = client
            .import_flows_stream(in_messages(many(0, 2500), 1000))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (imported.created, imported.unchanged),
            (created, 2500 - created)
        );
    }
    let got = client
        .get_flow(GetFlowRequest {
            id: "s-2499".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.flow.unwrap().resources[0].path, "/Patient/2499");

    // An empty stream is an empty import.
    let imported = client
        .import_flows_stream(in_messages(Vec::new(), 1000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((imported.created, imported.unchanged), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn streamed_imports_are_refused_at_the_100001st_flow() {
    let (_setup, server, mut client) = server().await;
    // 100,001 flows: refused on the message that goes past 100,000, none written.
    let flows: Vec<Flow> = (0..100_001)
        .map(|i| flow(&format!("many-{i:06}"), "did:web:a", "Patient/1"))
        .collect();
    let status = client
        .import_flows_stream(in_messages(flows, 10_000))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("flows: more than 100000 flows in one import; split it"),
        "{status:?}"
    );
    assert!(list_all(&mut client, "", 10).await.is_empty());

    // The same count in one message under its size limit: the flows past 100,000 are not
    // decoded, and the answer is the same.
    let flows: Vec<Flow> = (0..100_001)
        .map(|i| flow(&format!("many-{i:06}"), "did:web:a", "Patient/1"))
        .collect();
    let status = client
        .import_flows(ImportFlowsRequest { flows })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("flows: more than 100000 flows in one import; split it"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn messages_over_their_limit_are_resource_exhausted_naming_it() {
    let (_setup, server, client) = server().await;
    let mut client = client
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    // One flow over 1 MiB: as much as the HTTP door takes for one flow.
    let mut big = flow("big", "did:web:a", "Patient/1");
    big.scopes = vec!["s".repeat(1024); 1100];
    let status = client
        .create_flow(CreateFlowRequest { flow: Some(big) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "the message is larger than 1 MiB");

    // An import over 48 MiB as one message points to the stream.
    let mut big = flow("big", "did:web:a", "Patient/1");
    big.scopes = vec!["s".repeat(1024); 1000];
    let flows = vec![big; 52];
    let status = client
        .import_flows(ImportFlowsRequest {
            flows: flows.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "the message is larger than 48 MiB; send a larger import as a stream of smaller \
         messages with `ImportFlowsStream`"
    );
    let status = client
        .import_flows_stream(in_messages(flows, 52))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "a message of the stream is larger than 48 MiB; send fewer flows per message"
    );
    server.stop().await;
}

#[tokio::test]
async fn calls_without_the_admin_token_are_unauthenticated() {
    let (_setup, server, mut admin) = server().await;
    for token in [None, Some("wrong-token-0123456789")] {
        let mut stranger = client(&server, token).await;
        let status = create(&mut stranger, flow("sneaky", "did:web:a", "Patient/1"))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
        assert!(
            status.message().contains("bearer token"),
            "{token:?}: {status:?}"
        );
        let status = get(&mut stranger, "sneaky").await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
    }
    // Nothing was written.
    let status = get(&mut admin, "sneaky").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    server.stop().await;

    // Without `admin.token` the API is closed, and says how to open it.
    let (_setup, server) = start(true, "{}").await;
    let mut client = client(&server, Some(ADMIN_TOKEN)).await;
    let status = get(&mut client, "any").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("admin.token"), "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn one_admin_port_serves_grpc_and_json_alike() {
    let (_setup, server, mut client) = server().await;
    let mut transfer = flow("transfer-1", "did:web:receiver", "Patient/1");
    let serde_json::Value::Object(attributes) =
        json!({"legalBase": {"consentType": "implied"}, "count": 3, "ratio": 0.5})
    else {
        unreachable!()
    };
    transfer.attributes = Some(prost_types::Struct {
        fields: attributes
            .iter()
            .map(|(k, v)| (k.clone(), struct_value(v)))
            .collect(),
    });
    assert!(create(&mut client, transfer).await.unwrap());

    // The same flow over HTTP/1.1 JSON: whole numbers stayed integers, so it is the same
    // flow, not a conflict.
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/flows", server.admin);
    let stored: serde_json::Value = http
        .get(format!("{url}/transfer-1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["attributes"], serde_json::Value::Object(attributes));
    let again = http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&stored)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap(),
        json!({"id": "transfer-1", "created": false})
    );

    // Unknown paths are still plain 404s, not gRPC answers.
    let missing = http
        .get(format!("http://{}/no-such-page", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let healthz = http
        .get(format!("http://{}/healthz", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.text().await.unwrap(), "ok\n");
    server.stop().await;
}

fn struct_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(values) => Kind::ListValue(prost_types::ListValue {
            values: values.iter().map(struct_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), struct_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[tokio::test]
async fn without_a_store_every_call_is_unavailable() {
    let (_setup, server) = start(false, "{token: {file: admin-token}}").await;
    let mut client = client(&server, Some(ADMIN_TOKEN)).await;
    let status = get(&mut client, "any").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no flow store is configured"),
        "{status:?}"
    );
    server.stop().await;
}
