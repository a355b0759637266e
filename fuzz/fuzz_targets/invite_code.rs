#![no_main]
//! Fuzz target `invite_code`: see `peerup_fuzz::checks::invite_code`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::invite_code(data));
