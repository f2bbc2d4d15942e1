//! The ext_authz door reads a `CheckRequest`'s bytes straight into an `AccessRequest`
//! (`sluis::doors::envoy::read_check`). Held here to exactly what it replaced: prost's
//! `CheckRequest::decode` and the door's `access_request`, on generated messages (every
//! field the door reads, fields it skips, unknown fields of every wire type, a message
//! sent twice, which protobuf merges), and on those messages damaged: wherever prost
//! reads a message, the reader reads the same request; wherever not, it does not panic.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    Address, EnvoyInternalAddress, HeaderMap, HeaderValue, Pipe, SocketAddress, address,
    socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::Timestamp;
use proptest::prelude::*;
use prost::Message as _;
use sluis::doors::envoy::{access_request, read_check};
use sluis_core::request::AccessRequest;

/// Text of any characters, and the shapes the door reads (targets, encoded certificates).
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        "\\PC{0,12}",
        "[a-zA-Z0-9:/?&=%.-]{0,24}",
        Just(String::new()),
        Just("/p?q=1?x".to_owned()),
        Just("-----BEGIN%20CERT%0A".to_owned()),
    ]
    .boxed()
}

fn bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..12)
    ]
    .boxed()
}

fn map() -> BoxedStrategy<HashMap<String, String>> {
    proptest::collection::hash_map(
        prop_oneof!["[A-Za-z:-]{0,8}", Just("authorization".to_owned())],
        text(),
        0..4,
    )
    .boxed()
}

fn address() -> BoxedStrategy<Option<Address>> {
    let socket = (
        text(),
        prop_oneof![
            Just(None),
            any::<u32>().prop_map(|p| Some(socket_address::PortSpecifier::PortValue(p))),
            text().prop_map(|n| Some(socket_address::PortSpecifier::NamedPort(n))),
        ],
        text(),
    )
        .prop_map(|(address, port_specifier, resolver_name)| {
            address::Address::SocketAddress(SocketAddress {
                address,
                port_specifier,
                resolver_name,
                ..Default::default()
            })
        });
    let member = prop_oneof![
        socket,
        (text(), any::<u32>()).prop_map(|(path, mode)| address::Address::Pipe(Pipe { path, mode })),
        text().prop_map(|endpoint_id| address::Address::EnvoyInternalAddress(
            EnvoyInternalAddress {
                endpoint_id,
                ..Default::default()
            }
        )),
    ];
    proptest::option::of(proptest::option::of(member).prop_map(|address| Address { address }))
        .boxed()
}

fn peer() -> BoxedStrategy<Option<Peer>> {
    proptest::option::of((address(), text(), text(), map()).prop_map(
        |(address, certificate, service, labels)| Peer {
            address,
            certificate,
            service,
            labels,
            ..Default::default()
        },
    ))
    .boxed()
}

fn header_map() -> BoxedStrategy<Option<HeaderMap>> {
    proptest::option::of(
        proptest::collection::vec(
            (
                prop_oneof!["[A-Za-z-]{0,6}", Just("Authorization".to_owned())],
                text(),
                bytes(),
            )
                .prop_map(|(key, value, raw_value)| HeaderValue {
                    key,
                    value,
                    raw_value,
                }),
            0..4,
        )
        .prop_map(|headers| HeaderMap { headers }),
    )
    .boxed()
}

fn http() -> BoxedStrategy<Option<HttpRequest>> {
    let strings = (text(), text(), text(), text(), text(), text());
    proptest::option::of(
        (strings, map(), header_map(), text(), bytes(), any::<i64>()).prop_map(
            |(
                (id, method, path, host, scheme, protocol),
                headers,
                header_map,
                body,
                raw_body,
                size,
            )| {
                HttpRequest {
                    id,
                    method,
                    headers,
                    header_map,
                    path,
                    host,
                    scheme,
                    protocol,
                    body,
                    raw_body,
                    size,
                    ..Default::default()
                }
            },
        ),
    )
    .boxed()
}

fn check() -> BoxedStrategy<CheckRequest> {
    let request = proptest::option::of((proptest::option::of(any::<i64>()), http()).prop_map(
        |(seconds, http)| Request {
            time: seconds.map(|seconds| Timestamp { seconds, nanos: 0 }),
            http,
        },
    ));
    let attributes = (peer(), peer(), request, map(), proptest::option::of(text())).prop_map(
        |(source, destination, request, context_extensions, sni)| AttributeContext {
            source,
            destination,
            request,
            context_extensions,
            tls_session: sni.map(|sni| TlsSession { sni }),
            ..Default::default()
        },
    );
    proptest::option::of(attributes)
        .prop_map(|attributes| CheckRequest { attributes })
        .boxed()
}

/// A field no version of the message has, of each wire type (a group as 3 … 4).
fn unknown_field() -> BoxedStrategy<Vec<u8>> {
    (1000u32..1010, 0u8..5, bytes())
        .prop_map(|(tag, kind, payload)| {
            let mut field = Vec::new();
            let key = |tag: u32, kind: u8| u64::from(tag << 3 | u32::from(kind));
            prost::encoding::encode_varint(key(tag, if kind == 4 { 3 } else { kind }), &mut field);
            match kind {
                0 => prost::encoding::encode_varint(payload.len() as u64 * 300, &mut field),
                1 => field.extend_from_slice(&[7; 8]),
                2 => {
                    prost::encoding::encode_varint(payload.len() as u64, &mut field);
                    field.extend_from_slice(&payload);
                }
                3 => field.extend_from_slice(&[1, 2, 3, 4]), // fixed32 is 5: made below
                _ => {
                    // A group holding a varint field, closed with its own tag.
                    prost::encoding::encode_varint(key(1, 0), &mut field);
                    prost::encoding::encode_varint(5, &mut field);
                    prost::encoding::encode_varint(key(tag, 4), &mut field);
                }
            }
            if kind == 3 {
                field.clear();
                prost::encoding::encode_varint(key(tag, 5), &mut field);
                field.extend_from_slice(&[1, 2, 3, 4]);
            }
            field
        })
        .boxed()
}

