//! Node config switches that Go peer-up files carry, on loopback: `force_private` (Go's
//! `network.force_private_reachability`), `bootstrap` (`discovery.bootstrap_peers`) and
//! `resource_limits` (`network.resource_limits_enabled`).

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use peerup_core::node::{NodeConfig, NodeEvent, RESOURCE_LIMITS};
use peerup_core::tunnel::Tunnel;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/events.rs"]
mod events;
use events::wait_for;

struct Nodes {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Nodes {
    fn new() -> Self {
        Self { cancel: CancellationToken::new(), tracker: TaskTracker::new() }
    }

    /// A node on 127.0.0.1 TCP port 0, changed by `edit`, and its address with `/p2p/`.
    async fn spawn(
        &self,
        edit: impl FnOnce(&mut NodeConfig),
    ) -> (Tunnel, broadcast::Receiver<NodeEvent>, Multiaddr) {
        let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.watch_network = false;
        edit(&mut cfg);
        let (node, mut ev) = Tunnel::spawn(cfg, self.cancel.clone(), &self.tracker).unwrap();
        let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(_))).await {
            NodeEvent::Listening(a) => a,
            _ => unreachable!(),
        };
        let addr = addr.with(Protocol::P2p(node.node().peer_id()));
        (node, ev, addr)
    }
}

/// A forced-private node confirms no direct address as its own, even one it would otherwise
/// announce (here: its listen address, as a relay on a public host does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_private_announces_no_direct_address() {
    let nodes = Nodes::new();
    for force in [false, true] {
        let (node, _, addr) = nodes
            .spawn(|c| {
                c.listen_addrs_are_external = true;
                c.force_private = force;
            })
            .await;
        let external = node.node().external_addrs().await.unwrap();
        let listen: Multiaddr = addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        assert_eq!(external.contains(&listen), !force, "force_private={force}: {external:?}");
    }
}

/// A bootstrap peer is dialled at start, and joins the DHT once identified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_peers_are_dialled_at_start() {
    let nodes = Nodes::new();
    let (b, _, b_addr) = nodes.spawn(|_| {}).await;
    let (_a, mut a_ev, _) = nodes.spawn(|c| c.bootstrap = vec![b_addr.clone()]).await;
    let b_id = b.node().peer_id();
    wait_for(&mut a_ev, |e| matches!(e, NodeEvent::Identified { peer, .. } if *peer == b_id)).await;
}

/// With resource limits on, a peer cannot hold more than the per-peer cap of connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_cap_connections_per_peer() {
    let nodes = Nodes::new();
    let cap = RESOURCE_LIMITS.max_established_per_peer as usize;
    for limited in [false, true] {
        let (b, mut b_ev, b_addr) = nodes.spawn(|c| c.resource_limits = limited).await;
        let (a, _, _) = nodes.spawn(|_| {}).await;
        let bare: Multiaddr = b_addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        for _ in 0..cap + 2 {
            // The dialler sees each handshake finish; a capped listener then refuses the extra.
            let _ = a.node().connect(bare.clone()).await;
        }
        let want = if limited { cap } else { cap + 2 };
        let a_id = a.node().peer_id();
        for _ in 0..want {
            wait_for(
                &mut b_ev,
                |e| matches!(e, NodeEvent::Connected { peer, .. } if *peer == a_id),
            )
            .await;
        }
        let all = b.node().connections().await.unwrap();
        let held = all.iter().filter(|(p, _)| *p == a_id).count();
        assert_eq!(held, want, "resource_limits={limited}");
    }
}

/// A node with a rendezvous string announces it in the DHT, as Go peer-up's daemon does: a DHT
/// peer then finds it as a provider of that string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_is_announced_in_the_dht() {
    let nodes = Nodes::new();
    // A DHT server (it announces its listen address, so it serves the DHT on loopback).
    let (b, _, b_addr) = nodes.spawn(|c| c.listen_addrs_are_external = true).await;
    let (a, _, _) = nodes
        .spawn(|c| {
            c.bootstrap = vec![b_addr.clone()];
            c.rendezvous = Some("peerup-default-network".into());
        })
        .await;
    let a_id = a.node().peer_id();
    let found = tokio::time::timeout(events::WAIT, async {
        loop {
            let p = b.node().providers("peerup-default-network").await.unwrap();
            if p.contains(&a_id) {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the rendezvous record never reached the DHT peer");
    assert!(found.contains(&a_id));
    assert!(b.node().providers("another-network").await.unwrap().is_empty());
}
