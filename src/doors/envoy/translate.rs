//! The ext_authz door's translation: Envoy's `CheckRequest` → [`AccessRequest`], a
//! [`Decision`] → `CheckResponse`. Names nothing of the `sluis` crate, so the fuzz target
//! `envoy_check` runs exactly this file.

use std::fmt::Write as _;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Address, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse, QueryParameter,
};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::google::rpc;

use sluis_core::decision::{Allow, Decision, Deny, Outcome};
use sluis_core::request::{
    AccessRequest, Door, HeadersBuilder, Repeats, Source, encode_query_part,
};

/// The size of the body a `CheckRequest` carries.
pub fn body_len(check: &CheckRequest) -> usize {
    check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|http| http.body.len().max(http.raw_body.len()))
        .unwrap_or(0)
}

/// 413 for a body larger than the door decides on.
pub fn too_large(max_body: usize) -> CheckResponse {
    check_response(Decision {
        outcome: Outcome::Deny(Deny {
            status: 413,
            headers: vec![("content-type".into(), "application/json".into())],
            body: sluis_core::decision::deny_body(
                sluis_core::decision::DenyCode::InvalidRequest,
                &format!("the request body is larger than {max_body} bytes"),
            ),
        }),
        policy: None,
        rule: Arc::from("request-body"),
        reason: "request body too large".into(),
    })
}

/// gRPC status codes (google.rpc.Code) used in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

/// Translates Envoy's view of the request.
pub fn access_request(check: CheckRequest) -> AccessRequest {
    let mut access = AccessRequest {
        door: Door("envoy-grpc"),
        ..Default::default()
    };
    let Some(attributes) = check.attributes else {
        return access;
    };
    access.context = attributes.context_extensions;
    if let Some(source) = attributes.source {
        let address = source
            .address
            .and_then(|a| a.address)
            .map(|address| match address {
                // Appended to the address taken from the message, not formatted anew.
                Address::SocketAddress(socket) => {
                    let mut address = socket.address;
                    match socket.port_specifier {
                        Some(PortSpecifier::PortValue(port)) => {
                            // Writing to a `String` cannot fail.
                            let _ = write!(address, ":{port}");
                        }
                        Some(PortSpecifier::NamedPort(name)) => {
                            address.push(':');
                            address.push_str(&name);
                        }
                        None => {}
                    }
                    address
                }
                Address::Pipe(pipe) => pipe.path,
                Address::EnvoyInternalAddress(_) => String::new(),
            })
            .unwrap_or_default();
        access.source = Source {
            address,
            certificate: Source::peer_certificate(&source.certificate),
        };
    }
    let Some(http) = attributes.request.and_then(|r| r.http) else {
        return access;
    };
    access.method = http.method;
    access.scheme = http.scheme;
    access.host = http.host;
    access.protocol = http.protocol;
    access.body = if http.raw_body.is_empty() {
        http.body
    } else {
        String::from_utf8_lossy(&http.raw_body).into_owned()
    };
    // `path` is the request target as sent: path and query together.
    access.take_target(http.path);
    access.headers = if http.headers.is_empty() {
        raw_headers(http.header_map)
    } else {
        http.headers.into_iter().collect()
    };
    access
}

/// Headers sent as a `HeaderMap` (`encode_raw_headers: true`), joined like Envoy joins them.
fn raw_headers(
    map: Option<envoy_types::pb::envoy::config::core::v3::HeaderMap>,
) -> sluis_core::request::Headers {
    let mut headers = HeadersBuilder::default();
    for header in map.map(|m| m.headers).unwrap_or_default() {
        if header.raw_value.is_empty() {
            headers.push_lowercased(&header.key, &header.value);
        } else {
            headers.push_lowercased(&header.key, &String::from_utf8_lossy(&header.raw_value));
        }
    }
    headers.build(Repeats::Join)
}

/// Encodes a decision.
pub fn check_response(decision: Decision) -> CheckResponse {
    match decision.outcome {
        Outcome::Allow(mut allow) => CheckResponse {
            status: Some(rpc::Status {
                code: OK,
                ..Default::default()
            }),
            // Envoy files it under `envoy.filters.http.ext_authz`, where the ext_proc
            // filter forwards it from to the ext_proc door (`doors::ext_proc`).
            dynamic_metadata: allow.response_grant.take().map(grant_metadata),
            http_response: Some(HttpResponse::OkResponse(ok_response(allow))),
        },
        Outcome::Deny(deny) => CheckResponse {
            status: Some(rpc::Status {
                code: if deny.status == 401 {
                    UNAUTHENTICATED
                } else {
                    PERMISSION_DENIED
                },
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(denied_response(deny))),
            ..Default::default()
        },
    }
}

/// `{"sluis_grant": "<sealed>"}`.
fn grant_metadata(sealed: String) -> envoy_types::pb::google::protobuf::Struct {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    Struct {
        fields: [(
            sluis_core::response::grant::GRANT_KEY.to_owned(),
            Value {
                kind: Some(Kind::StringValue(sealed)),
            },
        )]
        .into_iter()
        .collect(),
    }
}

fn header(name: String, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name,
            value,
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn ok_response(allow: Allow) -> OkHttpResponse {
    OkHttpResponse {
        // Overwrite, never append: a client-supplied header of the same name must not
        // survive next to ours.
        headers: allow
            .set_headers
            .into_iter()
            .map(|(n, v)| header(n, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
            .collect(),
        headers_to_remove: allow.remove_headers,
        // Envoy inserts these into the query string as given: encode them, so a value
        // with `&`, `#` or `=` stays one value.
        query_parameters_to_set: allow
            .set_query
            .into_iter()
            .map(|(key, value)| QueryParameter {
                key: encode_query_part(&key),
                value: encode_query_part(&value),
            })
            .collect(),
        query_parameters_to_remove: allow
            .remove_query
            .iter()
            .map(|key| encode_query_part(key))
            .collect(),
        ..Default::default()
    }
}

fn denied_response(deny: Deny) -> DeniedHttpResponse {
    DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(deny.status),
        }),
        headers: deny
            .headers
            .into_iter()
            .map(|(n, v)| header(n, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
            .collect(),
        body: deny.body,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        Address as AddressMessage, Pipe, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;

    use super::*;

    fn from(address: Address) -> String {
        let check = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(AddressMessage {
                        address: Some(address),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        access_request(check).source.address
    }

    fn socket(port: Option<PortSpecifier>) -> Address {
        Address::SocketAddress(SocketAddress {
            address: "10.1.2.3".into(),
            port_specifier: port,
            ..Default::default()
        })
    }

    /// The peer's address reads `ip:port` as it did when it was formatted anew.
    #[test]
    fn the_source_address_is_the_address_and_its_port() {
        for port in [0, 1, 8080, 65535, u32::MAX] {
            assert_eq!(
                from(socket(Some(PortSpecifier::PortValue(port)))),
                format!("10.1.2.3:{port}")
            );
        }
        assert_eq!(
            from(socket(Some(PortSpecifier::NamedPort("https".into())))),
            "10.1.2.3:https"
        );
        assert_eq!(from(socket(None)), "10.1.2.3");
        assert_eq!(
            from(Address::Pipe(Pipe {
                path: "/run/envoy.sock".into(),
                mode: 0,
            })),
            "/run/envoy.sock"
        );
    }
}
