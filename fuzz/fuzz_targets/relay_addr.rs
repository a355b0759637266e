#![no_main]
//! Fuzz target `relay_addr`: see `peerup_fuzz::checks::relay_addr`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::relay_addr(data));
