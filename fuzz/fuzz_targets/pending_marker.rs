#![no_main]
//! Fuzz target `pending_marker`: see `peerup_fuzz::checks::pending_marker`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::pending_marker(data));
