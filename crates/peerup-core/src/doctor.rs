//! `peerup doctor`'s measurements: what this machine's connectivity looks like from the relays.
//!
//! All at once, within one deadline:
//! - [`relays`]: every relay over TCP and QUIC, a second QUIC endpoint of it for the NAT mapping,
//!   optionally a reservation (released again) with the relay's circuit limits;
//! - [`hops`]: the first routers towards the first relay, for double NAT and CGNAT;
//! - [`upnp`]: an SSDP search for a UPnP gateway.
//!
//! No third party (STUN server, web service) is ever contacted: only the configured relays and the
//! LAN. [`crate::netinfo`] classifies the results; the binary turns them into findings.

pub mod hops;
pub mod relays;
pub mod upnp;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

pub use hops::Hop;
pub use relays::Observation;
pub use upnp::Upnp;

use crate::netinfo::{self, Findings, NatMapping, Upstream};

/// How long the hop probe waits for ICMP answers.
const HOPS_WAIT: Duration = Duration::from_millis(1500);
/// How long the UPnP search waits for a gateway.
const UPNP_WAIT: Duration = Duration::from_secs(1);

/// What to probe.
#[derive(Clone)]
pub struct DoctorConfig {
    /// The node's identity (relays with gating only talk to authorized peers).
    pub keypair: Keypair,
    /// The relays, each with `/p2p/<id>`.
    pub relays: Vec<Multiaddr>,
    /// Try a reservation on each relay (not when a daemon holds them: ask it instead).
    pub reserve: bool,
    /// Search for a UPnP gateway.
    pub upnp: bool,
    /// The whole probe ends by then.
    pub timeout: Duration,
}

/// The doctor could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DoctorError {
    /// The network stack could not be built.
    #[error("cannot build the network stack: {0}")]
    Transport(String),
}

/// Whether one endpoint of a relay could be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Connected (and identified when `observed` is set).
    Ok {
        /// The address dialed.
        addr: Multiaddr,
        /// From dialing to the connection being established.
        rtt: Duration,
        /// Our address as the relay saw it.
        observed: Option<Multiaddr>,
    },
    /// The connection failed.
    Failed {
        /// The address dialed.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The relay lists no such endpoint (a second QUIC port).
    NoEndpoint,
    /// Not tried.
    NotTried,
}

/// The reservation test on one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Still under way.
    Pending,
    /// Granted (and released again), with the limits the relay puts on each circuit.
    Accepted {
        /// How long a circuit may last.
        circuit_duration: Option<Duration>,
        /// How many bytes a circuit may carry.
        circuit_bytes: Option<u64>,
    },
    /// Refused, with the reason.
    Refused(String),
    /// The relay hung up right after the handshake, before identifying itself: its gate refuses
    /// this node (`node`), which it does not authorize.
    NotAuthorized {
        /// This node's peer ID, the one to authorize on the relay.
        node: PeerId,
    },
    /// The relay could not be reached.
    Unreachable,
    /// No answer before the deadline.
    TimedOut,
    /// Not asked for.
    NotTried,
}

/// What was learnt about one relay.
#[derive(Debug, Clone)]
pub struct RelayReport {
    /// Its peer ID.
    pub peer: PeerId,
    /// The configured address.
    pub addr: Multiaddr,
    /// Over TCP.
    pub tcp: Reach,
    /// Over QUIC.
    pub quic: Reach,
    /// The second QUIC endpoint used for the mapping test.
    pub quic_second: Reach,
    /// The reservation test.
    pub reservation: Reservation,
    /// Its agent version.
    pub agent: Option<String>,
    /// The addresses it listens on (identify).
    pub listen_addrs: Vec<Multiaddr>,
}

impl RelayReport {
    fn new(peer: PeerId, addr: Multiaddr) -> Self {
        Self {
            peer,
            addr,
            tcp: Reach::NotTried,
            quic: Reach::NotTried,
            quic_second: Reach::NotTried,
            reservation: Reservation::Pending,
            agent: None,
            listen_addrs: Vec::new(),
        }
    }
}

/// What the mapping verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Observations from two relay IP addresses: tells all three RFC 4787 mappings apart.
    TwoAddresses,
    /// Two ports of one relay address: an address-dependent NAT would pass as independent.
    TwoPorts,
    /// One relay endpoint only: the mapping can't be measured.
    OneEndpoint,
    /// No QUIC observation at all.
    Nothing,
}

/// The NAT mapping and what it rests on.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The verdict.
    pub mapping: NatMapping,
    /// What it rests on.
    pub basis: Basis,
    /// The QUIC observations compared (all from one local UDP socket).
    pub observations: Vec<Observation>,
}

/// Everything the doctor measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// This machine's addresses.
    pub addresses: Vec<IpAddr>,
    /// Per relay.
    pub relays: Vec<RelayReport>,
    /// The NAT mapping.
    pub mapping: Mapping,
    /// The relay endpoint the hops were probed towards.
    pub hops_target: Option<SocketAddr>,
    /// The routers that answered.
    pub hops: Vec<Hop>,
    /// What the hops say.
    pub upstream: Upstream,
    /// An observed address of ours is in 100.64.0.0/10.
    pub observed_cgnat: bool,
    /// The UPnP search.
    pub upnp: Upnp,
    /// The inputs of the grade.
    pub findings: Findings,
}

