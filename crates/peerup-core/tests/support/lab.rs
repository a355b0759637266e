//! Shared by the core's integration tests: a relay and nodes on loopback (port 0), an echo
//! service, and a TCP forwarder that sees which connections pass through it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::gate::AccessList;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::relay::RelayLimits;
use peerup_core::service;
use peerup_core::tunnel::Tunnel;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::wait_for;

/// An access list that authorizes `peers`.
pub fn keys_of(peers: &[PeerId]) -> AccessList {
    let mut k = AuthorizedKeys::default();
    for p in peers {
        k.add(Entry::new(*p, None)).unwrap();
    }
    AccessList::from_keys(&k)
}

/// A relay on 127.0.0.1 and the nodes of one test; everything stops when it is dropped.
pub struct Lab {
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    /// The relay's TCP address, with its peer ID.
    pub relay_addr: Multiaddr,
    pub relay: Tunnel,
}

impl Lab {
    /// Starts a relay on 127.0.0.1 (TCP and QUIC) with these limits, gating open.
    pub async fn start(limits: RelayLimits) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ];
        cfg.relay_server = Some(limits);
        cfg.listen_addrs_are_external = true;
        let (relay, mut ev) = Tunnel::spawn(cfg, cancel.clone(), &tracker).unwrap();
        let addr = listening_tcp(&mut ev).await;
        let relay_addr = addr.with(Protocol::P2p(relay.node().peer_id()));
        Self { cancel, tracker, relay_addr, relay }
    }

    /// The relay's TCP socket address.
    pub fn relay_socket(&self) -> SocketAddr {
        peerup_core::netinfo::socket_of(&self.relay_addr).expect("a TCP relay address")
    }

    /// A node with `cfg` (DHT off: on loopback it would hand out direct addresses).
    pub fn spawn(&self, mut cfg: NodeConfig) -> (Tunnel, broadcast::Receiver<NodeEvent>) {
        cfg.enable_dht = false;
        Tunnel::spawn(cfg, self.cancel.clone(), &self.tracker).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The first TCP address a node reports listening on.
pub async fn listening_tcp(ev: &mut broadcast::Receiver<NodeEvent>) -> Multiaddr {
    let is_tcp = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::Tcp(_)));
    match wait_for(ev, |e| matches!(e, NodeEvent::Listening(a) if is_tcp(a))).await {
        NodeEvent::Listening(a) => a,
        _ => unreachable!(),
    }
}

/// A TCP echo server on 127.0.0.1:0 that echoes until the client half-closes, then closes.
pub async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = sock.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `data` to `peer`'s echo service, half-closes, reads everything back; whether the
/// connection was relayed.
pub async fn echo_through(node: &Tunnel, peer: PeerId, data: &[u8]) -> (Vec<u8>, bool) {
    let (stream, path) = service::connect(node, peer, "echo").await.expect("open stream");
    let (mut r, mut w) = stream.split();
    let send = async {
        w.write_all(data).await.unwrap();
        w.close().await.unwrap();
    };
    let recv = async {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        out
    };
    let ((), out) = tokio::join!(send, recv);
    (out, path.relayed)
}

/// A TCP forwarder on 127.0.0.1:0 to `upstream` that counts the connections whose first bytes
/// contain `marker`.
pub struct Forwarder {
    pub addr: SocketAddr,
    marked: Arc<AtomicUsize>,
}

impl Forwarder {
    pub async fn start(upstream: SocketAddr, marker: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let marked = Arc::new(AtomicUsize::new(0));
        let count = marked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let (mut seen, mut counted) = (Vec::new(), false);
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await?;
                            if n == 0 {
                                return sw.shutdown().await;
                            }
                            if !counted && seen.len() < 512 {
                                seen.extend_from_slice(&buf[..n]);
                                if seen.windows(marker.len()).any(|w| w == marker) {
                                    count.fetch_add(1, Ordering::SeqCst);
                                    counted = true;
                                }
                            }
                            sw.write_all(&buf[..n]).await?;
                        }
                    };
                    let down = tokio::io::copy(&mut sr, &mut cw);
                    let _: (std::io::Result<()>, _) = tokio::join!(up, down);
                });
            }
        });
        Self { addr, marked }
    }

    /// Connections so far whose first bytes contained the marker.
    pub fn marked(&self) -> usize {
        self.marked.load(Ordering::SeqCst)
    }
}