/// The parts of an `AccessRequest` a decision reads.
fn parts(access: &AccessRequest) -> impl PartialEq + std::fmt::Debug {
    let mut headers: Vec<_> = access.headers.iter().collect();
    headers.sort();
    let mut context: Vec<_> = access.context.iter().collect();
    context.sort();
    (
        (
            access.method.clone(),
            access.scheme.clone(),
            access.host.clone(),
            access.path.clone(),
            access.query.clone(),
            access.protocol.clone(),
        ),
        format!("{headers:?}"),
        format!("{context:?}"),
        access.source.address.clone(),
        access.source.certificate.clone(),
        access.body.clone(),
        access.door.0,
        access.evaluation.is_none(),
    )
}

/// What the door decided on before: prost's message, translated; and its body size.
fn through_prost(bytes: &[u8]) -> Option<(AccessRequest, usize)> {
    let check = CheckRequest::decode(bytes).ok()?;
    let body_len = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map_or(0, |http| http.body.len().max(http.raw_body.len()));
    Some((access_request(check), body_len))
}

fn assert_same(bytes: &[u8]) -> Result<(), TestCaseError> {
    let read = read_check(bytes);
    if let Some((access, body_len)) = through_prost(bytes) {
        let read =
            read.map_err(|e| TestCaseError::fail(format!("prost reads it, we do not: {e}")))?;
        prop_assert_eq!(parts(&read.access), parts(&access));
        prop_assert_eq!(read.body_len, body_len);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// One message, or two sent one after the other (merged), with unknown fields.
    #[test]
    fn the_reader_reads_what_prost_and_the_translation_read(
        first in check(),
        second in proptest::option::of(check()),
        unknown in proptest::collection::vec(unknown_field(), 0..3),
    ) {
        let mut bytes = first.encode_to_vec();
        for field in &unknown {
            bytes.extend_from_slice(field);
        }
        if let Some(second) = second {
            bytes.extend(second.encode_to_vec());
        }
        prop_assert!(through_prost(&bytes).is_some(), "the generated bytes are a CheckRequest");
        assert_same(&bytes)?;
    }

    /// Damaged messages: a byte changed, cut short, or a byte put in.
    #[test]
    fn on_damaged_bytes_the_reader_agrees_with_prost_or_refuses(
        check in check(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        damage in 0u8..3,
    ) {
        let mut bytes = check.encode_to_vec();
        if !bytes.is_empty() {
            let at = at.index(bytes.len());
            match damage {
                0 => bytes[at] = byte,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
        }
        assert_same(&bytes)?;
    }
}

/// The Check a real Envoy 1.40 sent (`benches/data/`): read alike.
#[test]
fn the_captured_check_is_read_as_prost_reads_it() {
    let framed = std::fs::read("benches/data/check-eoverdracht.bin").unwrap();
    let bytes = &framed[5..];
    let read = read_check(bytes).unwrap();
    let (access, body_len) = through_prost(bytes).unwrap();
    assert_eq!(parts(&read.access), parts(&access));
    assert_eq!(read.body_len, body_len);
    assert_eq!(read.access.path, "/eoverdracht/fhir/Patient/123");
    assert!(
        read.access
            .headers
            .get("authorization")
            .is_some_and(|t| t.starts_with("Bearer "))
    );
}

/// Malformed framing is refused with a reason, never a panic.
#[test]
fn malformed_framing_is_refused() {
    for bytes in [
        &[0x0a, 0x05, 0x01][..],                   // a length past the end
        &[0x08][..],                               // a varint cut off
        &[0x07][..],                               // wire type 7
        &[0x00][..],                               // tag 0
        &[0x1c][..],                               // an end of group never opened
        &[0x0b, 0x08, 0x01][..],                   // a group never closed
        &[0x0a, 0x04, 0x22, 0x02, 0xff, 0xfe][..], // a request whose http is not a message
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ][..], // varint > 64 bits
    ] {
        assert!(read_check(bytes).is_err(), "{bytes:?}");
        assert!(CheckRequest::decode(bytes).is_err(), "prost too: {bytes:?}");
    }
}

/// Unknown groups nested deep: skipped alike up to prost's recursion limit, refused past
/// it, and never a stack overflow however deep (100,000 levels).
#[test]
fn deeply_nested_groups_are_skipped_or_refused_never_overflow() {
    let key = |tag: u64, kind: u64| {
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(tag << 3 | kind, &mut bytes);
        bytes
    };
    for depth in [1usize, 50, 98, 99, 100, 101, 150, 100_000] {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            bytes.extend(key(1000, 3));
        }
        for _ in 0..depth {
            bytes.extend(key(1000, 4));
        }
        let read = read_check(&bytes);
        match through_prost(&bytes) {
            Some(_) => assert!(read.is_ok(), "depth {depth}: prost reads it"),
            None => assert!(read.is_err(), "depth {depth}: prost refuses it"),
        }
    }
}