/// Runs every probe at once and returns within `config.timeout` (plus a moment to wind down).
pub async fn run(config: &DoctorConfig) -> Result<Report, DoctorError> {
    let deadline = Instant::now() + config.timeout;
    let hops_target = hops_target(&config.relays).await;
    let hops = async {
        let Some(target) = hops_target else { return Vec::new() };
        let wait = HOPS_WAIT.min(config.timeout);
        tokio::task::spawn_blocking(move || hops::probe(target, wait)).await.unwrap_or_default()
    };
    let upnp = async {
        match config.upnp {
            true => upnp::search(UPNP_WAIT.min(config.timeout)).await,
            false => Upnp::Skipped,
        }
    };
    let probe = relays::probe(&config.keypair, &config.relays, config.reserve, deadline);
    let (outcome, hops, upnp) = tokio::join!(probe, hops, upnp);
    let outcome = outcome?;
    let addresses = netinfo::local_addresses();
    let mapping = mapping_of(&addresses, outcome.observations);
    let upstream = netinfo::classify_hops(&hops.iter().map(|h| h.addr).collect::<Vec<_>>());
    let observed_cgnat = mapping
        .observations
        .iter()
        .any(|o| matches!(o.observed.ip(), IpAddr::V4(v4) if netinfo::is_cgnat(v4)));
    let findings = Findings {
        addresses: addresses.clone(),
        mapping: (mapping.mapping != NatMapping::Unknown).then_some(mapping.mapping),
        has_external: !mapping.observations.is_empty(),
        cgnat_upstream: upstream.cgnat || observed_cgnat,
        double_nat: upstream.double_nat(),
    };
    Ok(Report {
        addresses,
        relays: outcome.relays,
        mapping,
        hops_target,
        hops,
        upstream,
        observed_cgnat,
        upnp,
        findings,
    })
}

/// Classifies the QUIC observations of one address family (the first one's).
fn mapping_of(addresses: &[IpAddr], observations: Vec<Observation>) -> Mapping {
    let family = observations.first().map(|o| o.observed.is_ipv4());
    let observations: Vec<Observation> =
        observations.into_iter().filter(|o| Some(o.observed.is_ipv4()) == family).collect();
    let mut endpoints: Vec<SocketAddr> = observations.iter().map(|o| o.relay).collect();
    endpoints.sort();
    endpoints.dedup();
    let mut ips: Vec<IpAddr> = endpoints.iter().map(SocketAddr::ip).collect();
    ips.dedup();
    let basis = match (endpoints.len(), ips.len()) {
        (0, _) => Basis::Nothing,
        (1, _) => Basis::OneEndpoint,
        (_, 1) => Basis::TwoPorts,
        _ => Basis::TwoAddresses,
    };
    // Loopback relays (tests) see us at a loopback address: that is "no NAT" too.
    let mut local = addresses.to_vec();
    local.extend([IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)]);
    let seen: Vec<SocketAddr> = observations.iter().map(|o| o.observed).collect();
    let mapping = match basis {
        // One endpoint observed twice proves nothing about other endpoints.
        Basis::OneEndpoint | Basis::Nothing if !seen.iter().any(|s| local.contains(&s.ip())) => {
            NatMapping::Unknown
        }
        _ => netinfo::classify_mapping(&local, &seen),
    };
    Mapping { mapping, basis, observations }
}

/// The first relay's IPv4 endpoint (DNS names resolved), for the hop probe.
async fn hops_target(relays: &[Multiaddr]) -> Option<SocketAddr> {
    let first = relays.first()?;
    if let Some(s) = netinfo::socket_of(first) {
        return Some(s);
    }
    let (host, port) = first.iter().fold((None, None), |(h, p), x| match x {
        Protocol::Dns(d) | Protocol::Dns4(d) => (Some(d.to_string()), p),
        Protocol::Tcp(port) | Protocol::Udp(port) => (h, p.or(Some(port))),
        _ => (h, p),
    });
    let lookup = tokio::net::lookup_host((host?, port?));
    let found = tokio::time::timeout(Duration::from_secs(1), lookup).await.ok()?.ok()?;
    found.into_iter().find(SocketAddr::is_ipv4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(relay: &str, observed: &str) -> Observation {
        Observation { relay: relay.parse().unwrap(), observed: observed.parse().unwrap() }
    }

    #[test]
    fn mapping_verdicts_name_their_basis() {
        let lan = ["192.168.1.2".parse().unwrap()];
        let alice = vec![
            obs("198.18.0.1:7777", "198.18.0.11:40000"),
            obs("198.18.0.1:7778", "198.18.0.11:40000"),
        ];
        let m = mapping_of(&lan, alice);
        assert_eq!((m.mapping, m.basis), (NatMapping::EndpointIndependent, Basis::TwoPorts));
        let carol = vec![
            obs("198.18.0.1:7777", "198.18.0.13:41417"),
            obs("203.0.113.1:7777", "198.18.0.13:18895"),
        ];
        let m = mapping_of(&lan, carol);
        assert_eq!((m.mapping, m.basis), (NatMapping::EndpointDependent, Basis::TwoAddresses));
        let one = vec![obs("198.18.0.1:7777", "198.18.0.11:40000")];
        assert_eq!(mapping_of(&lan, one).mapping, NatMapping::Unknown);
        let public = vec![obs("198.18.0.1:7777", "198.18.0.2:5000")];
        let m = mapping_of(&["198.18.0.2".parse().unwrap()], public);
        assert_eq!((m.mapping, m.basis), (NatMapping::None, Basis::OneEndpoint));
        assert_eq!(mapping_of(&lan, Vec::new()).basis, Basis::Nothing);
    }
}
