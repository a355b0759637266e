//! The checks behind the fuzz targets (`fuzz_targets/`, one thin binary each). They live in
//! `checks.rs`, which the normal test suite also compiles (`crates/peerup/tests/hostile_input.rs`).

pub mod checks;
