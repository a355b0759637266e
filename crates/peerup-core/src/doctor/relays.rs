//! Probing the relays with a small swarm of its own (TCP, QUIC, identify and the relay client):
//! one connection per transport to each relay, a second QUIC connection to another of the relay's
//! QUIC endpoints (from its identify listen addresses) to compare what each observes of our one
//! QUIC socket, and optionally a reservation, released when the probe ends.
//!
//! QUIC dials all leave from one UDP socket (libp2p-quic reuses its dialing endpoint), so the
//! addresses the relays observe compare like with like: see [`crate::netinfo::classify_mapping`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, relay};
use tokio::time::Instant;

use super::{DoctorError, Reach, RelayReport, Reservation};
use crate::netinfo::socket_of;
use crate::relay_addr::{self, quic_twin, tcp_twin};
use crate::streams::is_quic;

#[derive(NetworkBehaviour)]
struct Probe {
    relay_client: relay::client::Behaviour,
    identify: identify::Behaviour,
}

/// Which of a relay's endpoints a connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Quic,
    /// The second QUIC endpoint, for the mapping comparison.
    QuicSecond,
}

struct Dial {
    relay: usize,
    kind: Kind,
    addr: Multiaddr,
    started: Instant,
    /// Connected and waiting for the relay's identify.
    awaiting_identify: bool,
}

/// One QUIC observation: the relay endpoint we dialed and the address it saw us come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The relay's endpoint.
    pub relay: SocketAddr,
    /// Our address as it saw it.
    pub observed: SocketAddr,
}

pub(super) struct Outcome {
    pub(super) relays: Vec<RelayReport>,
    pub(super) observations: Vec<Observation>,
}

/// The probe swarm: the node's own transports (`crate::transport::stack`), with nothing handed
/// off, and identify and the relay client.
fn build(key: &libp2p::identity::Keypair) -> Result<Swarm<Probe>, DoctorError> {
    use crate::transport::{Parts, circuits::Circuits, stack, tcp::Sockets, tls};
    let err = |e: &dyn std::fmt::Display| DoctorError::Transport(e.to_string());
    let (circuits, relay_client) = relay::client::new(key.public().to_peer_id());
    let parts = Parts {
        tls: tls::Config::new(key).map_err(|e| err(&e))?,
        sockets: Sockets::default(),
        circuits: Circuits::new(circuits),
        handoffs: Default::default(),
    };
    let transport = stack(key, parts).map_err(|e| err(&e))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| err(&e))?
        .with_behaviour(|key| Probe {
            relay_client,
            identify: identify::Behaviour::new(
                identify::Config::new(crate::protocols::IDENTIFY.into(), key.public())
                    .with_agent_version(format!(
                        "{}{}-doctor",
                        crate::protocols::AGENT_PREFIX,
                        env!("CARGO_PKG_VERSION")
                    )),
            ),
        })
        .map_err(|e| err(&e))?
        .build();
    Ok(swarm)
}

struct Run {
    swarm: Swarm<Probe>,
    reserve: bool,
    reports: Vec<RelayReport>,
    ids: Vec<PeerId>,
    dials: HashMap<ConnectionId, Dial>,
    second_dialed: Vec<bool>,
    reservations: HashMap<ListenerId, usize>,
    observations: Vec<Observation>,
}

