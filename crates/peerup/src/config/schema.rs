//! The node config file (`config.yaml` / `peerup.yaml`), mirrored 1:1 from the YAML.
//!
//! Keys, nesting and defaults match Go peer-up so its files load unchanged. Each field's doc gives its
//! default. Values stay as written (strings for addresses and durations); `validate` checks them and
//! names the key of anything wrong. Unknown keys are reported by `load` as warnings, not errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A key written with no value (`discovery:` followed only by comments) means its defaults, as in
/// Go peer-up.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The newest config `version` this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// The whole node config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Schema version. Default 1; newer versions are refused.
    pub version: u32,
    /// Where the node's key lives.
    #[serde(deserialize_with = "null_as_default")]
    pub identity: IdentitySection,
    /// Listening and reachability.
    #[serde(deserialize_with = "null_as_default")]
    pub network: NetworkSection,
    /// The relays this node keeps reservations on.
    #[serde(deserialize_with = "null_as_default")]
    pub relay: RelaySection,
    /// DHT and namespace settings.
    #[serde(deserialize_with = "null_as_default")]
    pub discovery: DiscoverySection,
    /// Who may connect.
    #[serde(deserialize_with = "null_as_default")]
    pub security: SecuritySection,
    /// Built-in protocols.
    #[serde(deserialize_with = "null_as_default")]
    pub protocols: ProtocolsSection,
    /// Local TCP services exposed to authorized peers, by name. Default: none.
    #[serde(deserialize_with = "null_as_default")]
    pub services: BTreeMap<String, ServiceEntry>,
    /// Friendly names for peer IDs. Default: none.
    #[serde(deserialize_with = "null_as_default")]
    pub names: BTreeMap<String, String>,
    /// Metrics and audit logging.
    #[serde(deserialize_with = "null_as_default")]
    pub telemetry: TelemetrySection,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            identity: IdentitySection::default(),
            network: NetworkSection::default(),
            relay: RelaySection::default(),
            discovery: DiscoverySection::default(),
            security: SecuritySection::default(),
            protocols: ProtocolsSection::default(),
            services: BTreeMap::new(),
            names: BTreeMap::new(),
            telemetry: TelemetrySection::default(),
        }
    }
}

/// `identity:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentitySection {
    /// Path of the key file, relative to the config's folder. Default `identity.key`.
    pub key_file: PathBuf,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self { key_file: "identity.key".into() }
    }
}

/// `network:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkSection {
    /// Multiaddrs to listen on. Default: TCP and QUIC on port 0, IPv4 and IPv6.
    pub listen_addresses: Vec<String>,
    /// Advertise only relay addresses (set on nodes behind CGNAT). Default false.
    pub force_private_reachability: bool,
    /// Enable the daemon's connection/stream resource limits. Default false.
    pub resource_limits_enabled: bool,
    /// Ask the home router for a port mapping (UPnP). Default false.
    pub enable_upnp: bool,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            listen_addresses: default_listen_addresses(),
            force_private_reachability: false,
            resource_limits_enabled: false,
            enable_upnp: false,
        }
    }
}

/// The default listen addresses, as the template writes them.
pub fn default_listen_addresses() -> Vec<String> {
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1", "/ip6/::/tcp/0", "/ip6/::/udp/0/quic-v1"]
        .map(String::from)
        .to_vec()
}

/// `relay:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelaySection {
    /// Relay multiaddrs, each ending in `/p2p/<relay peer ID>`. Default: none (at least one needed).
    pub addresses: Vec<String>,
    /// How often reservations are refreshed, as a duration (`2m`). Default `2m`.
    pub reservation_interval: String,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self { addresses: Vec::new(), reservation_interval: "2m".into() }
    }
}

/// `discovery:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoverySection {
    /// DHT rendezvous string. Default `peerup-default-network`.
    pub rendezvous: String,
    /// Private network namespace (a DNS label). Default: none, the global network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// DHT bootstrap multiaddrs. Default: none, meaning the relays.
    pub bootstrap_peers: Vec<String>,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        Self {
            rendezvous: "peerup-default-network".into(),
            network: None,
            bootstrap_peers: Vec::new(),
        }
    }
}

/// `security:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecuritySection {
    /// The allowlist file, relative to the config's folder. Default `authorized_keys`.
    pub authorized_keys_file: PathBuf,
    /// Refuse inbound peers that are not in the allowlist. Default true.
    pub enable_connection_gating: bool,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self { authorized_keys_file: "authorized_keys".into(), enable_connection_gating: true }
    }
}

/// `protocols:`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProtocolsSection {
    /// The ping-pong responder.
    #[serde(deserialize_with = "null_as_default")]
    pub ping_pong: PingPongSection,
}

/// `protocols.ping_pong:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PingPongSection {
    /// Answer pings. Default true.
    pub enabled: bool,
    /// Protocol ID. Default `/pingpong/1.0.0`.
    pub id: String,
}

impl Default for PingPongSection {
    fn default() -> Self {
        Self { enabled: true, id: peerup_core::protocols::DEFAULT_PING_PONG.into() }
    }
}

/// `services.<name>:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceEntry {
    /// Expose it. Default true.
    pub enabled: bool,
    /// The local TCP address to forward to, `host:port`. Required.
    pub local_address: String,
    /// Kept for compatibility with Go peer-up files; the protocol is always `/peerup/<name>/1.0.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Peer IDs allowed to use this service. Default: every authorized peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_peers: Option<Vec<String>>,
}

impl Default for ServiceEntry {
    fn default() -> Self {
        Self { enabled: true, local_address: String::new(), protocol: None, allowed_peers: None }
    }
}

/// `telemetry:`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetrySection {
    /// Prometheus metrics.
    #[serde(deserialize_with = "null_as_default")]
    pub metrics: MetricsSection,
    /// Audit log.
    #[serde(deserialize_with = "null_as_default")]
    pub audit: AuditSection,
}

/// `telemetry.metrics:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSection {
    /// Serve `/metrics`. Default false.
    pub enabled: bool,
    /// Where to serve it. Default `127.0.0.1:9091`.
    pub listen_address: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { enabled: false, listen_address: "127.0.0.1:9091".into() }
    }
}

/// `telemetry.audit:`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditSection {
    /// Emit structured audit events. Default false.
    pub enabled: bool,
}
