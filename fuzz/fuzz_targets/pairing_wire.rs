#![no_main]
//! Fuzz target `pairing_wire`: see `peerup_fuzz::checks::pairing_wire`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::pairing_wire(data));
