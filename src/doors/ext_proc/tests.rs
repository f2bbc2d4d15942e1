#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, Metadata};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, HttpHeaders, ProcessingRequest, body_mutation,
    processing_request::Request as Message, processing_response::Response as Reply,
};
use sluis_core::decision::Deny;
use sluis_core::response::ResponseVerdict;

use super::exchange::*;

fn headers_message(grant: Option<&str>, headers: &[(&str, &str)]) -> ProcessingRequest {
    let metadata = grant.map(|g| Metadata {
        filter_metadata: [(
            GRANT_NAMESPACE.to_owned(),
            Struct {
                fields: [(
                    GRANT_KEY.to_owned(),
                    Value {
                        kind: Some(Kind::StringValue(g.to_owned())),
                    },
                )]
                .into_iter()
                .collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    ProcessingRequest {
        metadata_context: metadata,
        request: Some(Message::ResponseHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: headers
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
    }
}

#[test]
fn the_grant_and_the_answer_headers_are_read() {
    let message = headers_message(
        Some("sealed"),
        &[
            (":status", "200"),
            ("Content-Type", "application/fhir+json"),
        ],
    );
    assert_eq!(grant(&message).as_deref(), Some("sealed"));
    let mut exchange = Exchange::default();
    let Some(Message::ResponseHeaders(headers)) = message.request else {
        panic!()
    };
    read_headers(&mut exchange, headers).unwrap();
    assert_eq!(exchange.status, 200);
    assert_eq!(
        exchange.headers,
        [(
            "content-type".to_string(),
            "application/fhir+json".to_string()
        )]
    );
    assert_eq!(grant(&headers_message(None, &[])), None);
}

#[test]
fn header_bytes_that_are_not_utf8_are_read_with_replacement_characters() {
    let headers = HttpHeaders {
        headers: Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "X-Name".into(),
                    raw_value: b"caf\xe9".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "x-plain".into(),
                    value: "as value".into(),
                    ..Default::default()
                },
            ],
        }),
        ..Default::default()
    };
    let mut exchange = Exchange::default();
    read_headers(&mut exchange, headers).unwrap();
    assert_eq!(
        exchange.headers,
        [
            ("x-name".to_string(), "caf\u{fffd}".to_string()),
            ("x-plain".to_string(), "as value".to_string()),
        ]
    );
}

#[test]
fn a_bad_status_is_an_error_not_a_guess() {
    let Some(Message::ResponseHeaders(headers)) =
        headers_message(None, &[(":status", "abc")]).request
    else {
        panic!()
    };
    assert!(read_headers(&mut Exchange::default(), headers).is_err());
}

#[test]
fn a_filtered_body_replaces_the_answer_with_its_length() {
    let reply = answer(
        ResponseVerdict::Filter {
            body: b"{}".to_vec(),
            kept: 0,
            withheld: 1,
            set_headers: vec![],
            remove_headers: vec!["content-length", "etag"],
        },
        Phase::Body,
    );
    let Some(Reply::ResponseBody(BodyResponse {
        response: Some(common),
    })) = reply.response
    else {
        panic!("{reply:?}")
    };
    let mutation = common.header_mutation.unwrap();
    assert_eq!(mutation.remove_headers, ["etag"]);
    let set = &mutation.set_headers[0].header.as_ref().unwrap();
    assert_eq!(
        (set.key.as_str(), set.raw_value.as_slice()),
        ("content-length", &b"2"[..])
    );
    assert_eq!(
        common.body_mutation.unwrap().mutation,
        Some(body_mutation::Mutation::Body(b"{}".to_vec()))
    );
}

#[test]
fn a_denial_is_an_immediate_response() {
    let reply = answer(
        ResponseVerdict::Deny(Deny {
            status: 403,
            headers: vec![("content-type".into(), "application/json".into())],
            body: "{}".into(),
        }),
        Phase::Body,
    );
    let Some(Reply::ImmediateResponse(immediate)) = reply.response else {
        panic!()
    };
    assert_eq!(immediate.status.unwrap().code, 403);
    assert_eq!(immediate.body, b"{}");
}
