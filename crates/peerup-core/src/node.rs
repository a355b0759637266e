//! The libp2p node: one task owns the swarm; the cloneable [`Node`] handle talks to it through a
//! bounded command channel with oneshot replies, and publishes [`NodeEvent`]s.
//!
//! - `config`: what a node is built from ([`NodeConfig`]); `event`: what it reports ([`NodeEvent`]).
//! - [`behaviour`]: the composed protocols and the transport stack.
//! - [`event_loop`]: the actor that owns the swarm.
//! - [`peers`]: what is known of each connected peer.
//! - [`reservations`]: keeping a reservation on every relay, with backoff.

mod behaviour;
mod config;
mod event;
mod event_loop;
mod peers;
mod repunch;
mod reservations;

use std::time::Duration;

pub use config::{NodeConfig, RESOURCE_LIMITS, ResourceLimits};
pub use event::{NodeEvent, RelayChange};
pub use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
pub use peers::{ConnectionState, PeerState};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::streams::{IncomingStream, OpenStreamError, PathInfo, StreamControl};
use crate::transport::Handoffs;

/// Commands waiting for the swarm task.
const COMMAND_QUEUE: usize = 64;
/// Address changes waiting for the swarm task.
const NETWORK_QUEUE: usize = 8;
/// Events kept for slow subscribers before they start missing some.
const EVENT_QUEUE: usize = 256;
/// How long opening a stream may take, dialing included.
pub const OPEN_STREAM_TIMEOUT: Duration = Duration::from_secs(45);
/// Attempts to open a stream when the connection under it dies. Three, because a peer's
/// connections often die together (a crashed peer: its TCP and QUIC ones closed in the same
/// check), and the second attempt may land on one that is closing too.
const OPEN_STREAM_ATTEMPTS: u32 = 3;
/// The pause before such an attempt.
const OPEN_STREAM_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport stack could not be built.
    #[error("cannot build the network stack: {0}")]
    Transport(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// A stream could not be opened.
    #[error(transparent)]
    OpenStream(#[from] OpenStreamError),
    /// The connection closed before the stream was opened.
    #[error(
        "the peer closed the connection before the stream opened (has it authorized this peer ID?)"
    )]
    ConnectionClosed,
    /// Dialling an address failed.
    #[error("cannot connect to {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Timed out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

