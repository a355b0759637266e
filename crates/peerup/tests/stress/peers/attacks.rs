//! The four attacks, started together on threads of their own in other lab hosts' namespaces,
//! and their outcomes once they are over.

use std::collections::BTreeMap;
use std::thread::JoinHandle;

use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use super::support::{lab_addr, spawn_in};
use super::{
    ATTEMPT_TIMEOUT, CONCURRENCY, DAEMON_PORT, RELAY_PORT, STRANGER_CONCURRENCY, Shape, handshakes,
    stalls, strangers,
};
use crate::attacker::{self, Outcomes};
use crate::lab::Lab;
use crate::node::{PUBPEER_IP, RELAY_IP};

/// Where the attacks go.
pub struct Targets {
    pub daemon: PeerId,
    pub relay: PeerId,
    /// The real service's name.
    pub service: String,
    /// The forged log line the newline requests carry.
    pub forged: String,
}

/// The running attacks.
pub struct Running {
    flood: JoinHandle<(Outcomes, f64)>,
    bulk: JoinHandle<(Outcomes, f64)>,
    strangers: JoinHandle<(Outcomes, f64)>,
    stalls: JoinHandle<(BTreeMap<String, stalls::Report>, f64)>,
    stop: CancellationToken,
}

/// What the attacks did, and the CPU seconds each attacker thread used.
pub struct Ended {
    pub relay_flood: Outcomes,
    pub bulk: Outcomes,
    pub strangers: Outcomes,
    pub stalls: BTreeMap<String, stalls::Report>,
    /// Relay flood, bulk handshakes, strangers, stalls.
    pub cpu: [f64; 4],
}

/// Starts every attack: the relay flood and the libp2p strangers from dave, the bulk handshakes
/// from alice, the stalled handshakes from carol.
pub fn launch(lab: &Lab, to: &Targets, shape: &Shape) -> Running {
    let plan = attacker::Plan {
        netns: lab.ns("dave"),
        relay: to.relay,
        relay_tcp: format!("/ip4/{RELAY_IP}/tcp/{RELAY_PORT}").parse().expect("relay TCP"),
        relay_quic: format!("/ip4/{RELAY_IP}/udp/{RELAY_PORT}/quic-v1").parse().expect("QUIC"),
        target: to.daemon,
        attempts: shape.relay_requests,
        concurrency: CONCURRENCY,
        attempt_timeout: ATTEMPT_TIMEOUT,
    };
    let flood = spawn_in(lab.ns("dave"), "hostile-relay-flood", move || async move {
        attacker::flood(&plan).await
    });
    let plan = handshakes::Plan {
        daemon: to.daemon,
        addr: lab_addr(PUBPEER_IP, DAEMON_PORT),
        service: to.service.clone(),
        forged: to.forged.clone(),
        attempts: shape.handshakes,
        concurrency: CONCURRENCY,
        attempt_timeout: ATTEMPT_TIMEOUT,
    };
    let bulk = spawn_in(lab.ns("alice"), "hostile-handshakes", move || async move {
        handshakes::flood(&plan).await
    });
    let plan = strangers::Plan {
        daemon: to.daemon,
        tcp: format!("/ip4/{PUBPEER_IP}/tcp/{DAEMON_PORT}").parse().expect("daemon TCP"),
        quic: format!("/ip4/{PUBPEER_IP}/udp/{DAEMON_PORT}/quic-v1").parse().expect("QUIC"),
        attempts: shape.strangers,
        concurrency: STRANGER_CONCURRENCY,
        attempt_timeout: ATTEMPT_TIMEOUT,
    };
    let strangers = spawn_in(lab.ns("dave"), "hostile-strangers", move || async move {
        strangers::flood(&plan).await
    });
    let stop = CancellationToken::new();
    let [bulk_slots, tls_slots, leg_slots] = shape.stalls;
    let targets = [
        ("daemon bulk", PUBPEER_IP, DAEMON_PORT, peerup_core::tunnel::bulk::PROTOCOL, bulk_slots),
        ("daemon tls", PUBPEER_IP, DAEMON_PORT, peerup_core::transport::tls::PROTOCOL, tls_slots),
        ("relay legs", RELAY_IP, RELAY_PORT, peerup_core::tunnel::legs::SECURITY, leg_slots),
    ]
    .map(|(label, ip, port, protocol, slots)| stalls::Target {
        label: label.into(),
        addr: lab_addr(ip, port),
        protocol: protocol.into(),
        slots,
    });
    let held = stop.clone();
    let stalls = spawn_in(lab.ns("carol"), "hostile-stalls", move || async move {
        stalls::hold(&targets, &held).await
    });
    Running { flood, bulk, strangers, stalls, stop }
}

impl Running {
    /// Whether the counted attacks (all but the stalls) are still going.
    pub fn going(&self) -> bool {
        !(self.flood.is_finished() && self.bulk.is_finished() && self.strangers.is_finished())
    }

    /// Ends the stalls and collects every outcome (waits for the counted attacks to end).
    pub fn end(self) -> Ended {
        self.stop.cancel();
        let (relay_flood, flood_cpu) = self.flood.join().expect("the relay flood thread panicked");
        let (bulk, bulk_cpu) = self.bulk.join().expect("the handshake thread panicked");
        let (strangers, strangers_cpu) =
            self.strangers.join().expect("the stranger thread panicked");
        let (stalls, stalls_cpu) = self.stalls.join().expect("the stall thread panicked");
        Ended {
            relay_flood,
            bulk,
            strangers,
            stalls,
            cpu: [flood_cpu, bulk_cpu, strangers_cpu, stalls_cpu],
        }
    }
}
