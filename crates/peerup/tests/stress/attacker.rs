//! The hostile relay client of scenario 7: a thread that moves itself into a lab host's network
//! namespace (`setns`, checked before anything is sent), then makes `attempts` reservation and
//! circuit requests against the relay, each from a fresh Ed25519 identity in its own rust-libp2p
//! swarm (TCP + Noise + yamux, or QUIC; relay client), `concurrency` at a time, and counts how each
//! ended. Nothing it does can leave the lab: its sockets live in the lab namespace, whose only
//! route ends at the lab's internet switch.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, relay, tcp, yamux};
use nix::sched::{CloneFlags, setns};

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The namespace to send from (`<prefix>-pubpeer`).
    pub netns: String,
    pub relay: PeerId,
    /// The relay's TCP and QUIC addresses, without `/p2p/`.
    pub relay_tcp: Multiaddr,
    pub relay_quic: Multiaddr,
    /// Whom circuit requests ask for (an authorized peer holding a reservation).
    pub target: PeerId,
    pub attempts: usize,
    pub concurrency: usize,
    /// How long one attempt may take before it counts as timed out.
    pub attempt_timeout: Duration,
}

/// How the attempts ended.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Attempts by `<request>/<transport>: <outcome>`.
    pub counts: BTreeMap<String, u64>,
    /// One error text per outcome, for the report.
    pub examples: BTreeMap<String, String>,
    /// Attempts the relay accepted: a reservation, or a circuit to the target.
    pub accepted: u64,
    pub timed_out: u64,
    pub secs: f64,
}

impl Outcomes {
    /// All attempts counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Starts the flood on its own thread; join it for the outcomes.
pub fn launch(plan: Plan) -> JoinHandle<Outcomes> {
    std::thread::Builder::new()
        .name("hostile-client".into())
        .spawn(move || {
            enter_netns(&plan.netns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(flood(&plan))
        })
        .expect("spawn the hostile client thread")
}

/// Moves this thread into `ns` and checks that it is there.
pub fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
    let want = file.metadata().expect("netns file").ino();
    let now = std::fs::metadata("/proc/thread-self/ns/net").expect("own netns").ino();
    assert_eq!(want, now, "the hostile client is not in {ns}; it must not send outside the lab");
}

#[derive(Debug, Clone, Copy)]
enum Request {
    Reservation,
    Circuit,
}

pub async fn flood(plan: &Plan) -> Outcomes {
    let started = Instant::now();
    let ends: Vec<(String, Option<String>, bool, bool)> = futures::stream::iter(0..plan.attempts)
        .map(|i| attempt(plan, i))
        .buffer_unordered(plan.concurrency.max(1))
        .collect()
        .await;
    let mut out = Outcomes::default();
    for (label, example, accepted, timed_out) in ends {
        *out.counts.entry(label.clone()).or_default() += 1;
        if let Some(e) = example {
            out.examples.entry(label).or_insert(e);
        }
        out.accepted += u64::from(accepted);
        out.timed_out += u64::from(timed_out);
    }
    out.secs = started.elapsed().as_secs_f64();
    out
}

/// Error text without peer IDs and addresses, so that outcomes group.
pub fn class(error: &str) -> String {
    let lower = error.to_lowercase();
    let known = [
        ("denied", "denied"),
        ("no reservation", "no reservation"),
        ("resource limit", "resource limit exceeded"),
        ("reset", "connection reset"),
        ("closed", "connection closed"),
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("handshake", "handshake failed"),
        ("negotiat", "negotiation failed"),
    ];
    known
        .iter()
        .find(|(k, _)| lower.contains(k))
        .map_or_else(|| "other error".to_string(), |(_, c)| (*c).to_string())
}

/// One request from a fresh identity: (label, example error, accepted, timed out).
async fn attempt(plan: &Plan, i: usize) -> (String, Option<String>, bool, bool) {
    let request = if i.is_multiple_of(2) { Request::Reservation } else { Request::Circuit };
    let (via, base) = if (i / 2).is_multiple_of(2) {
        ("tcp", &plan.relay_tcp)
    } else {
        ("quic", &plan.relay_quic)
    };
    let prefix = format!("{request:?}/{via}").to_lowercase();
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client transport")
        .with_behaviour(|_, client| client)
        .expect("relay client behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let circuit = base.clone().with(Protocol::P2p(plan.relay)).with(Protocol::P2pCircuit);
    let started = match request {
        Request::Reservation => swarm.listen_on(circuit).map(drop).map_err(|e| e.to_string()),
        Request::Circuit => {
            swarm.dial(circuit.with(Protocol::P2p(plan.target))).map_err(|e| e.to_string())
        }
    };
    if let Err(e) = started {
        return (format!("{prefix}: not sent ({})", class(&e)), Some(e), false, false);
    }
    let deadline = tokio::time::sleep(plan.attempt_timeout);
    tokio::pin!(deadline);
    let mut reached_relay = false;
    loop {
        let event = tokio::select! {
            () = &mut deadline => {
                let what = if reached_relay { "connected, then nothing" } else { "no connection" };
                return (format!("{prefix}: TIMED OUT ({what})"), None, false, true);
            }
            e = swarm.select_next_some() => e,
        };
        let (outcome, error) = match event {
            SwarmEvent::Behaviour(relay::client::Event::ReservationReqAccepted { .. }) => {
                return (format!("{prefix}: ACCEPTED reservation"), None, true, false);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == plan.target => {
                return (format!("{prefix}: ACCEPTED circuit to the target"), None, true, false);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == plan.relay => {
                reached_relay = true;
                continue;
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } if peer_id == plan.relay => {
                let cause = cause.map_or_else(|| "closed".to_string(), |c| c.to_string());
                ("relay closed the connection after the handshake".to_string(), cause)
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                let e = error.to_string();
                (format!("dial failed ({})", class(&e)), e)
            }
            SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                let e = e.to_string();
                (format!("reservation failed ({})", class(&e)), e)
            }
            SwarmEvent::ListenerClosed { reason: Ok(()), .. } => {
                ("listener closed".to_string(), String::new())
            }
            SwarmEvent::ListenerError { error, .. } => {
                let e = error.to_string();
                (format!("listener error ({})", class(&e)), e)
            }
            _ => continue,
        };
        return (format!("{prefix}: {outcome}"), Some(error), false, false);
    }
}
