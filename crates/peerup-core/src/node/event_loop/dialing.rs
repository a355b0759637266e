//! Dialing peers: through every relay's circuit and every known direct address at once, after a
//! relay is ready; a direct TCP connection beside a direct QUIC one; and a fresh relayed
//! connection to hole-punch again (`node/repunch.rs`).

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use super::{EventLoop, RELAY_READY_WAIT};
use crate::relay_addr;
use crate::streams::{PathInfo, ip_of, is_relayed};

impl EventLoop {
    /// Dials now if a relay is ready (or there are no relays), else once one is, or after
    /// [`RELAY_READY_WAIT`]. A circuit dialled before identify with the relay has completed gives
    /// DCUtR no public address to offer.
    pub(super) fn dial_when_ready(&mut self, peer: PeerId) {
        if self.relay_ids.is_empty()
            || !self.ready_relays.is_empty()
            || self.relay_ids.contains(&peer)
        {
            self.dial(peer);
        } else if !self.deferred.iter().any(|(p, _)| *p == peer) {
            self.deferred.push((peer, Instant::now() + RELAY_READY_WAIT));
        }
    }

    pub(super) fn dial_deferred(&mut self, force_all: bool) {
        let now = Instant::now();
        let (go, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(_, t)| force_all || *t <= now);
        self.deferred = wait;
        for (peer, _) in go {
            self.dial(peer);
        }
    }

    /// The addresses that reach `peer` through the relays: a relay itself at its configured
    /// address, any other peer through every relay's circuit.
    fn circuits(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .map(|r| match relay_addr::peer_id_of(r) == Some(peer) {
                true => r.clone(),
                false => r.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(peer)),
            })
            .collect()
    }

    /// Dials a peer through every relay's circuit and every known direct address at once; the
    /// swarm keeps the first connection that succeeds.
    pub(super) fn dial(&mut self, peer: PeerId) {
        if self.swarm.behaviour().streams.is_dialing(&peer) {
            return; // the dial under way serves every waiting request
        }
        let circuits = self.circuits(peer);
        // `Disconnected`, not `NotDialing`: a dial already under way (a DHT lookup's) may know only
        // unreachable direct addresses, so ours, with the relay circuits, must run beside it.
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Disconnected)
            .addresses(circuits)
            .extend_addresses_through_behaviour()
            .build();
        let id = opts.connection_id();
        self.swarm.behaviour_mut().streams.dialing(peer, id);
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial not started");
            // Already connected means the waiting requests were served; anything else fails them.
            if !matches!(e, libp2p::swarm::DialError::DialPeerConditionFalse(_)) {
                self.swarm.behaviour_mut().streams.fail_waiting(&peer, &e.to_string());
            }
        }
    }

    /// When the only direct connection to a peer is QUIC, also dial its TCP listen addresses on
    /// the same IP: streams prefer TCP, whose TLS runs AES-GCM (see `PathInfo::rank`).
    pub(super) fn add_tcp_beside_quic(&mut self, peer: PeerId, listen: &[Multiaddr]) {
        let paths = self.swarm.behaviour().streams.paths(&peer);
        let direct: Vec<&PathInfo> = paths.iter().filter(|p| !p.relayed).collect();
        if direct.is_empty()
            || direct.iter().any(|p| !p.is_quic())
            || self.relay_ids.contains(&peer)
        {
            return;
        }
        let quic_ips: Vec<_> = direct.iter().filter_map(|p| ip_of(&p.remote_addr)).collect();
        let tcp: Vec<Multiaddr> = listen
            .iter()
            .filter(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))) && !is_relayed(a))
            .filter(|a| ip_of(a).is_some_and(|ip| quic_ips.contains(&ip)))
            .cloned()
            .collect();
        if tcp.is_empty() || !self.tcp_tried.insert(peer) {
            return;
        }
        tracing::debug!(%peer, addrs = ?tcp, "adding a direct TCP connection beside QUIC");
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::Always).addresses(tcp).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "TCP dial not started");
        }
    }
}

impl EventLoop {
    /// A connection to `peer` is established (and in the book): a relayed one we dialled, with no
    /// direct one beside it, is hole-punched again later if DCUtR does not make a direct one.
    pub(super) fn on_connected(
        &mut self,
        peer: PeerId,
        endpoint: &libp2p::core::ConnectedPoint,
        relayed: bool,
    ) {
        if !relayed {
            self.repunch.forget(&peer);
        } else if endpoint.is_dialer()
            && !self.relay_ids.contains(&peer)
            && self.book.relayed_only(&peer)
        {
            self.repunch.relayed_only(peer, Instant::now());
        }
    }

    /// A connection to `peer` closed (and left the book): a direct one that leaves only relayed
    /// ones held the address pair a new hole punch needs, so punch again soon (`node/repunch.rs`).
    pub(super) fn on_closed(&mut self, peer: PeerId, relayed: bool) {
        let connected = self.swarm.is_connected(&peer);
        let relayed_only = self.book.relayed_only(&peer);
        self.repunch.closed(peer, relayed, connected, relayed_only, Instant::now());
    }

    /// Opens a fresh relayed connection to each peer due for another hole punch: DCUtR runs on
    /// every new relayed connection.
    pub(super) fn punch_again(&mut self) {
        for peer in self.repunch.due(Instant::now()) {
            if !self.book.relayed_only(&peer) {
                self.repunch.forget(&peer);
                continue;
            }
            tracing::info!(%peer, "reached only through relays; hole punching again over a fresh relayed connection");
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::Always)
                .addresses(self.circuits(peer))
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.swarm.behaviour_mut().streams.spare(id),
                Err(e) => tracing::debug!(%peer, error = %e, "relayed dial not started"),
            }
        }
    }
}
