//! The tunnel: how one proxied connection travels between two peers, above the node.
//!
//! A connection to a peer's service goes one of five ways, the fastest that works:
//! - a bulk connection ([`bulk`]) over a fresh TCP connection to the peer's direct address;
//! - a bulk connection over a TCP connection punched for it through both NATs ([`punch`]);
//! - a bulk connection over two TCP legs a relay joins ([`legs`]);
//! - a bulk connection over a circuit of its own through a relay;
//! - a yamux stream on the node's connection to the peer (always possible; the others are
//!   probed first and used once known to work).
//!
//! [`Tunnel::spawn`] starts the node ([`crate::node`]) with the bulk path's and relay legs'
//! protocols registered for hand-off at its listeners (`crate::transport::Handoffs`), and the
//! tasks that take them: bulk admission and the acceptor, the relay legs (on a relay), the legs
//! and punch answerers. The [`Tunnel`] handle opens connections ([`Tunnel::connect`]) and
//! delivers inbound ones, whichever way they came, as one kind ([`Tunnel::accept`], [`Inbound`]).
//! It keeps what the node does not: probes of each route, client slots, the relayed budget and
//! the revocation table. Nothing below this layer refers to it.

pub mod bulk;
mod inbound;
pub mod legs;
pub mod punch;
mod resume;

pub use inbound::{Accepted, Inbound};

use std::sync::Arc;

use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::node::{Node, NodeConfig, NodeError, NodeEvent};
use crate::streams::{PathInfo, PeerFilter};
use crate::transport::tls::AlpnConfig;
use crate::transport::{BoxedIo, Handoffs};

/// The tunnel's own state, shared by its handles.
struct Shared {
    /// Whether the bulk path is on.
    bulk: bool,
    /// The bulk path's TLS.
    tls: AlpnConfig,
    /// Services offered on the bulk path.
    registry: bulk::Registry,
    /// What is known of each route to each peer.
    probes: bulk::Probes,
    /// Bulk connections this node has open as a client.
    slots: Arc<Semaphore>,
    /// Relayed bulk connections and circuits.
    budget: bulk::CircuitBudget,
    /// Every bulk connection, by peer, to cut when its access is revoked.
    revocations: bulk::Revocations,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// A handle to a running node and its tunnel.
#[derive(Clone)]
pub struct Tunnel {
    node: Node,
    shared: Arc<Shared>,
}

impl Tunnel {
    /// Starts a node with its tunnel: the node (see [`Node::spawn`]) and, when `config` turns
    /// the bulk path on, everything that serves it; on a relay with legs, the legs. The
    /// returned receiver sees every node event from the start.
    pub fn spawn(
        config: NodeConfig,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(Self, broadcast::Receiver<NodeEvent>), NodeError> {
        let (metrics, access) = (config.metrics.clone(), config.access.clone());
        let bulk_on = config.enable_bulk;
        let max_per_ip = config.max_inbound_per_ip.unwrap_or(bulk::MAX_PER_IP);
        let legs = config.relay_server.clone().filter(|l| l.legs).map(|limits| {
            legs::Legs::new(limits, metrics.clone(), tracker.clone(), cancel.clone())
        });
        // Inbound connections that ask for the bulk path, or on a relay for a leg, go to them
        // instead of the swarm.
        let mut handoffs = Handoffs::default();
        let bulk_in = bulk_on.then(|| handoffs.register(bulk::PROTOCOL, true, bulk::QUEUE));
        let legs_in = legs.as_ref().map(|_| handoffs.register(legs::SECURITY, false, legs::QUEUE));
        let (node, events) = Node::spawn_with(config, handoffs, cancel.clone(), tracker)?;
        let shared = Arc::new(Shared {
            bulk: bulk_on,
            tls: node.tls().for_alpn(bulk::ALPN),
            registry: bulk::Registry::default(),
            probes: bulk::Probes::default(),
            slots: Arc::new(Semaphore::new(bulk::MAX_CLIENT_BULK)),
            budget: bulk::CircuitBudget::default(),
            revocations: bulk::Revocations::default(),
            tracker: tracker.clone(),
            cancel: cancel.clone(),
        });
        let tunnel = Self { node, shared };
        if let (Some(legs), Some(rx)) = (legs, legs_in) {
            legs.take_handoffs(rx);
            legs::serve(tunnel.node.clone(), legs, access.clone());
        }
        if let Some(rx) = bulk_in {
            let s = &tunnel.shared;
            let (admitted, queue) = tokio::sync::mpsc::channel(bulk::QUEUE);
            let admission =
                bulk::Admission::new(s.tls.clone(), admitted, access.clone(), metrics, max_per_ip);
            bulk::spawn_admission(rx, admission.clone(), cancel.clone(), tracker);
            let (registry, revocations) = (s.registry.clone(), s.revocations.clone());
            let metrics = tunnel.node.metrics().clone();
            let acceptor =
                bulk::Acceptor { registry, revocations, access: access.clone(), metrics };
            acceptor.spawn(queue, cancel.clone(), tracker);
            let node = &tunnel.node;
            legs::spawn_answerer(node, admission.clone(), access.clone(), tracker, cancel.clone());
            punch::spawn_answerer(node, admission, access, tracker, cancel.clone());
            tunnel.forget_probes_on_network_change();
        }
        Ok((tunnel, events))
    }

    /// The node under the tunnel.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A connection to `service` on `peer`: on the bulk path when the peer offers it along a
    /// route already probed, else as a yamux stream (connecting first if needed). `service` is
    /// a valid service name ([`crate::service::protocol_for`]).
    pub async fn connect(
        &self,
        peer: PeerId,
        service: &str,
        protocol: StreamProtocol,
    ) -> Result<(BoxedIo, PathInfo), NodeError> {
        let miss = match self.open_bulk(peer, Some(service)).await {
            Ok(found) => return Ok(found),
            Err(miss) => miss,
        };
        let (stream, path) = self.node.open_stream(peer, protocol).await?;
        if miss == bulk::Miss::NotConnected {
            // Connected just now: probe the bulk path for the next connection.
            let _ = self.open_bulk(peer, None).await;
        }
        Ok((Box::new(stream), path))
    }

    /// Takes the connections to `service` (its stream `protocol`) of the peers `filter`
    /// approves, whichever way they come, until the returned [`Accepted`] is dropped or
    /// [`Tunnel::stop_accepting`] is called.
    pub fn accept(&self, service: &str, protocol: StreamProtocol, filter: PeerFilter) -> Accepted {
        let streams = self.node.accept_from(protocol, filter.clone());
        let (queue, bulk) = tokio::sync::mpsc::channel(crate::streams::INBOUND_QUEUE);
        let offered = self.shared.registry.insert(service, filter, queue);
        Accepted::new(streams, bulk, self.shared.registry.clone(), offered)
    }

    /// Stops taking connections to `service` (its stream `protocol`).
    pub fn stop_accepting(&self, service: &str, protocol: &StreamProtocol) {
        self.shared.registry.remove(service);
        self.node.stop_accepting(protocol);
    }

    /// Closes every connection to `peer` (after its authorization was revoked), bulk
    /// connections included.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NodeError> {
        self.shared.revocations.revoke(&peer);
        self.node.disconnect(peer).await
    }

