//! Connections to relays: TCP first, then its QUIC twin; and changing the relays of a running
//! node ([`super::super::Node::set_relays`]): drop the reservations and connections of relays no
//! longer configured, dial and reserve on new ones the way [`EventLoop::new`] does at start.
//!
//! libp2p's relay client makes the reservation, and opens outbound circuits, on the *first*
//! connection to the relay. That connection carries every relayed byte, so it has to be the TCP
//! one (TLS with AES-GCM and 256 KiB yamux frames; libp2p-quic's TLS is ChaCha20 only and costs
//! about twice the CPU per byte). Dialing both at once let QUIC, with its shorter handshake, win
//! the race: the relayed benchmark fell from 0.55x to 0.41x DIRECT. So a relay is dialled over
//! TCP, and over QUIC (which teaches the node its public QUIC address, for hole punching) only once
//! the TCP connection is up, or when the TCP dial failed.

use libp2p::core::ConnectedPoint;
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId};
use std::time::Duration;

use tokio::time::Instant;

use super::{EventLoop, quic_twin, strip_p2p};
use crate::node::{NodeEvent, RelayChange};
use crate::relay_addr;
use crate::streams::is_quic;

/// How soon after the handshake a relay that closes the connection unidentified counts as
/// refusing us (its gate closes at once; later closes have other reasons).
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

impl EventLoop {
    pub(super) fn set_relays(&mut self, relays: Vec<Multiaddr>) -> RelayChange {
        let mut change = RelayChange::default();
        for old in std::mem::take(&mut self.relays) {
            if relays.contains(&old) {
                self.relays.push(old);
                continue;
            }
            let Some(id) = relay_addr::peer_id_of(&old) else { continue };
            let still_used = relays.iter().any(|r| relay_addr::peer_id_of(r) == Some(id));
            if let Some(listener) = self.reservations.as_mut().and_then(|r| r.remove(id)) {
                self.swarm.remove_listener(listener);
            }
            if !still_used {
                self.relay_ids.remove(&id);
                self.ready_relays.remove(&id);
                let _ = self.swarm.disconnect_peer_id(id);
            }
            tracing::info!(relay = %id, addr = %old, "relay removed");
            change.removed.push(id);
        }
        for new in relays {
            if self.relays.contains(&new) {
                continue;
            }
            let Some(id) = relay_addr::peer_id_of(&new) else {
                tracing::warn!(addr = %new, "relay address without /p2p/<id> ignored");
                continue;
            };
            if let Some(k) = self.swarm.behaviour_mut().kad.as_mut() {
                k.add_address(&id, strip_p2p(&new));
            }
            self.dial_relay(new.clone());
            if let Some(res) = self.reservations.as_mut() {
                res.add(id, new.clone(), Instant::now());
                // Already connected and identified (same relay, new address): ask right away.
                if self.ready_relays.contains(&id) {
                    res.relay_ready(id, Instant::now());
                }
            }
            self.relay_ids.insert(id);
            tracing::info!(relay = %id, addr = %new, "relay added");
            change.added.push(id);
            self.relays.push(new);
        }
        change
    }

    /// Dials a relay address (the QUIC twin follows in [`Self::on_relay_connected`]).
    pub(super) fn dial_relay(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "relay dial failed");
        }
    }

    /// A connection to `peer` is up: when it is a relay reached over TCP and no QUIC connection
    /// to it exists yet, dial the QUIC twins of its configured addresses.
    pub(super) fn on_relay_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        if !self.relay_ids.contains(&peer) || endpoint.is_relayed() {
            return;
        }
        self.unidentified_relay_conns.insert(connection, Instant::now());
        if is_quic(endpoint.get_remote_address()) {
            return;
        }
        let has_quic = self.swarm.behaviour().streams.paths(&peer).iter().any(|p| p.is_quic());
        if !has_quic {
            self.dial_quic_twins(peer);
        }
    }

    /// A connection closed: when it was one to a relay that the relay closed soon after the
    /// handshake, before it identified itself, the relay refused us. A relay's gate does exactly
    /// that to a peer it does not authorize (the connection is dropped right after the security
    /// handshake, so no reservation is ever refused in words); say so with the fix.
    pub(super) fn on_relay_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        let Some(opened) = self.unidentified_relay_conns.remove(&connection) else { return };
        if opened.elapsed() > REFUSAL_WINDOW {
            return;
        }
        if !self.refused_by.insert(peer) {
            tracing::debug!(relay = %peer, "refused by the relay again");
            return;
        }
        let me = *self.swarm.local_peer_id();
        tracing::warn!(
            relay = %peer,
            "{}",
            crate::relay::refusal_message(&peer, &me)
        );
        self.emit(NodeEvent::RelayRefused { relay: peer });
    }

    /// A dial failed: when it was a relay's TCP address, try its QUIC twin (TCP may be blocked
    /// where UDP is not).
    pub(super) fn on_relay_dial_failed(&mut self, peer: Option<PeerId>, error: &DialError) {
        let Some(peer) = peer.filter(|p| self.relay_ids.contains(p)) else { return };
        let tried_tcp = match error {
            DialError::Transport(addrs) => addrs.iter().any(|(a, _)| !is_quic(a)),
            _ => false,
        };
        if tried_tcp && !self.swarm.is_connected(&peer) {
            self.dial_quic_twins(peer);
        }
    }

    fn dial_quic_twins(&mut self, peer: PeerId) {
        let twins: Vec<Multiaddr> = self
            .relays
            .iter()
            .filter(|r| relay_addr::peer_id_of(r) == Some(peer))
            .filter_map(quic_twin)
            .collect();
        for addr in twins {
            self.dial_relay(addr);
        }
    }
}
