//! libp2p connections to the daemon from strangers: each attempt is a fresh Ed25519 identity in
//! its own rust-libp2p swarm (TCP with TLS or Noise and yamux, or QUIC) that dials the daemon and
//! pings it. The daemon's gate must refuse it: the connection closes right after the handshake and
//! no ping is ever answered.

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, ping, tcp, yamux};

use super::support::Tally;
use crate::attacker::{Outcomes, class};

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub daemon: PeerId,
    /// The daemon's TCP and QUIC addresses, without `/p2p/`.
    pub tcp: Multiaddr,
    pub quic: Multiaddr,
    pub attempts: usize,
    pub concurrency: usize,
    pub attempt_timeout: Duration,
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

/// One connection from a fresh identity: (label, example error, the daemon answered a ping,
/// timed out).
async fn attempt(plan: &Plan, i: usize) -> (String, Option<String>, bool, bool) {
    let (via, base) = if i.is_multiple_of(2) { ("tcp", &plan.tcp) } else { ("quic", &plan.quic) };
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            (libp2p::tls::Config::new, noise::Config::new),
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_quic()
        .with_behaviour(|_| ping::Behaviour::new(ping::Config::new()))
        .expect("ping behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    if let Err(e) = swarm.dial(base.clone().with(Protocol::P2p(plan.daemon))) {
        let e = e.to_string();
        return (format!("{via}: not sent ({})", class(&e)), Some(e), false, false);
    }
    let deadline = tokio::time::sleep(plan.attempt_timeout);
    tokio::pin!(deadline);
    let mut connected = false;
    loop {
        let event = tokio::select! {
            () = &mut deadline => {
                let what = if connected { "connected, then nothing" } else { "no connection" };
                return (format!("{via}: TIMED OUT ({what})"), None, false, true);
            }
            e = swarm.select_next_some() => e,
        };
        let (outcome, error) = match event {
            SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) => {
                return (format!("{via}: ACCEPTED (ping answered)"), None, true, false);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == plan.daemon => {
                connected = true;
                continue;
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } if peer_id == plan.daemon => {
                let cause = cause.map_or_else(|| "closed".to_string(), |c| c.to_string());
                ("daemon closed the connection after the handshake".to_string(), cause)
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                let e = error.to_string();
                (format!("dial failed ({})", class(&e)), e)
            }
            _ => continue,
        };
        return (format!("{via}: {outcome}"), Some(error), false, false);
    }
}
