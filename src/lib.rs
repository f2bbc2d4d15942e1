//! Sluis: external authorization for API gateways.
//!
//! A gateway asks, for every request, "may this pass?". Sluis validates the caller's
//! OAuth2 access token, evaluates the operator's CEL policies (written in YAML) and answers
//! allow, with headers to set or strip and query parameters to rewrite, or deny, with a
//! status, headers and a body.
//!
//! # The workspace
//!
//! ```text
//!  sluis (this crate: the server)                     sluis-policy-tools
//!    doors::envoy (gRPC ext_authz) ─┐                   test suites, explain, replay
//!    doors::http: forward_auth,     ├─► AccessRequest ──────────┐
//!      opa, authzen, care_services ─┘                           ▼
//!    admin (health, /explain, flows API) ─► sluis_store::Flows  sluis_core::engine::Engine::decide ─► Decision
//!    server, reload, telemetry            │                       ├─ authn (tokens, DPoP, mTLS)
//!                                         ▼                       ├─ policy (CEL rules) ◄─ flows::FlowIndex
//!  sluis-store: SQLite/PostgreSQL flows ──► keeps FlowIndex current └─ audit (decision log)
//!               Redis DPoP replay cache ──► authn::replay::SharedReplay
//!  sluis-config: the config file ──► the core's settings (authn, policy load, decision log)
//! ```
//!
//! | crate | what it is | may import |
//! |---|---|---|
//! | `sluis-core` | the question, the answer and the engine that decides: requests, tokens, policies, flows model and index, decision log | no server, protocol, database or config-file crate |
//! | `sluis-store` | the durable flows store and the flows API the admin doors call; the Redis replay cache | `sluis-core`, sqlx, redis |
//! | `sluis-config` | the config file: YAML, checks, the core's settings it carries | `sluis-core`, `sluis-store` (its settings type) |
//! | `sluis-policy-tools` | `sluis test`, `explain`, `replay`: offline tools for policy authors | `sluis-core`, `sluis-config` |
//! | `sluis` (here) | the server: listeners and doors, admin, reload, telemetry, the command line | everything above, tonic, axum, envoy-types, OpenTelemetry |
//! | `sluis-test-kit` | what the integration tests (`tests/it/`) and benches share: tokens, fixture paths, server and gateway start-up (not published) | `sluis`, `sluis-config`, envoy-types |
//! | `sluis-noop-authz` | the no-op ext_authz server the load scripts compare against (not published) | tonic, envoy-types |
//!
//! Modules of this crate:
//!
//! | module | what it is |
//! |---|---|
//! | [`doors`] | front doors: translate a gateway's protocol to and from the engine's types, and decide nothing: [`doors::envoy`] (gRPC ext_authz); on one HTTP port ([`doors::http`]): [`doors::forward_auth`] (NGINX, Traefik, Caddy, Envoy `http_service`), [`doors::opa`] (OPA Data API for Kong and APISIX), [`doors::check`] (the gRPC door's question and answer as JSON, for the Kong plugin in `kong/`), [`doors::authzen`] (AuthZEN evaluations), [`doors::care_services`] (Care Services Proxy) |
//! | [`admin`] | admin listener: health, readiness, `/metrics`, `/explain`, and the flows API over HTTP/JSON ([`admin::flows`]) and gRPC ([`admin::grpc`], defined in `proto/`) on one port |
//! | [`telemetry`] | traces over OTLP: the decision span joined to the caller's W3C `traceparent`, exported off the hot path |
//! | [`reload`] | hot reload of policies (the enforced and the candidate set, apart): file watching, SIGHUP, validate-then-swap |
//! | [`server`] | wires listeners, engine, store and reloader together; `sluis serve` |
//! | [`tls`] | TLS and mTLS on the listeners (rustls), certificates reloaded when their files change |
//! | [`schema`] | JSON Schemas of config, policy and test files, generated from the types |
//!
//! `docs/architecture.md` draws the request path and says why each crate may import what
//! it does.

pub mod admin;
pub mod doors;
pub mod reload;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod tls;
