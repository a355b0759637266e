//! What a node reports: events to subscribers, and what a relay change did.

use libp2p::{Multiaddr, PeerId};

use crate::streams::PathInfo;

/// Something that happened on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// Listening on a new address.
    Listening(Multiaddr),
    /// A relay accepted (or renewed) our reservation.
    ReservationAccepted {
        /// The relay.
        relay: PeerId,
        /// Whether it was a renewal.
        renewal: bool,
    },
    /// The reservation on a relay was lost; a retry is scheduled.
    ReservationLost {
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: String,
    },
    /// A relay closed our connection before identifying itself: it refuses this node (it does
    /// not authorize it, or it takes no more connections from our IP address).
    RelayRefused {
        /// The relay.
        relay: PeerId,
    },
    /// A connection was established.
    Connected {
        /// The peer.
        peer: PeerId,
        /// The connection's path.
        path: PathInfo,
    },
    /// A connection closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// The connection's path.
        path: PathInfo,
    },
    /// DCUtR upgraded a relayed connection to a direct one.
    HolePunched {
        /// The peer.
        peer: PeerId,
    },
    /// Hole punching failed; the connection stays relayed.
    HolePunchFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A peer identified itself.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its agent version.
        agent: String,
        /// The address it observed for us.
        observed: Multiaddr,
    },
    /// The machine's addresses changed; the node reconnects if some are gone.
    NetworkChanged(crate::netwatch::AddressChange),
}

/// What [`crate::node::Node::set_relays`] changed, by relay peer ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayChange {
    /// Relays now used (dialled, and reserved on when the node reserves).
    pub added: Vec<PeerId>,
    /// Relays no longer used: their reservation is dropped and their connections closed.
    pub removed: Vec<PeerId>,
}
