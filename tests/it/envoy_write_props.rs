//! The ext_authz door writes a decision's `CheckResponse` bytes straight from the
//! `Decision` (`sluis::doors::envoy::write_check_response`). Held here to exactly what it
//! replaced: prost's encoding of the door's `check_response` message, on generated
//! decisions (allows with headers to set and remove, query parameters that need encoding,
//! a response grant; denials of every status with headers and bodies; empty strings
//! where prost leaves a field out, and strings long enough for two- and three-byte
//! lengths), and the bytes read back by prost as the same message.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::CheckResponse;
use proptest::prelude::*;
use prost::Message as _;
use sluis::doors::envoy::{check_response, write_check_response};
use sluis_core::decision::{Allow, Decision, Deny, Outcome};

/// Text of any characters, empty, and long enough that a length takes two bytes or three.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "\\PC{0,12}",
        2 => "[a-z0-9 &=#%?+-]{0,16}",
        1 => Just(String::new()),
        1 => "\\PC{100,200}",
        1 => (0usize..3, any::<char>()).prop_map(|(k, c)| c.to_string().repeat([127, 128, 17_000][k])),
    ]
    .boxed()
}

fn pairs() -> BoxedStrategy<Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..4).boxed()
}

fn allow() -> impl Strategy<Value = Allow> {
    (
        pairs(),
        proptest::collection::vec(text(), 0..4),
        pairs(),
        proptest::collection::vec(text(), 0..3),
        proptest::option::of(text()),
    )
        .prop_map(
            |(set_headers, remove_headers, set_query, remove_query, response_grant)| Allow {
                set_headers,
                remove_headers,
                set_query,
                remove_query,
                response_grant,
            },
        )
}

fn deny() -> impl Strategy<Value = Deny> {
    (
        prop_oneof![Just(0u16), Just(401), Just(403), Just(413), any::<u16>()],
        pairs(),
        text(),
    )
        .prop_map(|(status, headers, body)| Deny {
            status,
            headers,
            body,
        })
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        allow().prop_map(Outcome::Allow),
        deny().prop_map(Outcome::Deny)
    ]
    .prop_map(|outcome| Decision {
        outcome,
        policy: None,
        rule: Arc::from("rule"),
        reason: String::new(),
    })
}

fn written(decision: &Decision) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_check_response(decision, &mut bytes);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Byte for byte what prost writes for the door's `CheckResponse`, and so what prost
    /// (and Envoy) read back as that message.
    #[test]
    fn the_door_writes_what_prost_writes(decision in decision()) {
        let bytes = written(&decision);
        let message = check_response(decision);
        prop_assert_eq!(&bytes, &message.encode_to_vec());
        prop_assert_eq!(CheckResponse::decode(bytes.as_slice()).unwrap(), message);
    }
}

/// The shapes the server answers most, spelled out: an allow that sets two headers and
/// removes `authorization`, the 413 of a body over the limit, a 401.
#[test]
fn the_usual_answers_are_prosts() {
    let decisions = [
        Outcome::Allow(Allow {
            set_headers: vec![
                ("x-sluis-client-id".into(), "did:web:example.org".into()),
                ("x-sluis-subject".into(), "user-1".into()),
            ],
            remove_headers: vec!["authorization".into()],
            ..Allow::default()
        }),
        Outcome::Allow(Allow::default()),
        Outcome::Deny(Deny {
            status: 401,
            headers: vec![(
                "www-authenticate".into(),
                "Bearer error=\"invalid_token\"".into(),
            )],
            body: String::new(),
        }),
    ];
    for outcome in decisions {
        let decision = Decision {
            outcome,
            policy: Some(Arc::from("p")),
            rule: Arc::from("r"),
            reason: "why".into(),
        };
        assert_eq!(written(&decision), check_response(decision).encode_to_vec());
    }
}
