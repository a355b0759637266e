#![no_main]
//! Fuzz target `node_config`: see `peerup_fuzz::checks::node_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerup_fuzz::checks::node_config(data));
