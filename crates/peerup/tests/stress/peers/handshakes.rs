//! Bulk-path handshakes from strangers: each attempt is a fresh Ed25519 identity that connects to
//! the daemon's TCP port, names the bulk security protocol in multistream-select, runs the TLS
//! handshake and sends one request, through the core's own client (`peerup_core::tunnel::bulk::dial`), so
//! that it speaks whatever the protocol currently is. The requests rotate between a probe (the
//! empty service name), the real service name, and a name with a newline that carries a forged log
//! line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::PeerId;
use libp2p::identity::Keypair;

use super::support::Tally;
use crate::attacker::{Outcomes, class};

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub daemon: PeerId,
    /// The daemon's TCP listen address (a lab address).
    pub addr: SocketAddr,
    /// The real service's name.
    pub service: String,
    /// Text that a forged log line starts with; the newline request carries it after a `\n`.
    pub forged: String,
    pub attempts: usize,
    pub concurrency: usize,
    pub attempt_timeout: Duration,
}

/// Kinds of request, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The empty name: asks whether this address takes bulk connections.
    Probe,
    /// The service the authorized peer uses.
    Service,
    /// The service name, a newline, and a forged log line.
    Newline,
}

impl Kind {
    fn of(i: usize) -> Kind {
        [Kind::Probe, Kind::Service, Kind::Newline][i % 3]
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Probe => "probe",
            Kind::Service => "service",
            Kind::Newline => "newline name",
        }
    }
}

/// The label of an attempt the daemon answered with `Ok`.
pub fn answered(kind: Kind) -> String {
    format!("{}: ANSWERED Ok", kind.label())
}

/// Runs the attempts, `concurrency` at a time.
pub async fn flood(plan: &Plan) -> Outcomes {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut ends = futures::stream::iter(0..plan.attempts)
        .map(|i| attempt(plan, i))
        .buffer_unordered(plan.concurrency.max(1));
    while let Some((label, example, accepted, timed_out)) = ends.next().await {
        tally.add(label, example, accepted, timed_out);
    }
    tally.finish(started)
}

/// One request from a fresh identity: (label, example error, a service was reached, timed out).
async fn attempt(plan: &Plan, i: usize) -> (String, Option<String>, bool, bool) {
    let kind = Kind::of(i);
    let name = match kind {
        Kind::Probe => String::new(),
        Kind::Service => plan.service.clone(),
        Kind::Newline => format!("{}\n{}", plan.service, plan.forged),
    };
    let key = Keypair::generate_ed25519();
    let tls =
        peerup_core::transport::tls::Config::new(&key).expect("TLS config for a fresh identity");
    let dial = peerup_core::tunnel::bulk::dial(tls, plan.daemon, plan.addr, &name);
    let label = kind.label();
    match tokio::time::timeout(plan.attempt_timeout, dial).await {
        Err(_) => (format!("{label}: TIMED OUT"), None, false, true),
        // Dropped at once: a connection the daemon let through goes no further.
        Ok(Ok(_io)) => (answered(kind), None, kind != Kind::Probe, false),
        Ok(Err(e)) => {
            let e = e.to_string();
            let outcome = if e.contains("does not serve") { "refused".into() } else { class(&e) };
            (format!("{label}: {outcome}"), Some(e), false, false)
        }
    }
}
