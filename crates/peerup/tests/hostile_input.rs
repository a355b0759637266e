//! Hostile local input: every parser of what a user, a file or a peer hands us (config YAML,
//! authorized_keys, identity.key, invite codes, pairing and bulk-path messages, relay addresses,
//! the pending-apply marker) returns a clear error and never panics, and round-trips what it
//! accepts. The checks are the fuzz targets' own (`fuzz/src/checks.rs`); here they run on
//! proptest's inputs, random and structured, and on every saved fuzz input (seeds and crash
//! regressions under `fuzz/`). The daemon API's JSON bodies are checked beside their handlers
//! (`src/daemon/api.rs`).

// Shared with the fuzz crate, which lives outside the workspace (it needs libFuzzer's C++ runtime
// and coverage flags that a normal build must not get).
#[path = "../../../fuzz/src/checks.rs"]
mod checks;

#[path = "hostile_input/config.rs"]
mod config;
#[path = "hostile_input/messages.rs"]
mod messages;
#[path = "hostile_input/replay.rs"]
mod replay;
