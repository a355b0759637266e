//! What the node knows of each connected peer: its agent, each connection with when it opened and
//! the address the peer observed for us on it, and the last ping round trip.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

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
    /// When each connection's pings were last answered (or it opened); `None` once it is not
    /// judged by them (the peer does not answer pings, or it is being closed already).
    liveness: HashMap<ConnectionId, Option<Instant>>,
    /// When each connection opened.
    opened: HashMap<ConnectionId, Instant>,
}

/// Connected peers, kept by the swarm task.
#[derive(Default)]
pub(crate) struct PeerBook {
    peers: HashMap<PeerId, Entry>,
}

impl PeerBook {
    pub(crate) fn connected(&mut self, peer: PeerId, id: ConnectionId, path: PathInfo) {
        let state = ConnectionState { path, since: SystemTime::now(), observed: None };
        let e = self.peers.entry(peer).or_default();
        e.conns.insert(id, state);
        e.liveness.insert(id, Some(Instant::now()));
        e.opened.insert(id, Instant::now());
    }

    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.conns.remove(&id);
            e.liveness.remove(&id);
            e.opened.remove(&id);
            if e.conns.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    /// The path of one of `peer`'s connections.
    pub(crate) fn path(&self, peer: &PeerId, id: ConnectionId) -> Option<&PathInfo> {
        self.peers.get(peer)?.conns.get(&id).map(|c| &c.path)
    }

    /// Whether `peer` is connected, through relays only.
    pub(crate) fn relayed_only(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| !e.conns.is_empty() && e.conns.values().all(|c| c.path.relayed))
    }

    /// The peer's direct connections whose pings have gone unanswered for longer than `max`.
    pub(crate) fn direct_silent(
        &self,
        peer: &PeerId,
        now: Instant,
        max: Duration,
    ) -> Vec<ConnectionId> {
        let Some(e) = self.peers.get(peer) else { return Vec::new() };
        e.conns
            .iter()
            .filter(|(id, c)| {
                !c.path.relayed
                    && e.liveness
                        .get(id)
                        .copied()
                        .flatten()
                        .is_some_and(|t| now.saturating_duration_since(t) > max)
            })
            .map(|(id, _)| *id)
            .collect()
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

    /// A ping on connection `id` was answered after `rtt`.
    pub(crate) fn pong(&mut self, peer: PeerId, id: ConnectionId, rtt: Duration) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.last_rtt = Some(rtt);
            if let Some(l @ Some(_)) = e.liveness.get_mut(&id) {
                *l = Some(Instant::now());
            }
        }
    }

    /// The peer does not answer pings on `id`: its silence says nothing.
    pub(crate) fn unjudged(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(l) = self.peers.get_mut(&peer).and_then(|e| e.liveness.get_mut(&id)) {
            *l = None;
        }
    }

    /// Like [`Self::direct_silent`], among the connections opened by `opened_by`, and each
    /// connection is returned once (as by [`Self::silent`]).
    pub(crate) fn take_direct_silent(
        &mut self,
        peer: &PeerId,
        now: Instant,
        max: Duration,
        opened_by: Instant,
    ) -> Vec<ConnectionId> {
        let Some(e) = self.peers.get(peer) else { return Vec::new() };
        let old_enough = |id: &ConnectionId| e.opened.get(id).is_some_and(|t| *t <= opened_by);
        let found: Vec<_> =
            self.direct_silent(peer, now, max).into_iter().filter(old_enough).collect();
        if let Some(e) = self.peers.get_mut(peer) {
            for id in &found {
                e.liveness.insert(*id, None);
            }
        }
        found
    }

    /// Connections whose pings have gone unanswered for longer than `max`; each is returned once.
    pub(crate) fn silent(&mut self, now: Instant, max: Duration) -> Vec<(PeerId, ConnectionId)> {
        let mut out = Vec::new();
        for (peer, e) in &mut self.peers {
            for (id, l) in &mut e.liveness {
                if l.is_some_and(|t| now.saturating_duration_since(t) > max) {
                    *l = None;
                    out.push((*peer, *id));
                }
            }
        }
        out
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
        book.pong(peer, b, Duration::from_millis(3));
        let snap = book.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].agent.as_deref(), Some("peerup/0.1.0"));
        assert_eq!(snap[0].last_rtt, Some(Duration::from_millis(3)));
        assert_eq!(snap[0].connections.len(), 2);
        assert_eq!(snap[0].connections.iter().filter(|c| c.observed.is_some()).count(), 1);
        assert!(!book.relayed_only(&peer), "direct connections");
        book.connected(
            peer,
            ConnectionId::new_unchecked(3),
            path("/ip4/198.18.0.1/tcp/7777/p2p-circuit"),
        );
        book.closed(peer, a);
        assert!(!book.relayed_only(&peer), "a direct one left");
        book.closed(peer, b);
        assert!(book.relayed_only(&peer), "only the relayed one left");
        assert!(!book.relayed_only(&PeerId::random()), "not connected");
        assert_eq!(book.snapshot()[0].connections.len(), 1);
        book.closed(peer, ConnectionId::new_unchecked(3));
        assert!(book.snapshot().is_empty());
        // Events for unknown peers are ignored.
        book.pong(peer, a, Duration::from_millis(1));
        assert!(book.snapshot().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_are_reported_once_and_unjudged_ones_never() {
        let mut book = PeerBook::default();
        let peer = PeerId::random();
        let (a, b, c) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        book.connected(peer, a, path("/ip4/198.18.0.1/tcp/7777"));
        book.connected(peer, b, path("/ip4/198.18.0.1/udp/7777/quic-v1"));
        book.connected(peer, c, path("/ip4/198.18.0.11/tcp/4001"));
        book.unjudged(peer, c);
        let max = Duration::from_secs(8);
        tokio::time::advance(Duration::from_secs(5)).await;
        book.pong(peer, a, Duration::from_millis(2));
        assert!(book.silent(Instant::now(), max).is_empty(), "nobody silent for 8 s yet");
        let quiet = Duration::from_secs(3);
        assert_eq!(book.direct_silent(&peer, Instant::now(), quiet), vec![b], "direct, unjudged");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(book.silent(Instant::now(), max), vec![(peer, b)], "b never answered");
        assert!(book.silent(Instant::now(), max).is_empty(), "reported once");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(book.silent(Instant::now(), max), vec![(peer, a)], "a went quiet after 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_direct_connections_are_taken_once() {
        let mut book = PeerBook::default();
        let peer = PeerId::random();
        let (direct, relayed) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        book.connected(peer, direct, path("/ip4/198.18.0.11/udp/4001/quic-v1"));
        let circuit = "/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWGq3UU75XxXeeDVA8Jyef1aW7XE8JC5aHBQwdPibXkkx9/p2p-circuit";
        book.connected(peer, relayed, path(circuit));
        let quiet = Duration::from_secs(3);
        let broke = Instant::now();
        // A connection that opened after the break comes from a live process: not suspect.
        tokio::time::advance(Duration::from_millis(1)).await;
        let newer = ConnectionId::new_unchecked(3);
        book.connected(peer, newer, path("/ip4/198.18.0.11/tcp/4001"));
        let take =
            |book: &mut PeerBook| book.take_direct_silent(&peer, Instant::now(), quiet, broke);
        assert!(take(&mut book).is_empty(), "not yet");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(take(&mut book), vec![direct], "the old direct one only");
        assert!(take(&mut book).is_empty(), "taken once");
        assert!(book.silent(Instant::now(), quiet).iter().all(|(_, id)| *id != direct));
    }
}
