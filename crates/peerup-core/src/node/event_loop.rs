//! The actor that owns the swarm: it runs commands from [`super::Node`] handles, drives the swarm,
//! keeps relay reservations, and publishes [`NodeEvent`]s.
//!
//! - [`dialing`]: dialing peers through the relays and directly.
//! - [`protocols`]: what the protocols (identify, DCUtR, relay client, ping) report.
//! - [`network`]: reacting to address changes and dead connections.
//! - [`relays`]: relays added and removed at run time.

mod dialing;
mod network;
mod protocols;
mod relays;
mod rendezvous;

pub(super) use rendezvous::rendezvous_key;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionError, ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, kad};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent, Parts, build_swarm};
use super::peers::PeerBook;
use super::repunch::Repunch;
use super::reservations::Reservations;
use super::{Command, NodeConfig, NodeError, NodeEvent};
use crate::relay_addr::{self, quic_twin};
use crate::streams::{OpenRequest, PathInfo, is_relayed};

/// How often due reservation retries and deferred dials are checked.
const RETRY_TICK: Duration = Duration::from_millis(250);
/// How long a dial waits for a relay to be connected and identified before going ahead anyway.
const RELAY_READY_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<NodeEvent>,
    relays: Vec<Multiaddr>,
    reservations: Option<Reservations>,
    listen_addrs_are_external: bool,
    /// Confirm no direct address as ours (`NodeConfig::force_private`).
    force_private: bool,
    /// DHT bootstrap peers dialled with the relays.
    bootstrap: Vec<Multiaddr>,
    /// The rendezvous record's key, announced every minute, and when next.
    rendezvous: Option<kad::RecordKey>,
    next_advertise: Instant,
    provider_queries: HashMap<kad::QueryId, rendezvous::ProviderQuery>,
    relay_ids: HashSet<PeerId>,
    /// Relays connected and identified: circuits through them can carry hole punching.
    ready_relays: HashSet<PeerId>,
    /// Direct connections to relays not identified yet, with when they opened: one the relay
    /// closes before identifying itself was refused (see `relays::on_relay_closed`).
    unidentified_relay_conns: HashMap<ConnectionId, Instant>,
    /// Relays that refused us: said once (TCP and its QUIC twin, every retry), until one lets
    /// us in again.
    refused_by: HashSet<PeerId>,
    /// Dials waiting for a ready relay, with the time they go ahead regardless.
    deferred: Vec<(PeerId, Instant)>,
    /// Peers we tried to add a direct TCP connection to, beside a direct QUIC one.
    tcp_tried: HashSet<PeerId>,
    /// Connected peers: agents, connection times, observed addresses, RTTs.
    book: PeerBook,
    metrics: crate::metrics::Metrics,
    /// Dials to bare addresses, answered with the peer ID once connected.
    addr_dials: HashMap<ConnectionId, tokio::sync::oneshot::Sender<Result<PeerId, String>>>,
    /// Our public QUIC addresses as peers observed them, offered to hole punching and waiting to
    /// be confirmed as external.
    announced: HashSet<Multiaddr>,
    /// Until when our QUIC observations are offered to hole punching (after an address change;
    /// see `network::on_network_change`). Otherwise they are only confirmed as external, and
    /// hole punching uses TCP, whose direct connections take the faster bulk path.
    offer_quic_until: Option<Instant>,
    /// External addresses from the config (the others were observed by peers).
    configured_external: Vec<Multiaddr>,
    /// Changes of the machine's addresses, when watched.
    network: Option<mpsc::Receiver<crate::netwatch::AddressChange>>,
    /// Peers one of whose direct connections broke: until when their other direct connections
    /// (those open at the break) are held to the shorter silence limit, and when it broke (see
    /// `network::on_broken`).
    suspect: HashMap<PeerId, (Instant, Instant)>,
    /// The swarm's TCP sockets: those of silent connections are reset, not closed.
    sockets: crate::transport::tcp::Sockets,
    /// Peers reached only through relays, to hole-punch again (see `repunch`).
    repunch: Repunch,
}

