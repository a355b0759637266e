//! What the node does when the machine's addresses change ([`crate::netwatch`]), and when a
//! connection stops answering pings.
//!
//! An address that disappears takes every connection that used it with it, but nothing on this
//! host says which connections those are (a QUIC socket is bound to the wildcard address, a TCP
//! dial's source address is chosen by the kernel), and the other side's NAT will not let packets
//! from a new public address into an old connection anyway. So when an address goes away the node
//! starts afresh at once instead of waiting for timeouts: it forgets the public addresses peers
//! observed, closes its connections, dials the relays again (a new reservation, and the relays
//! observe the new public address that hole punching needs), and dials the peers it was connected
//! to once a relay is ready, so that their side learns of the move and hole punching runs again.
//! New addresses alone change nothing that works; the relays are asked again so that they
//! observe the new address.

use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

use super::{EventLoop, RELAY_READY_WAIT};
use crate::netwatch::AddressChange;
use crate::node::NodeEvent;

/// How long a connection's pings may go unanswered before it is closed (pings go every 2 s).
const SILENCE: Duration = Duration::from_secs(8);
/// A connection whose pings have gone unanswered this long is suspect (pings go every 2 s).
const QUIET: Duration = Duration::from_secs(3);
/// How long after one of a peer's direct connections broke its others are held to [`QUIET`].
const SUSPECT_FOR: Duration = Duration::from_secs(15);
/// How long after an address change our QUIC observations are offered to hole punching.
const OFFER_QUIC_FOR: Duration = Duration::from_secs(120);

/// Whether a connection's I/O error is the peer closing it on purpose: a QUIC connection the
/// peer's application closed (quinn reports it as `closed by peer: <code>`, while a transport
/// error reads `aborted by peer`). Such a peer is alive (it closed a redundant or idle
/// connection), so its other connections are not suspect ([`EventLoop::on_broken`]). libp2p's
/// QUIC error keeps quinn's error private, so its text is what tells.
pub(super) fn closed_by_peer(e: &std::io::Error) -> bool {
    e.to_string().starts_with("closed by peer")
}

