//! The inputs kept from fuzzing (`fuzz/regressions/<target>/*`: seeds, and every crash or
//! hang found, with the fix), replayed through the same entry functions the cargo-fuzz
//! targets call (`fuzz/entries.rs`), so the normal `cargo test` exercises them without
//! cargo-fuzz or a nightly compiler. Each must simply return.

#[path = "../../fuzz/entries.rs"]
mod entries;

use std::path::Path;

/// Every kept input of `target`; there must be some, or the directory moved.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut count = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("{target}: {}", path.display());
        entry(&data);
        count += 1;
    }
    assert!(count > 0, "no inputs in {}", dir.display());
}

#[test]
fn token_inputs() {
    replay("token", entries::token);
}

#[test]
fn policy_inputs() {
    replay("policy", entries::policy);
}

#[test]
fn graphql_inputs() {
    replay("graphql", entries::graphql);
}

#[test]
fn fhir_inputs() {
    replay("fhir", entries::fhir);
}

#[test]
fn knooppunt_pdp_inputs() {
    replay("knooppunt_pdp", entries::knooppunt_pdp);
}

#[test]
fn flows_inputs() {
    replay("flows", entries::flows);
}

#[test]
fn authzen_search_inputs() {
    replay("authzen_search", entries::authzen_search);
}

#[test]
fn mitz_response_inputs() {
    replay("mitz_response", entries::mitz_response);
}

#[test]
fn source_answer_inputs() {
    replay("source_answer", entries::source_answer);
}

#[test]
fn request_target_inputs() {
    replay("request_target", entries::request_target);
}

#[test]
fn headers_inputs() {
    replay("headers", entries::headers);
}

#[test]
fn config_inputs() {
    replay("config_file", entries::config_file);
}

#[test]
fn response_inputs() {
    replay("response", entries::response);
}

#[test]
fn ext_proc_inputs() {
    replay("ext_proc", entries::ext_proc);
}

#[test]
fn envoy_check_inputs() {
    replay("envoy_check", entries::envoy_check);
}

#[test]
fn json_reader_inputs() {
    replay("json_reader", entries::json_reader);
}

#[test]
fn mask_inputs() {
    replay("mask", entries::mask);
}
