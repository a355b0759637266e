#![no_main]
//! Fuzz target `relay_config`: see `peerup_fuzz::checks::relay_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::relay_config(data));
