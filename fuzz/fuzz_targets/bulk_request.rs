#![no_main]
//! Fuzz target `bulk_request`: see `peerup_fuzz::checks::bulk_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::bulk_request(data));
