//! Application streams (services, ping-pong) over libp2p connections, with control over which
//! connection an outbound stream uses.
//!
//! libp2p-stream opens a stream on whatever connection it picks, so with a relayed and a
//! hole-punched connection both open, new streams could stay on the relay. This behaviour tracks
//! every connection's path and opens each outbound stream on a direct connection whenever one
//! exists. Inbound streams are delivered per protocol to bounded channels registered with
//! [`StreamControl::accept`].

mod handler;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use handler::Handler;

/// How many inbound streams of one protocol may wait to be taken before new ones are refused.
pub const INBOUND_QUEUE: usize = 1024;

/// Whether a connection goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

/// Whether an address is a QUIC one.
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
}

/// The first IP address in `addr`.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// The connection a stream travels on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The remote address of the connection.
    pub remote_addr: Multiaddr,
    /// Whether it goes through a relay circuit.
    pub relayed: bool,
}

impl PathInfo {
    /// The path of a connection from its endpoint. A relayed connection we accepted names the
    /// peer alone as its remote address (`/p2p/<id>`); its local address is the relay's circuit,
    /// which is what the path shows then.
    pub(crate) fn of(local_addr: Option<&Multiaddr>, remote_addr: &Multiaddr) -> Self {
        match local_addr {
            Some(local) if is_relayed(local) => Self { remote_addr: local.clone(), relayed: true },
            _ => Self { remote_addr: remote_addr.clone(), relayed: is_relayed(remote_addr) },
        }
    }

    /// Whether the connection runs over QUIC.
    pub fn is_quic(&self) -> bool {
        is_quic(&self.remote_addr)
    }

    /// Preference for new streams, lower first: direct TCP (TLS with AES-GCM), then direct QUIC
    /// (libp2p-quic negotiates ChaCha20 and costs about twice the CPU per byte here), then relayed.
    fn rank(&self) -> u8 {
        match (self.relayed, self.is_quic()) {
            (false, false) => 0,
            (false, true) => 1,
            (true, _) => 2,
        }
    }

    /// `DIRECT` or `RELAYED`.
    pub fn kind(&self) -> &'static str {
        if self.relayed { "RELAYED" } else { "DIRECT" }
    }
}

/// A stream opened by a remote peer.
#[derive(Debug)]
pub struct IncomingStream {
    /// Who opened it.
    pub peer: PeerId,
    /// The negotiated protocol.
    pub protocol: StreamProtocol,
    /// The stream.
    pub stream: Stream,
    /// The connection it arrived on.
    pub path: PathInfo,
}

/// Opening a stream failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The remote does not offer the protocol (e.g. the service is not exposed, or the peer
    /// refused it).
    #[error(
        "the peer does not offer {0}: the service is not exposed there, or this peer may not use it"
    )]
    Unsupported(StreamProtocol),
    /// No connection to the peer could be made.
    #[error("cannot connect to the peer: {0}")]
    NotConnected(String),
    /// The stream could not be opened in time or the connection failed.
    #[error("opening the stream failed: {0}")]
    Io(String),
}

/// Decides per peer whether a protocol is offered at all.
pub type PeerFilter = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

struct Acceptor {
    tx: mpsc::Sender<IncomingStream>,
    filter: Option<PeerFilter>,
}

type Inbound = HashMap<StreamProtocol, Acceptor>;

/// Registers the protocols this node accepts. Cloneable; usable outside the swarm task.
#[derive(Clone, Default)]
pub struct StreamControl {
    inbound: Arc<Mutex<Inbound>>,
}

impl StreamControl {
    /// Accepts inbound streams of `protocol`. Replaces an earlier registration; dropping the
    /// receiver stops accepting (new streams are then refused at negotiation).
    pub fn accept(&self, protocol: StreamProtocol) -> mpsc::Receiver<IncomingStream> {
        self.register(protocol, None)
    }

    /// Like [`Self::accept`], but the protocol is offered only to peers `filter` approves: others
    /// are told at negotiation that it is not supported, before any data flows.
    pub fn accept_from(
        &self,
        protocol: StreamProtocol,
        filter: PeerFilter,
    ) -> mpsc::Receiver<IncomingStream> {
        self.register(protocol, Some(filter))
    }

