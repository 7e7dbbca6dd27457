#![no_main]
//! `cargo +nightly fuzz run request_bodies`: see `src/lib.rs` for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipps_fuzz::request_bodies(data));
