//! What the node knows of each connected peer: its agent, each connection with when it opened and
//! the address the peer observed for us on it, and the last ping round trip.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::streams::PathInfo;

/// One open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionState {
    /// Its path.
    pub path: PathInfo,
    /// When it was established.
    pub since: SystemTime,
    /// The address the peer observed for us on it (from identify).
    pub observed: Option<Multiaddr>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer.
    pub peer: PeerId,
    /// Its identify agent version, once identified.
    pub agent: Option<String>,
    /// The last ping round trip.
    pub last_rtt: Option<Duration>,
    /// Its open connections, oldest first.
    pub connections: Vec<ConnectionState>,
}

#[derive(Default)]
struct Entry {
    agent: Option<String>,
    last_rtt: Option<Duration>,
    conns: HashMap<ConnectionId, ConnectionState>,
}

/// Connected peers, kept by the swarm task.
#[derive(Default)]
pub(crate) struct PeerBook {
    peers: HashMap<PeerId, Entry>,
}

impl PeerBook {
    pub(crate) fn connected(&mut self, peer: PeerId, id: ConnectionId, path: PathInfo) {
        let state = ConnectionState { path, since: SystemTime::now(), observed: None };
        self.peers.entry(peer).or_default().conns.insert(id, state);
    }

    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.conns.remove(&id);
            if e.conns.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    pub(crate) fn identified(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        agent: String,
        observed: Multiaddr,
    ) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.agent = Some(agent);
            if let Some(c) = e.conns.get_mut(&id) {
                c.observed = Some(observed);
            }
        }
    }

    pub(crate) fn rtt(&mut self, peer: PeerId, rtt: Duration) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.last_rtt = Some(rtt);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<PeerState> {
        let mut out: Vec<PeerState> = self
            .peers
            .iter()
            .map(|(peer, e)| {
                let mut connections: Vec<ConnectionState> = e.conns.values().cloned().collect();
                connections.sort_by_key(|c| c.since);
                PeerState { peer: *peer, agent: e.agent.clone(), last_rtt: e.last_rtt, connections }
            })
            .collect();
        out.sort_by_key(|p| p.peer);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(addr: &str) -> PathInfo {
        let remote_addr: Multiaddr = addr.parse().unwrap();
        PathInfo { relayed: crate::streams::is_relayed(&remote_addr), remote_addr }
    }

    #[test]
    fn tracks_connections_agent_and_rtt() {
        let mut book = PeerBook::default();
        let peer = PeerId::random();
        let (a, b) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        book.connected(peer, a, path("/ip4/198.18.0.1/tcp/7777"));
        book.connected(peer, b, path("/ip4/198.18.0.1/udp/7777/quic-v1"));
        book.identified(
            peer,
            b,
            "peerup/0.1.0".into(),
            "/ip4/198.18.0.11/udp/4001/quic-v1".parse().unwrap(),
        );
        book.rtt(peer, Duration::from_millis(3));
        let snap = book.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].agent.as_deref(), Some("peerup/0.1.0"));
        assert_eq!(snap[0].last_rtt, Some(Duration::from_millis(3)));
        assert_eq!(snap[0].connections.len(), 2);
        assert_eq!(snap[0].connections.iter().filter(|c| c.observed.is_some()).count(), 1);
        book.closed(peer, a);
        assert_eq!(book.snapshot()[0].connections.len(), 1);
        book.closed(peer, b);
        assert!(book.snapshot().is_empty());
        // Events for unknown peers are ignored.
        book.rtt(peer, Duration::from_millis(1));
        assert!(book.snapshot().is_empty());
    }
}