    /// How many peers have bulk connections open, either way: each is tracked while it does, so
    /// that [`Tunnel::disconnect`] can end them.
    pub fn bulk_peers(&self) -> usize {
        self.shared.revocations.peers()
    }

    /// A bulk connection to `service` on `peer` if a direct TCP connection exists, or only
    /// relayed ones (relay legs or a circuit of its own then), and the peer offers the bulk
    /// path; otherwise whether the peer was connected at all ([`bulk::Miss`]). With no
    /// `service`, only probes the routes not probed yet.
    async fn open_bulk(
        &self,
        peer: PeerId,
        service: Option<&str>,
    ) -> Result<(BoxedIo, PathInfo), bulk::Miss> {
        let s = &self.shared;
        if !s.bulk {
            return Err(bulk::Miss::Unavailable);
        }
        let paths = self.node.paths(peer).await.map_err(|_| bulk::Miss::Unavailable)?;
        if paths.is_empty() {
            return Err(bulk::Miss::NotConnected);
        }
        let client = bulk::Client {
            node: &self.node,
            tls: &s.tls,
            slots: &s.slots,
            budget: &s.budget,
            probes: &s.probes,
            revocations: &s.revocations,
            tracker: &s.tracker,
            cancel: &s.cancel,
        };
        bulk::try_connect(client, peer, &paths, service).await.ok_or(bulk::Miss::Unavailable)
    }

    /// Forgets every probed route when the machine's addresses change: they may all lead
    /// elsewhere now.
    fn forget_probes_on_network_change(&self) {
        let mut events = self.node.subscribe();
        let (probes, cancel) = (self.shared.probes.clone(), self.shared.cancel.clone());
        self.shared.tracker.spawn(async move {
            loop {
                let event = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    e = events.recv() => e,
                };
                match event {
                    Ok(NodeEvent::NetworkChanged(_))
                    | Err(broadcast::error::RecvError::Lagged(_)) => probes.clear(),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
}
