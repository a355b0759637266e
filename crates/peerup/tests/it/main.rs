//! End-to-end tests of the `peerup` binary: each runs the built binary with a temporary `HOME` and
//! asserts stdout, stderr, the exit code and what is on disk.

mod auth;
mod config;
mod config_apply;
mod daemon_api;
mod doctor;
mod file_safety;
mod init;
mod network;
mod pairing;
mod relay_server;
mod service;
mod util;
