//! The relay server's config file (`relay-server.yaml`), mirrored 1:1 from the YAML.
//!
//! Defaults differ from Go peer-up in one deliberate way: relayed circuits last 12 hours and carry
//! 1 GiB (both directions together) by default, so an SSH or RDP session that never gets a direct path is not cut
//! after minutes. Abuse is bounded by the reservation and circuit caps instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::schema::{CONFIG_VERSION, TelemetrySection, null_as_default};
use super::units::{parse_data_size, parse_duration};

/// The default TCP and UDP listen addresses of a relay (port 7777).
pub fn default_relay_listen_addresses() -> Vec<String> {
    [
        "/ip4/0.0.0.0/tcp/7777",
        "/ip4/0.0.0.0/udp/7777/quic-v1",
        "/ip6/::/tcp/7777",
        "/ip6/::/udp/7777/quic-v1",
        // The second QUIC port `peerup doctor` measures the NAT mapping with.
        "/ip4/0.0.0.0/udp/7778/quic-v1",
        "/ip6/::/udp/7778/quic-v1",
    ]
    .map(String::from)
    .to_vec()
}

/// The whole relay config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Schema version. Default 1.
    pub version: u32,
    /// `identity.key_file`, default `relay_node.key`.
    #[serde(deserialize_with = "null_as_default")]
    pub identity: RelayIdentitySection,
    /// `network.listen_addresses`, default TCP and QUIC on 7777, and QUIC on 7778 too.
    #[serde(deserialize_with = "null_as_default")]
    pub network: RelayNetworkSection,
    /// `discovery.network`: the namespace clients must share. Default: global.
    #[serde(deserialize_with = "null_as_default")]
    pub discovery: RelayDiscoverySection,
    /// Who may reserve.
    #[serde(deserialize_with = "null_as_default")]
    pub security: RelaySecuritySection,
    /// Circuit relay limits.
    #[serde(deserialize_with = "null_as_default")]
    pub resources: RelayResources,
    /// The loopback health endpoint.
    #[serde(deserialize_with = "null_as_default")]
    pub health: HealthSection,
    /// Metrics and audit logging.
    #[serde(deserialize_with = "null_as_default")]
    pub telemetry: TelemetrySection,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            identity: RelayIdentitySection::default(),
            network: RelayNetworkSection::default(),
            discovery: RelayDiscoverySection::default(),
            security: RelaySecuritySection::default(),
            resources: RelayResources::default(),
            health: HealthSection::default(),
            telemetry: TelemetrySection::default(),
        }
    }
}

/// `identity:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayIdentitySection {
    /// Key file, relative to the config's folder. Default `relay_node.key`.
    pub key_file: PathBuf,
}

impl Default for RelayIdentitySection {
    fn default() -> Self {
        Self { key_file: "relay_node.key".into() }
    }
}

/// `network:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayNetworkSection {
    /// Multiaddrs to listen on. Default TCP and QUIC on port 7777, IPv4 and IPv6.
    pub listen_addresses: Vec<String>,
}

impl Default for RelayNetworkSection {
    fn default() -> Self {
        Self { listen_addresses: default_relay_listen_addresses() }
    }
}

/// `discovery:`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayDiscoverySection {
    /// Network namespace (a DNS label). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `security:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelaySecuritySection {
    /// Allowlist of peers that may reserve, relative to the config's folder.
    /// Default `relay_authorized_keys`.
    pub authorized_keys_file: PathBuf,
    /// Only listed peers may connect and reserve. Default true.
    pub enable_connection_gating: bool,
}

impl Default for RelaySecuritySection {
    fn default() -> Self {
        Self {
            authorized_keys_file: "relay_authorized_keys".into(),
            enable_connection_gating: true,
        }
    }
}

/// `resources:`: circuit relay v2 limits. A value of 0 (or a zero duration or size, or an empty
/// string) means the default, as in Go peer-up: see [`RelayResources::effective`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayResources {
    /// Reservations held at once, in total. Default 128.
    pub max_reservations: u32,
    /// Relayed circuits at once, per peer. Default 16.
    pub max_circuits: u32,
    /// Go peer-up's bytes buffered per circuit direction. Not applied: rust-libp2p's relay has no
    /// such setting (see `validate::relay_unsupported`). Default: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_size: Option<u32>,
    /// Reservations per source IP. Default 8.
    pub max_reservations_per_ip: u32,
    /// Go peer-up's reservations per autonomous system. Not enforced: peerup has no IP-to-AS
    /// table (see `validate::relay_unsupported`). Default: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_reservations_per_asn: Option<u32>,
    /// How long a reservation lasts before it must be renewed. Default `1h`.
    pub reservation_ttl: String,
    /// Longest life of one relayed circuit. Default `12h`.
    pub session_duration: String,
    /// Most bytes one circuit carries, both directions counted together (`1GB`; KB/MB/GB are
    /// powers of 1024). Every stream between two peers shares their one circuit; once it is
    /// reached the circuit and all its streams are closed. Default `1GB`.
    pub session_data_limit: String,
}

impl Default for RelayResources {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_circuits: 16,
            buffer_size: None,
            max_reservations_per_ip: 8,
            max_reservations_per_asn: None,
            reservation_ttl: "1h".into(),
            session_duration: "12h".into(),
            session_data_limit: "1GB".into(),
        }
    }
}

impl RelayResources {
    /// These limits with every 0, zero duration or size, and empty string replaced by its default.
    pub fn effective(&self) -> RelayResources {
        let d = RelayResources::default();
        let num = |v: u32, def: u32| if v == 0 { def } else { v };
        let dur = |v: &str, def: &str| {
            let zero = v.trim().is_empty() || parse_duration(v).is_ok_and(|d| d.is_zero());
            if zero { def.to_string() } else { v.to_string() }
        };
        let zero_size = is_zero_size(&self.session_data_limit);
        RelayResources {
            max_reservations: num(self.max_reservations, d.max_reservations),
            max_circuits: num(self.max_circuits, d.max_circuits),
            buffer_size: self.buffer_size,
            max_reservations_per_ip: num(self.max_reservations_per_ip, d.max_reservations_per_ip),
            max_reservations_per_asn: self.max_reservations_per_asn,
            reservation_ttl: dur(&self.reservation_ttl, &d.reservation_ttl),
            session_duration: dur(&self.session_duration, &d.session_duration),
            session_data_limit: if zero_size {
                d.session_data_limit
            } else {
                self.session_data_limit.clone()
            },
        }
    }
}

fn is_zero_size(v: &str) -> bool {
    v.trim().is_empty() || parse_data_size(v) == Ok(0)
}

/// `health:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthSection {
    /// Serve `/healthz` on loopback. Default false.
    pub enabled: bool,
    /// Where. Default `127.0.0.1:9090`.
    pub listen_address: String,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self { enabled: false, listen_address: "127.0.0.1:9090".into() }
    }
}
