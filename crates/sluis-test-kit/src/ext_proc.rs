//! An upstream answer sent through Sluis's ext_proc door as Envoy sends it: the response
//! headers carrying the ext_authz filter's grant in their metadata, then the whole body.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, external_processor_client::ExternalProcessorClient,
    processing_request::Request, processing_response::Response,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// Sends a 200 `application/fhir+json` answer with `body` under `grant` to the ext_proc
/// door at `address` (`host:port`); the door's last reply.
pub async fn exchange(address: &str, grant: &str, body: Vec<u8>) -> Option<Response> {
    let mut client = ExternalProcessorClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let grant = Struct {
        fields: [(
            "sluis_grant".to_string(),
            Value {
                kind: Some(Kind::StringValue(grant.into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let headers = ProcessingRequest {
        metadata_context: Some(Metadata {
            filter_metadata: [("envoy.filters.http.ext_authz".to_string(), grant)]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        request: Some(Request::ResponseHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: [
                    (":status", "200"),
                    ("content-type", "application/fhir+json"),
                ]
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let body = ProcessingRequest {
        request: Some(Request::ResponseBody(HttpBody {
            body,
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut replies = client
        .process(futures_util::stream::iter(vec![headers, body]))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(reply) = replies.message().await.unwrap() {
        last = reply.response;
    }
    last
}