impl EventLoop {
    pub(super) fn on_network_change(&mut self, change: AddressChange) {
        self.emit(NodeEvent::NetworkChanged(change.clone()));
        // TCP hole punching offers our TCP listen port at the public address (identify translates
        // the observed port to it), which holds only while the NAT keeps the port; after a move
        // the old mapping still holds it, so offer the fresh QUIC observations for a while.
        self.offer_quic_until = Some(Instant::now() + OFFER_QUIC_FOR);
        if let Some(res) = self.reservations.as_mut() {
            res.reset_backoff();
        }
        if change.removed.is_empty() {
            tracing::info!(%change, "new local addresses; asking the relays again");
            self.dial_relays();
            return;
        }
        let peers: Vec<PeerId> =
            self.swarm.connected_peers().filter(|p| !self.relay_ids.contains(p)).copied().collect();
        tracing::info!(%change, peers = peers.len(), "local addresses gone; reconnecting to the relays and peers");
        let observed: Vec<_> = self
            .swarm
            .external_addresses()
            .filter(|a| !self.configured_external.contains(a))
            .cloned()
            .collect();
        for addr in &observed {
            self.swarm.remove_external_address(addr);
        }
        let everyone: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in everyone {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.ready_relays.clear();
        self.tcp_tried.clear();
        self.dial_relays();
        let go_anyway = Instant::now() + RELAY_READY_WAIT;
        for peer in peers {
            if !self.deferred.iter().any(|(p, _)| *p == peer) {
                self.deferred.push((peer, go_anyway));
            }
        }
    }

    /// Dials every relay at its configured address (its QUIC twin follows once that connection is
    /// up: `relays.rs`).
    pub(super) fn dial_relays(&mut self) {
        for addr in self.relays.clone() {
            self.dial_relay(addr);
        }
        for addr in self.bootstrap.clone() {
            if let Some(id) = crate::relay_addr::peer_id_of(&addr)
                && self.swarm.is_connected(&id)
            {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap peer dial failed");
            }
        }
    }

    /// A peer that comes in through a relay while we hold a direct connection to it that has
    /// stopped answering pings has moved (it dials through relays only when it has no working
    /// connection to us): close the old one now rather than after [`SILENCE`], so that new
    /// streams take the new path. A direct connection that still answers is left alone (the
    /// same identity may run in two processes, a daemon and a `peerup ping`, say).
    pub(super) fn on_relayed_inbound(&mut self, peer: PeerId) {
        for id in self.book.direct_silent(&peer, Instant::now(), QUIET) {
            tracing::info!(%peer, "peer came back through a relay; closing its silent direct connection");
            self.close_for_silence(peer, id);
        }
    }

    /// A connection to `peer` broke (an I/O error, not a close on our side) while others to it
    /// remain. When its process crashed (a relay, or a peer's daemon), its TCP connection ended
    /// but its QUIC one only goes silent: for [`SUSPECT_FOR`], the peer's other direct
    /// connections (to a relay: the TCP or QUIC twin, which circuits may run over) are closed
    /// after [`QUIET`] without a pong instead of [`SILENCE`] (those open at the break only). A stream waiting on a dead one is
    /// then retried on a fresh connection (through another relay, or the restarted peer) within
    /// seconds. One that still answers is kept: the other end may only have closed an idle twin.
    pub(super) fn on_broken(&mut self, peer: PeerId, relayed: bool) {
        if !relayed {
            tracing::debug!(%peer, "direct connection broke; its others are suspect");
            let now = Instant::now();
            self.suspect.insert(peer, (now + SUSPECT_FOR, now));
        }
    }

    /// Closes connections whose pings have gone unanswered for [`SILENCE`] (a NAT forgot them,
    /// the other side moved), or for [`QUIET`] when their peer is suspect, so that streams stop
    /// choosing them and the peer is dialled afresh when needed. libp2p's ping reports only the
    /// second failure in a row, which on a dead connection comes after a stream negotiation
    /// timeout too: far too late.
    pub(super) fn close_silent(&mut self) {
        let now = Instant::now();
        self.suspect.retain(|_, (until, _)| *until > now);
        let suspect: Vec<(PeerId, Instant)> =
            self.suspect.iter().map(|(peer, (_, broke))| (*peer, *broke)).collect();
        for (peer, broke) in suspect {
            // Only connections that were open when the other broke: one opened since comes from
            // a live process (the same peer ID may run more than one, e.g. several proxies),
            // and a busy one may answer pings late.
            for id in self.book.take_direct_silent(&peer, now, QUIET, broke) {
                tracing::info!(%peer, "a connection to this peer broke and this one is silent; closing it");
                self.close_for_silence(peer, id);
            }
        }
        for (peer, id) in self.book.silent(Instant::now(), SILENCE) {
            tracing::info!(%peer, "connection stopped answering pings; closing it");
            self.close_for_silence(peer, id);
        }
    }

    /// Closes a connection that went silent. A TCP one is reset rather than closed gracefully:
    /// its peer is gone, and a socket left retransmitting would hold the address pair that a
    /// hole punch to the same peer needs (`crate::transport::tcp`).
    fn close_for_silence(&mut self, peer: PeerId, id: libp2p::swarm::ConnectionId) {
        let tcp = self
            .book
            .path(&peer, id)
            .and_then(|p| crate::transport::tcp::socket_addr(&p.remote_addr));
        if let Some(addr) = tcp {
            let marked = self.sockets.reset_on_close(addr);
            tracing::debug!(%peer, %addr, marked, "silent TCP connection will be reset");
        }
        self.swarm.close_connection(id);
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::closed_by_peer;

    /// quinn's text for a QUIC connection the peer's application closed, as it reaches the event
    /// loop, is a close; a TCP connection's EOF or reset, or a QUIC transport error, is a break.
    #[test]
    fn only_a_peer_closing_on_purpose_is_not_a_break() {
        assert!(closed_by_peer(&io::Error::other("closed by peer: 0")));
        for broke in [
            io::Error::from(io::ErrorKind::ConnectionReset),
            io::Error::from(io::ErrorKind::UnexpectedEof),
            io::Error::other("aborted by peer: the cryptographic handshake failed"),
            io::Error::other("timed out"),
            io::Error::other(
                "decode error: i/o error: peer closed connection without sending TLS close_notify",
            ),
        ] {
            assert!(!closed_by_peer(&broke), "{broke}");
        }
    }
}
