//! Sluis: external authorization for API gateways.
//!
//! A gateway asks, for every request, "may this pass?". Sluis validates the caller's
//! OAuth2 access token, evaluates the operator's CEL policies (written in YAML) and answers
//! allow, with headers to set or strip and query parameters to rewrite, or deny, with a
//! status, headers and a body.
//!
//! # Architecture
//!
//! ```text
//!  doors::envoy (gRPC ext_authz) ─┐
//!  doors::http, one HTTP port:    ├─► AccessRequest ─► engine::Engine::decide ─► Decision
//!    forward_auth, opa, authzen,  │   (+ door name,      │  ├─► audit::DecisionLog, metrics
//!    care_services               ─┘    Evaluation)       │  ├─► engine::candidate (queue):
//!                                                        │  │    candidate set decides too
//!                                                        │  └─► telemetry: span → OTLP
//!                                                        │
//!                        policy::PolicySet::select ◄─────┤  (which policy decides)
//!                        authn::Authenticator     ◄─────┤  (JWT via JWKS, cached by hash)
//!                        policy::Policy::evaluate  ◄─────┘  (CEL rules, deny overrides)
//!                                 ▲ flows of the caller
//!   admin (/v1/flows, gRPC) ──► flows::Flows ──► flows::Store (SQLite | PostgreSQL)
//!                                                   │ catch-up: own writes, NOTIFY, poll
//!                                                   ▼
//!                                          flows::FlowIndex (in memory, per actor)
//! ```
//!
//! | module | what it is |
//! |---|---|
//! | [`request`] | [`request::AccessRequest`]: the gateway-neutral question |
//! | [`decision`] | [`decision::Decision`]: the gateway-neutral answer, with stable deny codes |
//! | [`engine`] | the decision core; the only thing doors call, and the only place that decides. Applies shadow mode (a `mode: shadow` policy is logged, not enforced) and feeds [`engine::candidate`], the candidate policy set decided beside the enforced one on a background queue; refuses an allow a door cannot carry out ([`engine::door`]: a door declares its [`engine::DoorCapabilities`], e.g. no query rewrite); answers questions asked by use case ([`engine::scopes`]: the use case's policy, and the scopes merged from one decision per narrowed type) |
//! | [`authn`] | identities from tokens: [`authn::jose`] (the compact JWS read strictly: no duplicate members, no `crit`, typed claims, [`authn::jose::TokenError`] with `is_final()`), [`authn::issuer`] (JWT via JWKS or discovery, RFC 7662 introspection), [`authn::jwks`] key sets, [`authn::aggregated`] OIDC aggregated claims (embedded claim JWTs), [`authn::certificate`] client certificates, [`authn::dpop`] proofs, [`authn::replay`] caches (a Redis epoch refuses proofs older than the cache's last loss); the verified-token cache |
//! | [`graphql`] | GraphQL requests read out of an `AccessRequest` (POST JSON or GET), parsed within limits (a fast reader for plain documents, apollo-parser for the rest and for errors), fragments expanded; [`graphql::template`] query templates and whether a request fits one; a policy's `graphql` block is compiled in [`policy::graphql`] |
//! | [`json`] | JSON read strictly: a member named twice anywhere is refused (tokens, GraphQL bodies) |
//! | [`fhir`] | FHIR REST interactions of a request (read, search, ...), which SMART scopes ([`policy::smart`]) and search narrowing ([`policy::narrowing`]) judge |
//! | [`flows`] | registered grants: the model and its validation ([`flows::Flow`]), the in-memory index decisions read ([`flows::index`]), the SQLite/PostgreSQL store and its sync loop ([`flows::store`]), and [`flows::Flows`], the API both admin doors call |
//! | [`policy`] | policy files ([`policy::spec`]), CEL ([`policy::expr`]), the caller's party identifiers ([`policy::caller`]), selection and evaluation |
//! | [`audit`] | the decision log: one JSON line per decision, masked, optionally hash-chained, written off the hot path |
//! | [`config`] | the service configuration file |
//! | [`doors`] | front doors: translate a gateway's protocol to and from the engine's types: [`doors::envoy`] (gRPC ext_authz); on one HTTP port ([`doors::http`]): [`doors::forward_auth`] (NGINX, Traefik, Caddy, Envoy `http_service`), [`doors::opa`] (OPA Data API for Kong and APISIX), [`doors::authzen`] (AuthZEN evaluations), [`doors::care_services`] (Care Services Proxy) |
//! | [`admin`] | admin listener: health, readiness, `/explain`, and the flows API over HTTP/JSON ([`admin::flows`]) and gRPC ([`admin::grpc`], defined in `proto/`) on one port |
//! | [`telemetry`] | traces over OTLP: one span per decision, child of the request's W3C `traceparent`, exported off the hot path |
//! | [`metrics`] | Prometheus metrics (`/metrics` on the admin listener): counters bumped where things happen, sizes read when scraped |
//! | [`reload`] | hot reload of policies (the enforced and the candidate set, apart): file watching, SIGHUP, validate-then-swap |
//! | [`server`] | wires listeners, engine and reloader together; `sluis serve` |
//! | [`testing`] | offline tools for policy authors: test suites, explain, replay |
//! | [`schema`] | JSON Schemas of config, policy and test files, generated from the types |
//!
//! The core (`engine`, `authn`, `policy`, `flows`, `graphql`) never imports tonic, axum or envoy-types: front
//! doors translate, the engine decides.

pub mod admin;
pub mod audit;
pub mod authn;
pub mod config;
pub mod decision;
pub mod doors;
pub mod engine;
pub mod fhir;
pub mod flows;
pub mod graphql;
pub mod json;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod request;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod testing;

/// A serde YAML error without its trailing location, which callers report separately.
pub(crate) fn yaml_error_message(error: &serde_yaml_ng::Error) -> String {
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
