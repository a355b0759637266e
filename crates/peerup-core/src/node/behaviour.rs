//! The composed libp2p behaviour of a peerup node, and building the swarm around it.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, StreamProtocol, Swarm, autonat, connection_limits, dcutr, identify, kad, ping, relay,
    upnp,
};

use super::{NodeConfig, NodeError};
use crate::gate::Gate;
use crate::{protocols, streams};

/// How often every connection is pinged: its RTT, and whether it still works (a connection whose
/// pings go unanswered for a while is closed: `node/event_loop/network.rs`).
const PING_EVERY: Duration = Duration::from_secs(2);
/// A ping unanswered for this long has failed.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Every protocol a node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) gate: Gate,
    pub(crate) limits: Toggle<connection_limits::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(crate) upnp: Toggle<upnp::tokio::Behaviour>,
    pub(crate) streams: streams::Behaviour,
}

/// What the swarm is built around, besides the config.
pub(crate) struct Parts {
    pub(crate) control: streams::StreamControl,
    /// The transports' parts (`crate::transport::stack`).
    pub(crate) transport: crate::transport::Parts,
    /// The relay client's behaviour (its transport is in `transport`).
    pub(crate) relay_client: relay::client::Behaviour,
}

/// Builds the swarm: the transports of `crate::transport::stack` and the behaviour above.
pub(crate) fn build_swarm(
    config: &NodeConfig,
    parts: Parts,
) -> Result<Swarm<Behaviour>, NodeError> {
    let Parts { control, transport, relay_client } = parts;
    let transport = crate::transport::stack(&config.keypair, transport)
        .map_err(|e| NodeError::Transport(e.to_string()))?;
    // A relay server counts what its connections carry (`peerup_relay_bytes_total`).
    let transport = match &config.relay_server {
        Some(_) => crate::transport::counted::counted(transport, config.metrics.relay_bytes()),
        None => transport,
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            Behaviour {
                gate: {
                    let gate = Gate::new(
                        config.access.clone(),
                        config.max_inbound_per_ip,
                        config.probation.clone(),
                        config.metrics.clone(),
                    );
                    if config.gate_outbound { gate.gate_outbound() } else { gate }
                },
                limits: Toggle::from(config.resource_limits.then(|| {
                    let l = super::config::RESOURCE_LIMITS;
                    connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_pending_incoming(Some(l.max_pending_incoming))
                            .with_max_established_incoming(Some(l.max_established_incoming))
                            .with_max_established(Some(l.max_established_total))
                            .with_max_established_per_peer(Some(l.max_established_per_peer)),
                    )
                })),
                relay_client,
                relay_server: Toggle::from(config.relay_server.as_ref().map(|limits| {
                    relay::Behaviour::new(peer_id, limits.to_libp2p(&config.access))
                })),
                identify: identify::Behaviour::new(
                    identify::Config::new(protocols::IDENTIFY.into(), key.public())
                        .with_agent_version(config.agent.clone()),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(PING_EVERY).with_timeout(PING_TIMEOUT),
                ),
                autonat: autonat::Behaviour::new(
                    peer_id,
                    autonat::Config { only_global_ips: false, ..Default::default() },
                ),
                dcutr: dcutr::Behaviour::new(peer_id),
                kad: Toggle::from(
                    config.enable_dht.then(|| new_kad(peer_id, config.network.as_deref())),
                ),
                upnp: Toggle::from(config.enable_upnp.then(upnp::tokio::Behaviour::default)),
                streams: streams::Behaviour::new(control.clone()),
            }
        })
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_timeout)
                // A proxy may open a thousand connections at once, each a stream.
                .with_max_negotiating_inbound_streams(crate::transport::mux::MAX_STREAMS)
        })
        .build();
    Ok(swarm)
}

fn new_kad(peer_id: PeerId, network: Option<&str>) -> kad::Behaviour<kad::store::MemoryStore> {
    // The protocol name is built from a validated DNS label, so it always starts with '/'.
    let protocol = StreamProtocol::try_from_owned(protocols::kad(network))
        .unwrap_or(StreamProtocol::new(protocols::KAD));
    let config = kad::Config::new(protocol);
    kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), config)
}
