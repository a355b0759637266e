//! The peerup networking core.
//!
//! This crate holds everything that is not user interface: it does no printing, parses no YAML and
//! knows nothing of the command line. The `peerup` binary loads files and flags and hands typed
//! values to the pieces here.
//!
//! # Layers
//! Each layer uses only the ones below it (`scripts/check-layers` keeps it so):
//! - [`service`]: what a user asks for: exposing a local TCP service, reaching a peer's.
//! - [`tunnel`]: how one proxied connection travels: bulk connections (direct, punched, relay
//!   legs, a circuit of its own) or a yamux stream; their probes, limits and revocations.
//! - [`node`]: the libp2p node (one task owns the swarm; [`node::Node`] is the handle), with
//!   [`streams`] (application streams on the best connection) and [`gate`] (who may connect).
//! - [`transport`]: TCP, QUIC, circuits, TLS with AES-GCM preferred, yamux; and the hook through
//!   which a listener hands a connection to another layer.
//!
//! Beside them:
//! - [`identity`]: the node's Ed25519 key, stored in libp2p's protobuf encoding (Go peer-up compatible).
//! - [`authorized_keys`]: the SSH-style allowlist of peer IDs, parsed and edited without losing comments.
//! - [`relay_addr`]: turns what a user types for a relay (`ip:port` or a multiaddr) into a dialable address.
//! - [`label`]: DNS-label names, used for services and network namespaces.
//! - [`protocols`]: every protocol ID peerup speaks, in one place.
//! - [`serve`]: the one accept → limit → spawn loop.
//! - [`pingpong`]: ping; [`pairing`]: invite/join with short codes over SPAKE2, and SAS verification.
//! - [`metrics`]: Prometheus metrics of the node.
//! - [`netinfo`]: local addresses, NAT mapping and the reachability grade; [`netwatch`]: noticing
//!   that the machine's addresses changed.
//! - [`diag`]: traceroute over the path actually taken; [`doctor`]: `peerup doctor`'s probes.
//! - [`relay`]: circuit relay server limits.
//! - [`fsutil`]: atomic, private (mode 0600) file writes and the permission check on secrets.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]
#![warn(unreachable_pub)]

pub mod authorized_keys;
pub mod diag;
pub mod doctor;
pub mod fsutil;
pub mod gate;
pub mod identity;
pub mod label;
pub mod metrics;
pub mod netinfo;
pub mod netwatch;
pub mod node;
pub mod pairing;
pub(crate) mod per_key;
pub mod pingpong;
pub mod protocols;
pub mod relay;
pub mod relay_addr;
pub mod serve;
pub mod service;
pub mod streams;
pub mod transport;
pub mod tunnel;

pub use libp2p::{Multiaddr, PeerId, StreamProtocol, multiaddr};
