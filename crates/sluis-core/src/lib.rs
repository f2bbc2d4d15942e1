//! The decision core of Sluis: what a gateway asks, who the caller is, what the
//! operator's policies say, and the engine that decides. No server, gateway protocol,
//! database driver or config-file type is known here (the compiler keeps it so: none is a
//! dependency of this crate).
//!
//! Modules, from the ground up; each imports only those above it in this list:
//!
//! | module | what it is |
//! |---|---|
//! | [`json`] | JSON read strictly: a member named twice anywhere is refused; [`json::reader`] reads an upstream's answer so in one pass |
//! | [`mask`] | credentials masked out of paths, queries and reasons before anything is written |
//! | [`secret`] | random keys made at start (sealed grants, DPoP nonces without a shared key) |
//! | [`metrics`] | the service's counters, handed to the engine and the authenticator (no global) |
//! | [`decision`] | [`decision::Decision`]: the gateway-neutral answer, with stable deny codes; [`decision::Unavailable`] |
//! | [`request`] | [`request::AccessRequest`]: the gateway-neutral question |
//! | [`fhir`] | A request as a FHIR REST call (interaction, search parameters, includes), CapabilityStatements |
//! | [`graphql`] | GraphQL requests read out of an `AccessRequest`, parsed within limits; query templates |
//! | [`authn`] | identities from tokens: strict JOSE ([`authn::jose`]), JWT via JWKS or introspection, client certificates, DPoP proofs, their replay cache and server nonces ([`authn::nonce`]); the issuers' settings ([`authn::settings`]) |
//! | [`flows`] | registered grants: the model and its validation, and the in-memory index decisions read ([`flows::index`]) |
//! | [`response`] | an upstream's answer as response rules judge it: FHIR Bundles read and filtered ([`response::bundle`]), the sealed grant a request decision hands on ([`response::grant`]) |
//! | [`sources`] | information sources rules call (`sources.NAME(...)`): FHIR, HTTP, userinfo, Mitz (the XACML closed question, [`sources::mitz`]); per-source cache, coalescing, circuit breaker and limits; one decision's look-ups ([`sources::Lookups`]) |
//! | [`policy`] | policy files, CEL rules, the caller's party identifiers, SMART scopes, search narrowing; selection, evaluation and its trace |
//! | [`audit`] | the decision log: one JSON line per decision, masked, optionally hash-chained, written off the hot path |
//! | [`engine`] | the only place that decides: authenticates, selects a policy, evaluates, logs; shadow and candidate sets; what a door cannot carry out ([`engine::door`]); answers per use case ([`engine::scopes`]); AuthZEN searches ([`engine::search`]) |
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
pub mod secret;
pub mod sources;

/// A serde YAML error without its trailing location, which callers report separately,
/// and with the nearest known name for an unknown field or variant.
pub fn yaml_error_message(error: &serde_yaml_ng::Error) -> String {
    did_you_mean(&without_location(error))
}

/// serde's "unknown field `scope`, expected one of `id`, `scopes`, ..." with
/// " (did you mean `scopes`?)" after the unknown name, when one known name is near it: the
/// same but for case, or at most two edits away (one for names of up to four letters).
fn did_you_mean(message: &str) -> String {
    // After serde_yaml_ng's path of the key (`listeners: unknown field ...`), if any.
    let Some(rest) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|marker| {
            let (before, after) = message.split_once(marker)?;
            (before.is_empty() || before.ends_with(": ")).then_some(after)
        })
    else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    // Every other backticked word is a known name.
    let known = expected.split('`').skip(1).step_by(2);
    let limit = if unknown.chars().count() <= 4 { 1 } else { 2 };
    let best = known
        .map(|name| {
            let distance = if name.eq_ignore_ascii_case(unknown) {
                0
            } else {
                strsim::damerau_levenshtein(name, unknown)
            };
            (distance, name)
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance);
    match best {
        Some((_, name)) => {
            let head = message.len().saturating_sub(expected.len());
            format!(
                "{} (did you mean `{name}`?){expected}",
                message.get(..head).unwrap_or(message)
            )
        }
        None => message.to_string(),
    }
}

fn without_location(error: &serde_yaml_ng::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn an_unknown_name_near_a_known_one_is_suggested() {
        assert_eq!(
            did_you_mean("unknown field `scope`, expected one of `id`, `scopes`, `rules`"),
            "unknown field `scope` (did you mean `scopes`?), expected one of `id`, `scopes`, `rules`"
        );
        assert_eq!(
            did_you_mean("listeners: unknown field `grcp`, expected one of `grpc`, `admin`"),
            "listeners: unknown field `grcp` (did you mean `grpc`?), expected one of `grpc`, `admin`"
        );
        assert_eq!(
            did_you_mean("policy `a` rule `r`: unknown field `alow`"),
            "policy `a` rule `r`: unknown field `alow`",
            "no list of known names, no guess"
        );
        assert_eq!(
            did_you_mean("unknown field `alow`, expected one of `id`, `allow`, `deny`"),
            "unknown field `alow` (did you mean `allow`?), expected one of `id`, `allow`, `deny`"
        );
        assert_eq!(
            did_you_mean("unknown variant `Enforce`, expected `enforce` or `shadow`"),
            "unknown variant `Enforce` (did you mean `enforce`?), expected `enforce` or `shadow`"
        );
        // Nothing near: no guess.
        assert_eq!(
            did_you_mean("unknown field `zzz`, expected one of `id`, `rules`"),
            "unknown field `zzz`, expected one of `id`, `rules`"
        );
        assert_eq!(did_you_mean("unknown field `x"), "unknown field `x");
    }

    proptest::proptest! {
        #[test]
        fn any_message_keeps_its_text(message in "\\PC{0,80}") {
            let out = did_you_mean(&message);
            proptest::prop_assert!(out == message || out.contains("(did you mean `"));
            let with_prefix = format!("unknown field `{message}");
            let _ = did_you_mean(&with_prefix);
        }
    }
}