/// The path of a connection, from its endpoint.
fn path_of(endpoint: &libp2p::core::ConnectedPoint) -> PathInfo {
    match endpoint {
        libp2p::core::ConnectedPoint::Listener { local_addr, send_back_addr } => {
            PathInfo::of(Some(local_addr), send_back_addr)
        }
        libp2p::core::ConnectedPoint::Dialer { address, .. } => PathInfo::of(None, address),
    }
}

/// The next address change; pending forever when addresses are not watched.
async fn next_change(
    network: &mut Option<mpsc::Receiver<crate::netwatch::AddressChange>>,
) -> Option<crate::netwatch::AddressChange> {
    match network {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

impl EventLoop {
    pub(crate) fn new(
        config: NodeConfig,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<NodeEvent>,
        parts: Parts,
        network: Option<mpsc::Receiver<crate::netwatch::AddressChange>>,
    ) -> Result<Self, NodeError> {
        let sockets = parts.transport.sockets.clone();
        let mut swarm = build_swarm(&config, parts)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        }
        for addr in config.external_addrs.iter().filter(|_| !config.force_private) {
            swarm.add_external_address(addr.clone());
        }
        if config.relay_server.is_some()
            && let Some(k) = swarm.behaviour_mut().kad.as_mut()
        {
            k.set_mode(Some(kad::Mode::Server));
        }
        for relay in &config.relays {
            if let Some(id) = relay_addr::peer_id_of(relay) {
                config.access.allow_always(id);
                if let Some(k) = swarm.behaviour_mut().kad.as_mut() {
                    k.add_address(&id, strip_p2p(relay));
                }
            }
        }
        for addr in &config.bootstrap {
            if let (Some(id), Some(k)) =
                (relay_addr::peer_id_of(addr), swarm.behaviour_mut().kad.as_mut())
            {
                k.add_address(&id, strip_p2p(addr));
            }
        }
        let reservations =
            config.reserve.then(|| Reservations::new(&config.relays, config.reservation_interval));
        let relay_ids = config.relays.iter().filter_map(relay_addr::peer_id_of).collect();
        let mut this = Self {
            relay_ids,
            ready_relays: HashSet::new(),
            unidentified_relay_conns: HashMap::new(),
            refused_by: HashSet::new(),
            deferred: Vec::new(),
            tcp_tried: HashSet::new(),
            book: PeerBook::default(),
            addr_dials: HashMap::new(),
            configured_external: config.external_addrs.clone(),
            announced: HashSet::new(),
            offer_quic_until: None,
            network,
            suspect: HashMap::new(),
            sockets,
            repunch: Repunch::default(),
            metrics: config.metrics.clone(),
            swarm,
            commands,
            events,
            relays: config.relays,
            reservations,
            listen_addrs_are_external: config.listen_addrs_are_external,
            force_private: config.force_private,
            bootstrap: config.bootstrap,
            rendezvous: config.rendezvous.as_deref().map(rendezvous_key),
            next_advertise: Instant::now(),
            provider_queries: HashMap::new(),
        };
        // Connect to relays right away (over TCP, then QUIC): reservations, DHT bootstrap and
        // learning our public address all start from here.
        this.dial_relays();
        Ok(this)
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(RETRY_TICK);
        // The node runs until cancelled, even when every handle is gone (a relay has no callers).
        let mut handles_gone = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                cmd = self.commands.recv(), if !handles_gone => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => handles_gone = true,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                change = next_change(&mut self.network) => match change {
                    Some(change) => self.on_network_change(change),
                    None => self.network = None,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        tracing::debug!("node task stopped");
    }

    fn emit(&self, event: NodeEvent) {
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::OpenStream { peer, protocol, reply } => {
                let must_dial =
                    self.swarm.behaviour_mut().streams.open(peer, OpenRequest { protocol, reply });
                if must_dial {
                    self.dial_when_ready(peer);
                }
            }
            Command::AddAddresses { peer, addrs } => {
                for a in addrs {
                    self.swarm.add_peer_address(peer, a);
                }
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Paths { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().streams.paths(&peer));
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.swarm.behaviour().streams.all_paths());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.book.snapshot());
            }
            Command::ExternalAddrs { reply } => {
                let _ = reply.send(self.swarm.external_addresses().cloned().collect());
            }
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.addr_dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::SetRelays { relays, reply } => {
                let _ = reply.send(self.set_relays(relays));
            }
            Command::HoldsReservation { relay, reply } => {
                let _ = reply.send(self.reservations.as_ref().is_some_and(|r| r.holds(&relay)));
            }
            Command::Providers { key, reply } => self.find_providers(key, reply),
        }
    }

    fn on_tick(&mut self) {
        self.close_silent();
        self.dial_deferred(false);
        self.punch_again();
        self.retry_reservations();
        self.advertise_rendezvous();
    }

    fn retry_reservations(&mut self) {
        let Some(res) = self.reservations.as_mut() else { return };
        for (relay, addr) in res.due(Instant::now()) {
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    tracing::debug!(%relay, %addr, "requesting reservation");
                    if let Some(res) = self.reservations.as_mut() {
                        res.listening(relay, id);
                    }
                }
                Err(e) => {
                    tracing::warn!(%relay, error = %e, "cannot listen through relay");
                    if let Some(res) = self.reservations.as_mut() {
                        res.failed(relay, Instant::now());
                    }
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = self.metrics.libp2p() {
            use libp2p::metrics::Recorder;
            m.record(&event);
            match &event {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => m.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => m.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => m.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => m.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => m.record(e),
                _ => {}
            }
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.listen_addrs_are_external && !self.force_private && !is_relayed(&address) {
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(NodeEvent::Listening(address));
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Some(relay) =
                    self.reservations.as_mut().and_then(|r| r.closed(listener_id, Instant::now()))
                {
                    let reason = match reason {
                        Ok(()) => "closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(%relay, ?reason, "relay reservation lost; will retry");
                    self.emit(NodeEvent::ReservationLost { relay, reason });
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let path = path_of(&endpoint);
                if let Some(reply) = self.addr_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if path.relayed && endpoint.is_listener() {
                    self.on_relayed_inbound(peer_id);
                }
                self.on_relay_connected(peer_id, connection_id, &endpoint);
                self.book.connected(peer_id, connection_id, path.clone());
                self.on_connected(peer_id, &endpoint, path.relayed);
                tracing::info!(peer = %peer_id, path = path.kind(), addr = %path.remote_addr, "connected");
                self.metrics.connection(path.relayed, true);
                self.emit(NodeEvent::Connected { peer: peer_id, path });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                cause,
                num_established,
                ..
            } => {
                self.book.closed(peer_id, connection_id);
                self.on_relay_closed(peer_id, connection_id);
                let path = path_of(&endpoint);
                let failed =
                    matches!(&cause, Some(ConnectionError::IO(e)) if !network::closed_by_peer(e));
                if num_established > 0 && failed {
                    self.on_broken(peer_id, path.relayed);
                }
                self.on_closed(peer_id, path.relayed);
                if num_established == 0 {
                    self.ready_relays.remove(&peer_id);
                    self.tcp_tried.remove(&peer_id);
                }
                // One that failed (rather than being closed by either side) ends its streams too:
                // worth a line at the default level.
                match &cause {
                    Some(ConnectionError::IO(e)) => {
                        tracing::info!(peer = %peer_id, path = path.kind(), addr = %path.remote_addr, error = %e, "connection failed");
                    }
                    _ => {
                        tracing::debug!(peer = %peer_id, path = path.kind(), cause = ?cause, "connection closed");
                    }
                }
                self.metrics.connection(path.relayed, false);
                self.emit(NodeEvent::Disconnected { peer: peer_id, path });
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, connection_id } => {
                if let Some(reply) = self.addr_dials.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string().replace('\n', " ")));
                }
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                self.on_relay_dial_failed(peer_id, &error);
            }
            SwarmEvent::NewExternalAddrCandidate { address } if self.announced.remove(&address) => {
                self.swarm.add_external_address(address);
            }
            // What a protocol confirmed (AutoNAT, UPnP) is taken back on a forced-private node.
            SwarmEvent::ExternalAddrConfirmed { address }
                if self.force_private && !is_relayed(&address) =>
            {
                tracing::debug!(%address, "not announced: force_private_reachability");
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }
}
