#![no_main]
//! `cargo +nightly fuzz run problem`: see `src/lib.rs` for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipps_fuzz::problem(data));
