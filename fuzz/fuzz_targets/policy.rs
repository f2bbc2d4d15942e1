//! Fuzz target `policy`: see `entries.rs` for what it feeds the input to.
#![no_main]

#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::policy(data));
