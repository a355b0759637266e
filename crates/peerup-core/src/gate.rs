//! The connection gate: inbound connections from peers that are not authorized are refused right
//! after the security handshake, when the remote's peer ID is known.
//!
//! Outbound connections are not gated (we chose to dial them), which is why every service stream
//! re-checks the same [`AccessList`] before it is served. Relays and other infrastructure peers
//! can be let in with [`AccessList::allow_always`]. The gate can also cap inbound connections per
//! source IP, which bounds what one host can take from a relay.
//!
//! A relay that holds pairing slots admits unknown peers on [`Probation`]: a few at a time, each for
//! a short while, while at least one slot is open. They get no relay service (the relay's rate
//! limiters refuse peers that are not allowed, see [`crate::relay`]) and only the pairing
//! rendezvous among the application protocols.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use jiff::Timestamp;
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

use crate::authorized_keys::AuthorizedKeys;

/// Why an inbound connection was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The peer is not in authorized_keys, or its entry has expired.
    #[error("peer {0} is not authorized")]
    NotAuthorized(PeerId),
    /// Too many connections from one IP address.
    #[error("too many connections from {0}")]
    TooManyFromIp(IpAddr),
}

#[derive(Debug, Default)]
struct Inner {
    enabled: bool,
    peers: HashMap<PeerId, Option<Timestamp>>,
    always: HashSet<PeerId>,
}

/// Who may connect, shared between the gate, the service handlers and whoever reloads it.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    inner: Arc<RwLock<Inner>>,
}

impl AccessList {
    /// Gating off: every peer is allowed.
    pub fn open() -> Self {
        Self::default()
    }

    /// Gating on, with the entries of an authorized_keys file.
    pub fn from_keys(keys: &AuthorizedKeys) -> Self {
        let list = Self::default();
        list.replace(keys);
        list
    }

    /// Replaces the authorized peers (a reload), keeping the always-allowed ones, and turns
    /// gating on.
    pub fn replace(&self, keys: &AuthorizedKeys) {
        let peers = keys.entries().map(|e| (e.peer_id(), e.expires())).collect();
        let mut inner = self.write();
        inner.enabled = true;
        inner.peers = peers;
    }

    /// Lets a peer in regardless of authorized_keys (used for configured relays).
    pub fn allow_always(&self, peer: PeerId) {
        self.write().always.insert(peer);
    }

    /// Whether gating is on.
    pub fn is_enabled(&self) -> bool {
        self.read().enabled
    }

    /// Whether `peer` may connect now.
    pub fn is_allowed(&self, peer: &PeerId) -> bool {
        self.is_authorized(peer) || self.is_infrastructure(peer)
    }

    /// Whether `peer` may use services: like [`Self::is_allowed`], but infrastructure peers
    /// (relays) get no service access unless they are in authorized_keys themselves.
    pub fn is_authorized(&self, peer: &PeerId) -> bool {
        let inner = self.read();
        !inner.enabled
            || matches!(inner.peers.get(peer), Some(exp) if exp.is_none_or(|t| t > Timestamp::now()))
    }

    /// Whether `peer` is an always-allowed (infrastructure) peer.
    pub fn is_infrastructure(&self, peer: &PeerId) -> bool {
        self.read().always.contains(peer)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Admission of unknown peers while pairing slots are open (relays only).
#[derive(Debug, Clone)]
pub struct Probation {
    open_slots: Arc<AtomicUsize>,
    max: usize,
    ttl: Duration,
}

impl Probation {
    /// At most `max` unknown peers at once, each disconnected after `ttl` unless it has become
    /// authorized meanwhile.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self { open_slots: Arc::default(), max, ttl }
    }

    /// Tells the gate how many pairing slots are open; with none, no one is admitted.
    pub fn set_open_slots(&self, n: usize) {
        self.open_slots.store(n, Ordering::Relaxed);
    }

    fn is_open(&self) -> bool {
        self.open_slots.load(Ordering::Relaxed) > 0
    }
}

/// How often probation deadlines are checked.
const PROBATION_TICK: Duration = Duration::from_secs(1);

/// The gate behaviour.
pub struct Gate {
    list: AccessList,
    /// Refuse outbound connections to peers the list does not allow too (see
    /// [`Gate::gate_outbound`]).
    outbound: bool,
    metrics: crate::metrics::Metrics,
    max_per_ip: Option<usize>,
    per_ip: HashMap<IpAddr, usize>,
    conn_ip: HashMap<ConnectionId, IpAddr>,
    probation: Option<Probation>,
    on_probation: HashMap<ConnectionId, (PeerId, tokio::time::Instant)>,
    tick: Option<tokio::time::Interval>,
    to_close: VecDeque<(PeerId, ConnectionId)>,
}

impl Gate {
    /// A gate over `list`, optionally capping inbound connections per source IP and admitting
    /// unknown peers on probation.
    pub fn new(
        list: AccessList,
        max_per_ip: Option<usize>,
        probation: Option<Probation>,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            list,
            outbound: false,
            metrics,
            max_per_ip,
            per_ip: HashMap::new(),
            conn_ip: HashMap::new(),
            probation,
            on_probation: HashMap::new(),
            tick: None,
            to_close: VecDeque::new(),
        }
    }

