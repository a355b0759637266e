//! Limits of the circuit relay v2 server.
//!
//! rust-libp2p's defaults cut every relayed circuit after 2 minutes or 128 KiB, which kills any
//! real SSH or RDP session that never gets a direct path. peerup's defaults let a circuit live for
//! 12 hours and carry 1 GiB (both directions counted together), and bound abuse with reservation
//! and circuit caps (in total, per peer, per IP) instead.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, relay};

use crate::gate::AccessList;

/// What a node says when relay `relay` refuses it: in plain words, with the command that fixes it
/// (run on the relay's machine).
pub fn refusal_message(relay: &PeerId, node: &PeerId) -> String {
    format!(
        "the relay {relay} does not authorize this node: run `peerup relay authorize {node}` there"
    )
}

/// Circuit relay server limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once, in total.
    pub max_reservations: usize,
    /// Reservations one peer may hold.
    pub max_reservations_per_peer: usize,
    /// Inbound connections from one IP address (enforced by the gate); also the relay legs from
    /// one address that may be waiting to send their token at once.
    pub max_connections_per_ip: usize,
    /// How long a reservation lasts before renewal.
    pub reservation_ttl: Duration,
    /// Circuits relayed at once, in total.
    pub max_circuits: usize,
    /// Circuits one peer may have at once.
    pub max_circuits_per_peer: usize,
    /// Longest life of one circuit.
    pub circuit_duration: Duration,
    /// Most bytes one circuit carries, both directions counted together (libp2p adds up what it
    /// forwards each way); every stream of the relayed connection shares it.
    pub circuit_bytes: u64,
    /// Whether relayed bulk connections may also be joined as two TCP legs ([`crate::tunnel::legs`]),
    /// under the same limits as circuits.
    pub legs: bool,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 1,
            max_connections_per_ip: 16,
            reservation_ttl: Duration::from_secs(3600),
            max_circuits: 256,
            max_circuits_per_peer: 16,
            circuit_duration: Duration::from_secs(12 * 3600),
            circuit_bytes: 1 << 30,
            legs: true,
        }
    }
}

impl RelayLimits {
    /// The libp2p config. Reservations and circuits are refused to peers `access` does not allow
    /// (peers admitted on probation for pairing are connected but not allowed).
    pub(crate) fn to_libp2p(&self, access: &AccessList) -> relay::Config {
        let mut config = relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_ttl,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.circuit_duration,
            max_circuit_bytes: self.circuit_bytes,
            ..relay::Config::default()
        };
        let (a, b) = (access.clone(), access.clone());
        config
            .reservation_rate_limiters
            .push(Box::new(move |peer, _: &Multiaddr, _| a.is_allowed(&peer)));
        config
            .circuit_src_rate_limiters
            .push(Box::new(move |peer, _: &Multiaddr, _| b.is_allowed(&peer)));
        config
    }
}