/// Probes every relay (each address must end in `/p2p/<id>`) until everything is known or
/// `deadline`; what is still open then is reported as timed out.
pub(super) async fn probe(
    key: &libp2p::identity::Keypair,
    relays: &[Multiaddr],
    reserve: bool,
    deadline: Instant,
) -> Result<Outcome, DoctorError> {
    let mut run = Run {
        swarm: build(key)?,
        reserve,
        reports: Vec::new(),
        ids: Vec::new(),
        dials: HashMap::new(),
        second_dialed: Vec::new(),
        reservations: HashMap::new(),
        observations: Vec::new(),
    };
    for addr in relays {
        let Some(id) = relay_addr::peer_id_of(addr) else { continue };
        let (tcp, quic) = match is_quic(addr) {
            true => (tcp_twin(addr), Some(addr.clone())),
            false => (Some(addr.clone()), quic_twin(addr)),
        };
        let i = run.reports.len();
        run.reports.push(RelayReport::new(id, addr.clone()));
        run.ids.push(id);
        run.second_dialed.push(false);
        if let Some(a) = tcp {
            run.dial(i, Kind::Tcp, a);
        }
        if let Some(a) = quic {
            run.dial(i, Kind::Quic, a);
        }
    }
    while !run.finished() {
        tokio::select! {
            event = run.swarm.select_next_some() => run.on_event(event),
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    run.time_out();
    Ok(Outcome { relays: run.reports, observations: run.observations })
}

impl Run {
    fn dial(&mut self, relay: usize, kind: Kind, addr: Multiaddr) {
        let opts = DialOpts::peer_id(self.ids[relay])
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        let started = Instant::now();
        match self.swarm.dial(opts) {
            Ok(()) => {
                let dial = Dial { relay, kind, addr, started, awaiting_identify: false };
                self.dials.insert(id, dial);
            }
            Err(e) => self.set_reach(relay, kind, Reach::Failed { addr, reason: e.to_string() }),
        }
    }

    fn set_reach(&mut self, relay: usize, kind: Kind, reach: Reach) {
        let r = &mut self.reports[relay];
        match kind {
            Kind::Tcp => r.tcp = reach,
            Kind::Quic => r.quic = reach,
            Kind::QuicSecond => r.quic_second = reach,
        }
    }

    fn finished(&self) -> bool {
        self.dials.is_empty()
            && self.reports.iter().all(|r| !matches!(r.reservation, Reservation::Pending))
    }

    fn on_event(&mut self, event: SwarmEvent<ProbeEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                if let Some(d) = self.dials.get_mut(&connection_id) {
                    d.awaiting_identify = true;
                    let reach = Reach::Ok {
                        addr: d.addr.clone(),
                        rtt: d.started.elapsed(),
                        observed: None,
                    };
                    let (relay, kind) = (d.relay, d.kind);
                    self.set_reach(relay, kind, reach);
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                if let Some(d) = self.dials.remove(&connection_id) {
                    let reason = error.to_string().replace('\n', " ");
                    self.set_reach(d.relay, d.kind, Reach::Failed { addr: d.addr, reason });
                    self.no_reservation_if_unreachable(d.relay);
                }
            }
            SwarmEvent::ConnectionClosed { connection_id, cause, .. } => {
                // Closed before identify: the relay hung up on us (a gate refusing the peer).
                if let Some(d) = self.dials.remove(&connection_id) {
                    let reason = cause.map_or("closed by the relay".into(), |c| c.to_string());
                    self.set_reach(d.relay, d.kind, Reach::Failed { addr: d.addr, reason });
                    let node = *self.swarm.local_peer_id();
                    let r = &mut self.reports[d.relay];
                    if matches!(r.reservation, Reservation::Pending | Reservation::Unreachable) {
                        r.reservation = Reservation::NotAuthorized { node };
                    }
                }
            }
            SwarmEvent::Behaviour(ProbeEvent::Identify(identify::Event::Received {
                connection_id,
                info,
                ..
            })) => self.on_identify(connection_id, info),
            SwarmEvent::Behaviour(ProbeEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, limit, .. },
            )) => {
                let found = self.reservations.iter().find(|(_, i)| self.ids[**i] == relay_peer_id);
                if let Some((&listener, &i)) = found {
                    self.reservations.remove(&listener);
                    self.reports[i].reservation = Reservation::Accepted {
                        circuit_duration: limit.and_then(|l| l.duration()),
                        circuit_bytes: limit.and_then(|l| l.data_in_bytes()),
                    };
                    // Release it: the probe is over for this relay.
                    self.swarm.remove_listener(listener);
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Some(i) = self.reservations.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "the relay closed the reservation".to_string(),
                        Err(e) => e.to_string(),
                    };
                    self.reports[i].reservation = Reservation::Refused(reason);
                }
            }
            _ => {}
        }
    }

    fn no_reservation_if_unreachable(&mut self, relay: usize) {
        let r = &mut self.reports[relay];
        let connected = self.dials.values().any(|d| d.relay == relay)
            || matches!(r.tcp, Reach::Ok { .. })
            || matches!(r.quic, Reach::Ok { .. });
        if !connected && matches!(r.reservation, Reservation::Pending) {
            r.reservation = Reservation::Unreachable;
        }
    }

    fn on_identify(&mut self, connection: ConnectionId, info: identify::Info) {
        let Some(d) = self.dials.remove(&connection) else { return };
        let relay = d.relay;
        let observed = info.observed_addr.clone();
        let reach = Reach::Ok {
            addr: d.addr.clone(),
            rtt: rtt_of(&self.reports[relay], d.kind),
            observed: Some(observed.clone()),
        };
        self.set_reach(relay, d.kind, reach);
        let r = &mut self.reports[relay];
        r.agent = Some(info.agent_version.clone());
        r.listen_addrs = info.listen_addrs.clone();
        if d.kind != Kind::Tcp
            && let (Some(ep), Some(seen)) = (socket_of(&d.addr), socket_of(&observed))
        {
            self.observations.push(Observation { relay: ep, observed: seen });
        }
        if d.kind == Kind::Quic && !self.second_dialed[relay] {
            self.second_dialed[relay] = true;
            match second_endpoint(&d.addr, &info.listen_addrs) {
                Some(addr) => {
                    let addr = addr.with(Protocol::P2p(self.ids[relay]));
                    self.dial(relay, Kind::QuicSecond, addr);
                }
                None => self.reports[relay].quic_second = Reach::NoEndpoint,
            }
        }
        if matches!(self.reports[relay].reservation, Reservation::Pending)
            && !self.reservations.values().any(|&i| i == relay)
        {
            self.reserve(relay);
        }
    }

    fn reserve(&mut self, relay: usize) {
        if !self.reserve {
            self.reports[relay].reservation = Reservation::NotTried;
            return;
        }
        let circuit = self.reports[relay].addr.clone().with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit) {
            Ok(id) => {
                self.reservations.insert(id, relay);
            }
            Err(e) => self.reports[relay].reservation = Reservation::Refused(e.to_string()),
        }
    }

    fn time_out(&mut self) {
        for d in std::mem::take(&mut self.dials).into_values() {
            let r = &self.reports[d.relay];
            let connected = match d.kind {
                Kind::Tcp => &r.tcp,
                Kind::Quic => &r.quic,
                Kind::QuicSecond => &r.quic_second,
            };
            if !matches!(connected, Reach::Ok { .. }) {
                self.set_reach(
                    d.relay,
                    d.kind,
                    Reach::Failed { addr: d.addr, reason: "timed out".into() },
                );
            }
        }
        for r in &mut self.reports {
            if matches!(r.reservation, Reservation::Pending) {
                r.reservation = match (&r.tcp, &r.quic) {
                    (Reach::Ok { .. }, _) | (_, Reach::Ok { .. }) => Reservation::TimedOut,
                    _ => Reservation::Unreachable,
                };
            }
        }
    }
}

