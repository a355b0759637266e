#![no_main]
//! Fuzz target `authorized_keys`: see `peerup_fuzz::checks::authorized_keys`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::authorized_keys(data));
