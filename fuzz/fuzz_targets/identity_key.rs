#![no_main]
//! Fuzz target `identity_key`: see `peerup_fuzz::checks::identity_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::identity_key(data));
