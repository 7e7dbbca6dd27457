#![no_main]
//! `cargo +nightly fuzz run signature`: see `src/lib.rs` for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipps_fuzz::signature(data));