pub(crate) enum Command {
    OpenStream {
        peer: PeerId,
        protocol: StreamProtocol,
        reply: oneshot::Sender<Result<(Stream, PathInfo), OpenStreamError>>,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Paths {
        peer: PeerId,
        reply: oneshot::Sender<Vec<PathInfo>>,
    },
    Disconnect {
        peer: PeerId,
    },
    Connected {
        reply: oneshot::Sender<Vec<(PeerId, PathInfo)>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerState>>,
    },
    ExternalAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, String>>,
    },
    SetRelays {
        relays: Vec<Multiaddr>,
        reply: oneshot::Sender<RelayChange>,
    },
    HoldsReservation {
        relay: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Providers {
        key: libp2p::kad::RecordKey,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// A handle to a running node.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    relaying: bool,
    /// The swarm's TLS configuration (its certificate serves the layers above too).
    tls: crate::transport::tls::Config,
    /// The relay client's transport, for bare circuits.
    circuits: crate::transport::circuits::Circuits,
    metrics: crate::metrics::Metrics,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NodeEvent>,
    streams: StreamControl,
}

impl Node {
    /// Starts a node: builds the swarm, starts listening, and spawns its task on `tracker`. The
    /// task ends when `cancel` fires. The returned receiver sees every event from the start.
    /// (A node with the bulk path and relay legs is started by [`crate::tunnel::Tunnel::spawn`].)
    pub fn spawn(
        config: NodeConfig,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(Self, broadcast::Receiver<NodeEvent>), NodeError> {
        Self::spawn_with(config, Handoffs::default(), cancel, tracker)
    }

    /// The same, with listeners that hand the protocols in `handoffs` to their queues.
    pub(crate) fn spawn_with(
        config: NodeConfig,
        handoffs: Handoffs,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(Self, broadcast::Receiver<NodeEvent>), NodeError> {
        let streams = StreamControl::default();
        let (events, first) = broadcast::channel(EVENT_QUEUE);
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let peer_id = config.keypair.public().to_peer_id();
        let metrics = config.metrics.clone();
        let relaying = config.relay_server.is_some();
        let tls = crate::transport::tls::Config::new(&config.keypair)
            .map_err(|e| NodeError::Transport(e.to_string()))?;
        let network = config.watch_network.then(|| {
            let (tx, rx) = mpsc::channel(NETWORK_QUEUE);
            crate::netwatch::spawn(tx, cancel.clone(), tracker);
            rx
        });
        let (relay_transport, relay_client) = libp2p::relay::client::new(peer_id);
        let circuits = crate::transport::circuits::Circuits::new(relay_transport);
        let parts = behaviour::Parts {
            control: streams.clone(),
            transport: crate::transport::Parts {
                tls: tls.clone(),
                sockets: crate::transport::tcp::Sockets::default(),
                circuits: circuits.clone(),
                handoffs,
            },
            relay_client,
        };
        let actor = event_loop::EventLoop::new(config, rx, events.clone(), parts, network)?;
        tracker.spawn(actor.run(cancel));
        let node =
            Self { peer_id, relaying, tls, circuits, metrics, commands: tx, events, streams };
        Ok((node, first))
    }

    /// This node's peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Whether the node runs a circuit relay server for others.
    pub fn is_relaying(&self) -> bool {
        self.relaying
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Subscribes to node events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Accepts inbound streams of `protocol` (see [`StreamControl::accept`]).
    pub fn accept(&self, protocol: StreamProtocol) -> mpsc::Receiver<IncomingStream> {
        self.streams.accept(protocol)
    }

    /// Accepts inbound streams of `protocol` only from peers `filter` approves (see
    /// [`StreamControl::accept_from`]).
    pub fn accept_from(
        &self,
        protocol: StreamProtocol,
        filter: crate::streams::PeerFilter,
    ) -> mpsc::Receiver<IncomingStream> {
        self.streams.accept_from(protocol, filter)
    }

    /// Stops accepting `protocol`.
    pub fn stop_accepting(&self, protocol: &StreamProtocol) {
        self.streams.stop(protocol)
    }

    /// The swarm's TLS configuration.
    pub(crate) fn tls(&self) -> &crate::transport::tls::Config {
        &self.tls
    }

    /// The relay client's transport, to dial bare circuits through.
    pub(crate) fn circuits(&self) -> &crate::transport::circuits::Circuits {
        &self.circuits
    }

    /// Opens a stream to `peer`, connecting first if needed (through every relay and any known
    /// direct address at once). Uses a direct connection whenever one exists.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<(Stream, PathInfo), NodeError> {
        let deadline = tokio::time::Instant::now() + OPEN_STREAM_TIMEOUT;
        let mut attempts = 0;
        let mut first_error = None;
        loop {
            attempts += 1;
            let (reply, rx) = oneshot::channel();
            self.send(Command::OpenStream { peer, protocol: protocol.clone(), reply }).await?;
            let result = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(result)) => result.map_err(NodeError::from),
                // The connection (and its handler, which held the reply) went away.
                Ok(Err(_)) => Err(NodeError::ConnectionClosed),
                Err(_) => return Err(NodeError::Timeout(OPEN_STREAM_TIMEOUT)),
            };
            match result {
                // A connection that died under the request (closed after its pings went
                // unanswered, typically because an address changed): once more, on a new one.
                Err(
                    e @ (NodeError::ConnectionClosed
                    | NodeError::OpenStream(OpenStreamError::Io(_))),
                ) if attempts < OPEN_STREAM_ATTEMPTS => {
                    tracing::debug!(%peer, error = %e, "stream open failed on a dying connection; trying again");
                    first_error.get_or_insert(e);
                    // Connections closed in the same check (a crashed peer's TCP and QUIC ones)
                    // go one event at a time: let them go before the next attempt picks one.
                    tokio::time::sleep(OPEN_STREAM_RETRY_PAUSE).await;
                }
                // If the retry fails too, the first failure says more (a peer that refuses us
                // closes the connection; the retry then finds no way to reach it at all).
                Err(e) => return Err(first_error.unwrap_or(e)),
                Ok(found) => return Ok(found),
            }
        }
    }

    /// Teaches the node addresses of a peer.
    pub async fn add_addresses(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), NodeError> {
        self.send(Command::AddAddresses { peer, addrs }).await
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenAddrs { reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// The current connections to a peer.
    pub async fn paths(&self, peer: PeerId) -> Result<Vec<PathInfo>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Paths { peer, reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// Closes every connection to `peer` (after its authorization was revoked; the tunnel's
    /// bulk connections are closed by [`crate::tunnel::Tunnel::disconnect`]).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NodeError> {
        self.send(Command::Disconnect { peer }).await
    }

    /// Every open connection, by peer.
    pub async fn connections(&self) -> Result<Vec<(PeerId, PathInfo)>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connected { reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// Every connected peer: agent, connections (with when they opened and what the peer
    /// observed for us), last ping RTT.
    pub async fn peers(&self) -> Result<Vec<PeerState>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Peers { reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// The addresses the node believes others can reach it on.
    pub async fn external_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ExternalAddrs { reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// Connects to an address whose peer ID is not known yet (a relay from an invite code) and
    /// returns the peer ID the handshake proved.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { addr: addr.clone(), reply }).await?;
        match tokio::time::timeout(OPEN_STREAM_TIMEOUT, rx).await {
            Ok(Ok(Ok(peer))) => Ok(peer),
            Ok(Ok(Err(reason))) => Err(NodeError::Dial { addr, reason }),
            Ok(Err(_)) => Err(NodeError::Closed),
            Err(_) => Err(NodeError::Timeout(OPEN_STREAM_TIMEOUT)),
        }
    }

    /// Replaces the relays the node uses (each address with `/p2p/<id>`), at run time: removed
    /// relays lose their reservation and connections, new ones are dialled and reserved on like at
    /// start. A relay whose address changed counts as removed and added. The caller lets new relays
    /// through its access list (see [`crate::gate::AccessList::allow_always`]), as [`Node::spawn`]
    /// does for the configured ones.
    pub async fn set_relays(&self, relays: Vec<Multiaddr>) -> Result<RelayChange, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetRelays { relays, reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// Whether the node holds a reservation on `relay` now (one of its configured relays).
    pub(crate) async fn holds_reservation(&self, relay: PeerId) -> Result<bool, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::HoldsReservation { relay, reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// The peers that announce the rendezvous string `rendezvous` in the DHT (see
    /// [`NodeConfig::rendezvous`]); none without a DHT.
    pub async fn providers(&self, rendezvous: &str) -> Result<Vec<PeerId>, NodeError> {
        let (reply, rx) = oneshot::channel();
        let key = event_loop::rendezvous_key(rendezvous);
        self.send(Command::Providers { key, reply }).await?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    async fn send(&self, cmd: Command) -> Result<(), NodeError> {
        self.commands.send(cmd).await.map_err(|_| NodeError::Closed)
    }
}
