#![no_main]
//! `cargo +nightly fuzz run header_values`: see `src/lib.rs` for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipps_fuzz::header_values(data));
