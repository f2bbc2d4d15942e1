//! The decision core of Sluis: what a gateway asks, who the caller is, what the
//! operator's policies say, and the engine that decides. No server, gateway protocol,
//! database driver or config-file type is known here (the compiler keeps it so: none is a
//! dependency of this crate).
//!
//! Modules, from the ground up; each imports only those above it in this list:
//!
//! | module | what it is |
//! |---|---|
//! | [`json`] | JSON read strictly: a member named twice anywhere is refused |
//! | [`mask`] | credentials masked out of paths, queries and reasons before anything is written |
//! | [`metrics`] | the service's counters, handed to the engine and the authenticator (no global) |
//! | [`decision`] | [`decision::Decision`]: the gateway-neutral answer, with stable deny codes; [`decision::Unavailable`] |
//! | [`request`] | [`request::AccessRequest`]: the gateway-neutral question |
//! | [`fhir`] | A request as a FHIR REST call (interaction, search parameters, includes), CapabilityStatements |
//! | [`graphql`] | GraphQL requests read out of an `AccessRequest`, parsed within limits; query templates |
//! | [`authn`] | identities from tokens: strict JOSE ([`authn::jose`]), JWT via JWKS or introspection, client certificates, DPoP proofs and their replay cache; the issuers' settings ([`authn::settings`]) |
//! | [`flows`] | registered grants: the model and its validation, and the in-memory index decisions read ([`flows::index`]) |
//! | [`response`] | an upstream's answer as response rules judge it: FHIR Bundles read and filtered ([`response::bundle`]), the sealed grant a request decision hands on ([`response::grant`]) |
//! | [`sources`] | information sources rules call (`sources.NAME(...)`): FHIR, HTTP, userinfo, Mitz (the XACML closed question, [`sources::mitz`]); per-source cache, coalescing, circuit breaker and limits; one decision's look-ups ([`sources::Lookups`]) |
//! | [`policy`] | policy files, CEL rules, the caller's party identifiers, SMART scopes, search narrowing; selection, evaluation and its trace |
//! | [`audit`] | the decision log: one JSON line per decision, masked, optionally hash-chained, written off the hot path |
//! | [`engine`] | the only place that decides: authenticates, selects a policy, evaluates, logs; shadow and candidate sets; what a door cannot carry out ([`engine::door`]); answers per use case ([`engine::scopes`]) |
//!
//! The front doors (gRPC ext_authz, forward auth, OPA, AuthZEN, Care Services) live in the
//! `sluis` crate and only translate; the durable flow store and the Redis replay cache in
//! `sluis-store`; the config file in `sluis-config`.

pub mod audit;
pub mod authn;
pub mod decision;
pub mod engine;
pub mod fhir;
pub mod flows;
pub mod graphql;
pub mod json;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod response;
pub mod sources;

/// A serde YAML error without its trailing location, which callers report separately.
pub fn yaml_error_message(error: &serde_yaml_ng::Error) -> String {
    let text = error.to_string();
    match (error.location(), text.rfind(" at line ")) {
        (Some(location), Some(cut)) => {
            let rest = text.get(cut..).unwrap_or("");
            if rest.starts_with(&format!(" at line {}", location.line())) {
                text.get(..cut).unwrap_or(&text).to_string()
            } else {
                text
            }
        }
        _ => text,
    }
}
