//! Fuzz target `mask`: see `entries.rs` for what it feeds the input to.
#![no_main]

// Each target calls one of the entries; the others are unused here.
#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::mask(data));
