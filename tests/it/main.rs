//! Sluis's integration tests: one test binary, one module per area (what used to be one
//! binary per file), sharing the helpers of `crates/sluis-test-kit`. One binary links the
//! server once instead of forty times.
//!
//! Run one area with its module name as the filter, e.g.
//! `cargo test --test it import_memory:: -- --nocapture`.
//!
//! Tests in one process share it: none sets process environment variables or installs a
//! global subscriber (what needs `sluis serve`'s own subscriber, signals or exit code runs
//! the binary as a child process, [`sluis_test_kit::process`]), and servers listen on
//! port 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod authzen;
mod authzen_search;
mod care_services_proxy;
mod cli;
mod decision_log;
mod deployment_examples;
mod docs_reference;
mod door_parsing_props;
mod dpop_replay_redis;
mod envoy_e2e;
mod envoy_flows;
mod envoy_graphql;
mod envoy_iwlz;
mod envoy_mtls;
mod envoy_negative;
mod envoy_read_props;
mod example_policies;
mod flows_grpc;
mod flows_postgres;
mod flows_sqlite;
mod fuzz_regressions;
mod gateways_http;
mod graphql_templates;
mod helm_chart;
mod http_doors;
mod identity_providers;
mod import_memory;
mod introspection;
mod introspection_claims;
mod iwlz_identity;
mod knooppunt_pdp;
mod knooppunt_pep_njs;
mod kong_check_door;
mod lifecycle;
mod listener_limits;
mod method_override;
mod metrics;
mod mitz_standin;
mod negative_corpus;
mod negative_corpus_doors;
mod newcomer;
mod nuts_deployment;
mod policy_loading;
mod policy_tools;
mod release_build;
mod response_authz;
mod response_authzen;
mod rollout;
mod sender_constraints;
mod sources;
mod sources_limits;
mod sources_process;
mod sources_reload;
mod test_command;
mod token_path_props;
mod token_validation;
mod tracing_otlp;
mod wycheproof_jose;
mod wycheproof_jwk;

/// Runs the `sluis` binary cargo built for these tests; returns exit code, stdout and
/// stderr.
fn sluis(args: &[&str]) -> (i32, String, String) {
    sluis_test_kit::run(env!("CARGO_BIN_EXE_sluis"), args)
}
