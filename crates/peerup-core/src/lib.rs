//! The peerup networking core.
//!
//! This crate holds everything that is not user interface: it does no printing, parses no YAML and
//! knows nothing of the command line. The `peerup` binary loads files and flags and hands typed
//! values to the pieces here.
//!
//! # Layout
//! - [`identity`]: the node's Ed25519 key, stored in libp2p's protobuf encoding (Go peer-up compatible).
//! - [`authorized_keys`]: the SSH-style allowlist of peer IDs, parsed and edited without losing comments.
//! - [`relay_addr`]: turns what a user types for a relay (`ip:port` or a multiaddr) into a dialable address.
//! - [`label`]: DNS-label names, used for services and network namespaces.
//! - [`protocols`]: every protocol ID peerup speaks, in one place.
//! - [`node`]: the libp2p node (one task owns the swarm; [`node::Node`] is the handle).
//! - [`streams`]: application streams, opened on a direct connection whenever one exists.
//! - [`gate`]: refuses inbound connections from peers not in authorized_keys.
//! - [`bulk`]: proxied connections on their own TLS connection beside yamux, when direct.
//! - [`punch`]: a hole punch per bulk connection, for peers whose direct connection was punched.
//! - [`legs`]: relayed bulk connections as two TCP legs a relay joins.
//! - [`service`]: exposing local TCP services and reaching a peer's; [`pingpong`]: ping.
//! - [`metrics`]: Prometheus metrics of the node.
//! - [`netinfo`]: local addresses, NAT mapping and the reachability grade.
//! - [`netwatch`]: noticing that the machine's addresses changed.
//! - [`tls`]: libp2p's TLS 1.3 handshake with AES-GCM preferred.
//! - [`mux`]: yamux with 256 KiB frames.
//! - [`pairing`]: invite/join with short codes over SPAKE2, and SAS verification.
//! - [`diag`]: traceroute over the path actually taken.
//! - [`doctor`]: `peerup doctor`'s probes: relays over TCP and QUIC, NAT mapping, hops, UPnP.
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