    /// Refuses outbound connections to peers the list does not allow as well. A relay server has
    /// no business with other peers, and a peer whose access was revoked must not get back in over
    /// a connection the relay dialled itself (an AutoNAT dial-back, the DHT): it would hold a
    /// connection its reservations are refused on, and never hear that it is not authorized.
    pub fn gate_outbound(mut self) -> Self {
        self.outbound = true;
        self
    }

    /// Whether an unknown peer may come in on probation now.
    fn admit_on_probation(&mut self, id: ConnectionId, peer: PeerId) -> bool {
        let Some(p) = &self.probation else { return false };
        // Peers that became authorized (a successful pairing) are on probation no longer.
        let list = &self.list;
        self.on_probation.retain(|_, (peer, _)| !list.is_allowed(peer));
        let peers: HashSet<&PeerId> = self.on_probation.values().map(|(p, _)| p).collect();
        if !p.is_open() || (!peers.contains(&peer) && peers.len() >= p.max) {
            return false;
        }
        self.on_probation.insert(id, (peer, tokio::time::Instant::now() + p.ttl));
        true
    }
}

fn direct_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if crate::streams::is_relayed(addr) { None } else { crate::streams::ip_of(addr) }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.list.is_allowed(&peer) && self.admit_on_probation(id, peer) {
            tracing::info!(target: "audit", %peer, addr = %remote_addr, "auth_decision: unknown peer admitted on probation (pairing)");
        } else if !self.list.is_allowed(&peer) {
            tracing::info!(target: "audit", %peer, addr = %remote_addr, "auth_decision: inbound connection denied (not authorized)");
            self.metrics.auth_denials.inc();
            return Err(ConnectionDenied::new(GateError::NotAuthorized(peer)));
        }
        let source = direct_ip(remote_addr).map(crate::per_key::source_key);
        if let (Some(max), Some(ip)) = (self.max_per_ip, source) {
            let count = self.per_ip.entry(ip).or_default();
            if *count >= max {
                tracing::info!(%peer, %ip, "inbound connection denied: per-IP limit");
                return Err(ConnectionDenied::new(GateError::TooManyFromIp(ip)));
            }
            *count += 1;
            self.conn_ip.insert(id, ip);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.outbound && !self.list.is_allowed(&peer) {
            tracing::debug!(%peer, %addr, "outbound connection closed: peer not authorized");
            return Err(ConnectionDenied::new(GateError::NotAuthorized(peer)));
        }
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(e) = &event {
            self.on_probation.remove(&e.connection_id);
        }
        if let FromSwarm::ConnectionClosed(e) = event
            && let Some(ip) = self.conn_ip.remove(&e.connection_id)
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if self.probation.is_some() {
            let tick = self.tick.get_or_insert_with(|| tokio::time::interval(PROBATION_TICK));
            while tick.poll_tick(cx).is_ready() {
                let now = tokio::time::Instant::now();
                let list = &self.list;
                self.on_probation.retain(|_, (peer, _)| !list.is_allowed(peer));
                for (id, (peer, deadline)) in &self.on_probation {
                    if *deadline <= now {
                        self.to_close.push_back((*peer, *id));
                    }
                }
                self.on_probation.retain(|_, (_, d)| *d > now);
            }
        }
        match self.to_close.pop_front() {
            Some((peer_id, id)) => {
                tracing::debug!(peer = %peer_id, "probation over; closing the connection");
                Poll::Ready(ToSwarm::CloseConnection {
                    peer_id,
                    connection: CloseConnection::One(id),
                })
            }
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_list_honours_gating_expiry_and_infrastructure() {
        let a = PeerId::random();
        let b = PeerId::random();
        let relay = PeerId::random();
        let open = AccessList::open();
        assert!(open.is_allowed(&a));

        let keys = AuthorizedKeys::parse(&format!("{a}\n{b} expires=2000-01-01T00:00:00Z\n"));
        let list = AccessList::from_keys(&keys);
        assert!(list.is_allowed(&a));
        assert!(!list.is_allowed(&b), "expired entries are refused");
        assert!(!list.is_allowed(&relay));
        list.allow_always(relay);
        assert!(list.is_allowed(&relay));
        assert!(!list.is_authorized(&relay), "relays get no service access");
        assert!(list.is_authorized(&a));
        list.replace(&AuthorizedKeys::parse(""));
        assert!(!list.is_allowed(&a), "a reload removes peers");
        assert!(list.is_allowed(&relay), "infrastructure survives reloads");
    }
}
