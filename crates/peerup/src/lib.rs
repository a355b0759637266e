//! The parts of the `peerup` binary that other code needs to reach directly: the config files'
//! schemas, loading and validation. The fuzz targets (`fuzz/`) and the hostile-input tests feed
//! them bytes; everything else (commands, daemon, API) stays private to the binary (`main.rs`).

pub mod config;