    fn register(
        &self,
        protocol: StreamProtocol,
        filter: Option<PeerFilter>,
    ) -> mpsc::Receiver<IncomingStream> {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        self.lock().insert(protocol, Acceptor { tx, filter });
        rx
    }

    /// Stops accepting a protocol.
    pub fn stop(&self, protocol: &StreamProtocol) {
        self.lock().remove(protocol);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbound> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The protocols currently offered to `peer` (dropping registrations whose receiver is gone).
    fn protocols(&self, peer: &PeerId) -> Vec<StreamProtocol> {
        let mut map = self.lock();
        map.retain(|_, a| !a.tx.is_closed());
        map.iter()
            .filter(|(_, a)| a.filter.as_ref().is_none_or(|f| f(peer)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn deliver(&self, incoming: IncomingStream) {
        let tx = self.lock().get(&incoming.protocol).map(|a| a.tx.clone());
        match tx {
            Some(tx) => {
                if let Err(e) = tx.try_send(incoming) {
                    tracing::warn!(error = %e, "inbound stream queue full or closed; stream dropped");
                }
            }
            None => tracing::debug!(protocol = %incoming.protocol, "no acceptor; stream dropped"),
        }
    }
}

/// A request to open a stream, answered with the stream and its path.
pub(crate) type OpenReply = oneshot::Sender<Result<(Stream, PathInfo), OpenStreamError>>;

#[derive(Debug)]
pub(crate) struct OpenRequest {
    pub(crate) protocol: StreamProtocol,
    pub(crate) reply: OpenReply,
}

/// The behaviour: tracks connections per peer and routes open requests to the best one.
pub(crate) struct Behaviour {
    control: StreamControl,
    connections: HashMap<PeerId, Vec<(ConnectionId, PathInfo)>>,
    waiting: HashMap<PeerId, Vec<OpenRequest>>,
    /// The dial started for the waiting requests of each peer: only its failure fails them, not
    /// that of some other dial (a DHT lookup's, say) that happens to be under way.
    dials: HashMap<PeerId, ConnectionId>,
    /// Relayed connections opened only to run hole punching again: new streams avoid them.
    spares: HashSet<ConnectionId>,
    pending: VecDeque<ToSwarm<(), OpenRequest>>,
}

impl Behaviour {
    /// A new behaviour sharing `control`'s protocol registrations.
    pub(crate) fn new(control: StreamControl) -> Self {
        Self {
            control,
            connections: HashMap::new(),
            waiting: HashMap::new(),
            dials: HashMap::new(),
            spares: HashSet::new(),
            pending: VecDeque::new(),
        }
    }

    /// Offers `addr` (our public address as a peer observed it) to hole punching: DCUtR takes its
    /// candidates only from these announcements, and identify stops making them once an address
    /// is confirmed as external, so a fresh observation (after a network change, say) would
    /// otherwise never reach it.
    pub(crate) fn announce_candidate(&mut self, addr: Multiaddr) {
        self.pending.push_back(ToSwarm::NewExternalAddrCandidate(addr));
    }

    /// Every connection to `peer`.
    pub(crate) fn paths(&self, peer: &PeerId) -> Vec<PathInfo> {
        self.connections
            .get(peer)
            .map(|v| v.iter().map(|(_, p)| p.clone()).collect())
            .unwrap_or_default()
    }

    /// The best-ranked connection, the newest among equals (after a network change the old one
    /// may be dead without knowing it yet), and a spare one only when there is nothing else.
    fn best(&self, peer: &PeerId) -> Option<&(ConnectionId, PathInfo)> {
        let conns = self.connections.get(peer)?;
        let best = |spares: bool| {
            conns
                .iter()
                .rev()
                .filter(|(id, _)| spares || !self.spares.contains(id))
                .min_by_key(|(_, p)| p.rank())
        };
        best(false).or_else(|| best(true))
    }

    /// Connection `id` (being dialled) is a spare: a fresh relayed connection that only gives
    /// hole punching another chance. Its relay hop may run over the relay's QUIC twin, which
    /// costs about twice the CPU per byte, so streams stay on the connection they had.
    pub(crate) fn spare(&mut self, id: ConnectionId) {
        self.spares.insert(id);
    }

    /// Opens a stream now if connected, else queues it until a connection exists. Returns
    /// whether the caller must dial the peer.
    pub(crate) fn open(&mut self, peer: PeerId, req: OpenRequest) -> bool {
        match self.best(&peer) {
            Some((id, _)) => {
                self.pending.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(*id),
                    event: req,
                });
                false
            }
            None => {
                self.waiting.entry(peer).or_default().push(req);
                true
            }
        }
    }

    /// Every connection, by peer.
    pub(crate) fn all_paths(&self) -> Vec<(PeerId, PathInfo)> {
        self.connections
            .iter()
            .flat_map(|(p, v)| v.iter().map(|(_, path)| (*p, path.clone())))
            .collect()
    }

    /// Whether a dial for the requests waiting on `peer` is under way.
    pub(crate) fn is_dialing(&self, peer: &PeerId) -> bool {
        self.dials.contains_key(peer)
    }

    /// Records the dial made for the requests waiting on `peer`.
    pub(crate) fn dialing(&mut self, peer: PeerId, id: ConnectionId) {
        self.dials.insert(peer, id);
    }

    /// Fails every request waiting for a connection to `peer`.
    pub(crate) fn fail_waiting(&mut self, peer: &PeerId, error: &str) {
        self.dials.remove(peer);
        // libp2p lists every failed address on its own line; keep the error on one line.
        let error = error
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        for req in self.waiting.remove(peer).unwrap_or_default() {
            let _ = req.reply.send(Err(OpenStreamError::NotConnected(error.clone())));
        }
    }

    fn new_handler(&mut self, peer: PeerId, id: ConnectionId, path: PathInfo) -> Handler {
        self.connections.entry(peer).or_default().push((id, path.clone()));
        Handler::new(peer, path, self.control.clone())
    }

    fn flush_waiting(&mut self, peer: PeerId) {
        // Queued requests go out once the first connection is established; a direct one is
        // preferred when several complete at once, since `best` is consulted at that moment.
        if let Some(reqs) = self.waiting.remove(&peer) {
            for req in reqs {
                self.open(peer, req);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = ();

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, id, PathInfo::of(Some(local_addr), remote_addr)))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, id, PathInfo::of(None, addr)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.dials.remove(&e.peer_id);
                self.flush_waiting(e.peer_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                self.spares.remove(&e.connection_id);
                if let Some(conns) = self.connections.get_mut(&e.peer_id) {
                    conns.retain(|(id, _)| *id != e.connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&e.peer_id);
                    }
                }
            }
            FromSwarm::DialFailure(e) => {
                self.spares.remove(&e.connection_id);
                // Only the failure of the dial made for the waiting requests fails them.
                if let Some(peer) = e.peer_id
                    && self.dials.get(&peer) == Some(&e.connection_id)
                    && !self.connections.contains_key(&peer)
                {
                    self.fail_waiting(&peer, &e.error.to_string());
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        _: THandlerOutEvent<Self>,
    ) {
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(addr: &str) -> PathInfo {
        PathInfo::of(None, &addr.parse().expect("multiaddr"))
    }

    #[test]
    fn spare_connections_carry_streams_only_when_nothing_else_is_left() {
        let relayed = "/ip4/198.18.0.1/tcp/7777/p2p-circuit";
        let mut b = Behaviour::new(StreamControl::default());
        let peer = PeerId::random();
        let (first, spare) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        b.new_handler(peer, first, path(relayed));
        b.spare(spare);
        b.new_handler(peer, spare, path(relayed));
        let best = |b: &Behaviour| b.best(&peer).map(|(id, _)| *id);
        assert_eq!(best(&b), Some(first), "the spare is newer, but streams stay");
        b.spares.clear();
        assert_eq!(best(&b), Some(spare), "among equals, the newest");
        b.spare(spare);
        let direct = ConnectionId::new_unchecked(3);
        b.new_handler(peer, direct, path("/ip4/198.18.0.12/tcp/4001"));
        assert_eq!(best(&b), Some(direct), "a direct connection beats both");
        b.connections.insert(peer, vec![(spare, path(relayed))]);
        assert_eq!(best(&b), Some(spare), "the spare, when it is all there is");
    }
}
