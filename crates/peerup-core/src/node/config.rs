//! What a node is built from.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;

use crate::gate::AccessList;
use crate::relay::RelayLimits;

/// Everything a node needs; built by the binary from its config file.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Relays, each with `/p2p/<id>`.
    pub relays: Vec<Multiaddr>,
    /// Hold a reservation on every relay so that peers can reach us (daemons do; clients don't).
    pub reserve: bool,
    /// DHT namespace.
    pub network: Option<String>,
    /// Who may connect in.
    pub access: AccessList,
    /// Identify agent version.
    pub agent: String,
    /// Ask the router for a port mapping.
    pub enable_upnp: bool,
    /// Run the private Kademlia DHT (bootstrapped from the relays); it finds peers' direct
    /// addresses. Default on.
    pub enable_dht: bool,
    /// Run a circuit relay server with these limits.
    pub relay_server: Option<RelayLimits>,
    /// Admit unknown peers on probation while pairing slots are open (relays).
    pub probation: Option<crate::gate::Probation>,
    /// Refuse outbound connections to peers `access` does not allow, like inbound ones (a relay
    /// server). Default off: a node dials DHT neighbours and relays it does not authorize.
    pub gate_outbound: bool,
    /// Cap inbound connections per source IP.
    pub max_inbound_per_ip: Option<usize>,
    /// Close connections without streams after this long.
    pub idle_timeout: Duration,
    /// Addresses to announce as ours (a relay's public addresses).
    pub external_addrs: Vec<Multiaddr>,
    /// Announce every listen address as external (a relay on a public host, or loopback tests).
    pub listen_addrs_are_external: bool,
    /// Where the node counts what it does.
    pub metrics: crate::metrics::Metrics,
    /// Offer and use the bulk path ([`crate::tunnel::bulk`]) on direct TCP connections. Default on.
    pub enable_bulk: bool,
    /// Watch the machine's addresses and reconnect when they change ([`crate::netwatch`]).
    /// Default on.
    pub watch_network: bool,
    /// The longest wait between attempts to get a lost relay reservation back (Go's
    /// `relay.reservation_interval`, its re-reserve period). Default 60 s.
    pub reservation_interval: Duration,
    /// Never confirm a direct address as ours, so that peers learn only relay addresses (Go's
    /// `network.force_private_reachability`, for nodes behind CGNAT). Observed addresses are
    /// still offered to hole punching. Default off.
    pub force_private: bool,
    /// DHT bootstrap peers besides the relays (`discovery.bootstrap_peers`): dialled at start and
    /// after address changes; once identified they join the DHT's routing table.
    pub bootstrap: Vec<Multiaddr>,
    /// Announce this rendezvous string in the DHT every minute, as Go peer-up's daemon does
    /// (`discovery.rendezvous`): a provider record under the SHA-256 multihash of the string,
    /// which [`super::Node::providers`] finds. Default none.
    pub rendezvous: Option<String>,
    /// Cap connections as Go's resource manager does (`network.resource_limits_enabled`): see
    /// [`RESOURCE_LIMITS`]. Default off.
    pub resource_limits: bool,
}

/// The connection caps of [`NodeConfig::resource_limits`]: inbound connections being set up, and
/// established ones in all and per peer. They bound what a flood of connections can take, far
/// above what a node with a few dozen peers uses (each peer holds a TCP and a QUIC connection to
/// it, and relays one more).
pub const RESOURCE_LIMITS: ResourceLimits = ResourceLimits {
    max_pending_incoming: 64,
    max_established_incoming: 512,
    max_established_total: 1024,
    max_established_per_peer: 8,
};

/// Connection caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Inbound connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Established inbound connections.
    pub max_established_incoming: u32,
    /// Established connections, both ways.
    pub max_established_total: u32,
    /// Established connections to one peer.
    pub max_established_per_peer: u32,
}

impl NodeConfig {
    /// A config with peerup's defaults for `keypair`.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            relays: Vec::new(),
            reserve: false,
            network: None,
            access: AccessList::open(),
            agent: format!("{}{}", crate::protocols::AGENT_PREFIX, env!("CARGO_PKG_VERSION")),
            enable_upnp: false,
            enable_dht: true,
            relay_server: None,
            max_inbound_per_ip: None,
            probation: None,
            gate_outbound: false,
            idle_timeout: Duration::from_secs(300),
            external_addrs: Vec::new(),
            listen_addrs_are_external: false,
            metrics: crate::metrics::Metrics::default(),
            enable_bulk: true,
            watch_network: true,
            reservation_interval: super::reservations::MAX_RETRY,
            force_private: false,
            bootstrap: Vec::new(),
            rendezvous: None,
            resource_limits: false,
        }
    }
}