fn rtt_of(r: &RelayReport, kind: Kind) -> Duration {
    let reach = match kind {
        Kind::Tcp => &r.tcp,
        Kind::Quic => &r.quic,
        Kind::QuicSecond => &r.quic_second,
    };
    match reach {
        Reach::Ok { rtt, .. } => *rtt,
        _ => Duration::ZERO,
    }
}

/// Another QUIC endpoint of the relay to compare observations with: a public address other than
/// the one dialed (it also tells address-dependent mapping apart), else another port on the dialed
/// address. Private and loopback addresses the relay lists are skipped unless we dialed one.
fn second_endpoint(dialed: &Multiaddr, listen: &[Multiaddr]) -> Option<Multiaddr> {
    let first = socket_of(dialed)?;
    let candidates: Vec<(SocketAddr, &Multiaddr)> = listen
        .iter()
        .filter(|a| is_quic(a))
        .filter_map(|a| socket_of(a).map(|s| (s, a)))
        .filter(|(s, _)| s.is_ipv4() == first.is_ipv4() && *s != first)
        .collect();
    let public = |s: &SocketAddr| match s.ip() {
        std::net::IpAddr::V4(v4) => crate::netinfo::is_global_v4(v4),
        std::net::IpAddr::V6(v6) => crate::netinfo::is_global_v6(v6),
    };
    let other_ip = candidates.iter().find(|(s, _)| s.ip() != first.ip() && public(s));
    let same_ip = candidates.iter().find(|(s, _)| s.ip() == first.ip());
    other_ip.or(same_ip).map(|(_, a)| a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn second_endpoint_prefers_another_public_address_then_another_port() {
        let dialed = ma("/ip4/198.18.0.1/udp/7777/quic-v1");
        let listen = [
            ma("/ip4/127.0.0.1/udp/7778/quic-v1"),
            ma("/ip4/198.18.0.1/udp/7777/quic-v1"),
            ma("/ip4/198.18.0.1/tcp/7778"),
            ma("/ip4/198.18.0.1/udp/7778/quic-v1"),
        ];
        assert_eq!(second_endpoint(&dialed, &listen), Some(listen[3].clone()));
        let mut more = listen.to_vec();
        more.push(ma("/ip4/203.0.113.9/udp/7777/quic-v1"));
        more.push(ma("/ip4/10.0.0.1/udp/7777/quic-v1"));
        assert_eq!(second_endpoint(&dialed, &more), Some(more[4].clone()));
        assert_eq!(second_endpoint(&dialed, &listen[..3]), None, "only one QUIC endpoint");
    }
}
