//! A relay and two nodes on loopback (port 0): service streams through the relay circuit, the
//! switch to a direct connection, half-close, parallel streams, refusals and a closed local port.

use std::collections::HashSet;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::gate::AccessList;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::relay::RelayLimits;
use peerup_core::service::{self, ServiceSpec};
use peerup_core::tunnel::Tunnel;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/events.rs"]
mod events;
use events::{WAIT, wait_for};

fn keys_of(peers: &[PeerId]) -> AuthorizedKeys {
    let mut k = AuthorizedKeys::default();
    for p in peers {
        k.add(Entry::new(*p, None)).unwrap();
    }
    k
}

struct Lab {
    cancel: CancellationToken,
    tracker: TaskTracker,
    relay_addr: Multiaddr,
    relay: Tunnel,
}

impl Lab {
    /// Starts a relay on 127.0.0.1 with gating open.
    async fn start() -> Self {
        Self::start_with(RelayLimits::default()).await
    }

    /// The same, with these relay limits.
    async fn start_with(limits: RelayLimits) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
        cfg.listen = vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ];
        cfg.relay_server = Some(limits);
        cfg.listen_addrs_are_external = true;
        let (relay, mut ev) = Tunnel::spawn(cfg, cancel.clone(), &tracker).unwrap();
        let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(a) if a.iter().any(|p| matches!(p, Protocol::Tcp(_))))).await {
            NodeEvent::Listening(a) => a,
            _ => unreachable!(),
        };
        let relay_addr = addr.with(Protocol::P2p(relay.node().peer_id()));
        Self { cancel, tracker, relay_addr, relay }
    }

    fn node(
        &self,
        key: Keypair,
        reserve: bool,
        access: AccessList,
    ) -> (Tunnel, broadcast::Receiver<NodeEvent>) {
        let mut cfg = NodeConfig::new(key);
        cfg.listen = vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ];
        cfg.relays = vec![self.relay_addr.clone()];
        // On loopback the DHT would hand out directly dialable addresses, hiding the relay path
        // these tests are about.
        cfg.enable_dht = false;
        cfg.reserve = reserve;
        cfg.access = access;
        Tunnel::spawn(cfg, self.cancel.clone(), &self.tracker).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A TCP echo server on 127.0.0.1:0 that echoes until the client half-closes, then closes.
async fn echo_server() -> String {
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

/// Sends `data` on a service stream, half-closes, reads everything back.
async fn echo_through(node: &Tunnel, peer: PeerId, data: &[u8]) -> (Vec<u8>, bool) {
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

struct Pair {
    lab: Lab,
    server: Tunnel,
    client: Tunnel,
    events: broadcast::Receiver<NodeEvent>,
}

/// alice exposes an echo service and authorizes bob; bob is the client.
async fn pair(allowed: Option<HashSet<PeerId>>) -> Pair {
    let lab = Lab::start().await;
    let alice_key = Keypair::generate_ed25519();
    let bob_key = Keypair::generate_ed25519();
    let bob_id = bob_key.public().to_peer_id();
    let access = AccessList::from_keys(&keys_of(&[bob_id]));
    let (server, mut ev) = lab.node(alice_key, true, access.clone());
    wait_for(&mut ev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;
    let spec = ServiceSpec {
        name: "echo".into(),
        local_address: echo_server().await,
        allowed_peers: allowed,
    };
    service::expose(&server, spec, access, lab.cancel.clone(), &lab.tracker).unwrap();
    let (client, mut cev) =
        lab.node(bob_key, false, AccessList::from_keys(&keys_of(&[server.node().peer_id()])));
    // Learn our observed addresses from the relay before dialing through it (DCUtR needs them).
    wait_for(&mut cev, |e| matches!(e, NodeEvent::Identified { .. })).await;
    Pair { lab, server, client, events: cev }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_stream_is_byte_exact_then_direct() {
    let mut p = pair(None).await;
    let data: Vec<u8> =
        (0..4 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let (out, relayed) = echo_through(&p.client, p.server.node().peer_id(), &data).await;
    assert!(out == data, "echo differs: {} bytes back of {}", out.len(), data.len());
    assert!(relayed, "the first stream goes through the relay circuit");
    // The circuit runs over the server's reservation connection, which must be its TCP one (AES,
    // large yamux frames), not the QUIC twin it also holds to the relay. An inbound circuit names
    // that connection as its local address.
    let paths = p.server.node().paths(p.client.node().peer_id()).await.unwrap();
    let circuit = paths.iter().find(|c| c.relayed).expect("the server sees the relayed connection");
    assert!(!circuit.is_quic(), "the reservation runs over QUIC: {}", circuit.remote_addr);
    wait_for(&mut p.events, |e| matches!(e, NodeEvent::HolePunched { .. })).await;
    let (out, relayed) = echo_through(&p.client, p.server.node().peer_id(), &data).await;
    assert!(out == data);
    assert!(!relayed, "after DCUtR, new streams use the direct connection");
    drop(p.lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_streams_and_half_close() {
    let p = pair(None).await;
    let peer = p.server.node().peer_id();
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let client = p.client.clone();
        tasks.push(tokio::spawn(async move {
            let data = vec![i; 256 * 1024 + i as usize];
            let (out, _) = echo_through(&client, peer, &data).await;
            assert_eq!(out, data);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Half-close: the server side sees EOF and can still answer after it.
    let (stream, _) = service::connect(&p.client, peer, "echo").await.unwrap();
    let (mut r, mut w) = stream.split();
    w.write_all(b"tail").await.unwrap();
    w.close().await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"tail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_errors_not_hangs() {
    // The service allows nobody in particular: bob is authorized but not in allowed_peers.
    // It is refused at negotiation, before any byte flows.
    let p = pair(Some(HashSet::new())).await;
    let err = service::connect(&p.client, p.server.node().peer_id(), "echo")
        .await
        .err()
        .expect("an error");
    assert!(err.to_string().contains("does not offer /peerup/echo/1.0.0"), "{err}");

    // A name that is no service name is its own error, found before anything is sent (it was
    // "cannot build the network stack: …" once).
    let err = service::connect(&p.client, p.server.node().peer_id(), "no such/name")
        .await
        .err()
        .expect("an error");
    assert!(matches!(err, service::ConnectError::BadName(_)), "{err}");
    assert!(!err.to_string().contains("network stack"), "{err}");

    // An unexposed service is refused at negotiation.
    let err = service::connect(&p.client, p.server.node().peer_id(), "nope")
        .await
        .err()
        .expect("an error");
    assert!(err.to_string().contains("does not offer"), "{err}");

    // A stranger is refused at the connection.
    let (stranger, mut sev) = p.lab.node(Keypair::generate_ed25519(), true, AccessList::open());
    let err =
        tokio::time::timeout(WAIT, service::connect(&stranger, p.server.node().peer_id(), "echo"))
            .await
            .expect("no hang")
            .err()
            .expect("an error");
    assert!(err.to_string().contains("closed the connection"), "{err}");

    // ... and on a connection the server dialled itself (not gated), the stream is refused.
    wait_for(&mut sev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;
    let _ = service::connect(&p.server, stranger.node().peer_id(), "anything").await;
    assert!(
        !p.server.node().paths(stranger.node().peer_id()).await.unwrap().is_empty(),
        "server dialled the stranger"
    );
    let err = service::connect(&stranger, p.server.node().peer_id(), "echo")
        .await
        .err()
        .expect("an error");
    assert!(err.to_string().contains("does not offer /peerup/echo/1.0.0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_local_port_resets_only_that_stream() {
    let lab = Lab::start().await;
    let bob_key = Keypair::generate_ed25519();
    let access = AccessList::from_keys(&keys_of(&[bob_key.public().to_peer_id()]));
    let (server, mut ev) = lab.node(Keypair::generate_ed25519(), true, access.clone());
    wait_for(&mut ev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
    service::expose(
        &server,
        ServiceSpec { name: "dead".into(), local_address: closed, allowed_peers: None },
        access.clone(),
        lab.cancel.clone(),
        &lab.tracker,
    )
    .unwrap();
    service::expose(
        &server,
        ServiceSpec {
            name: "echo".into(),
            local_address: echo_server().await,
            allowed_peers: None,
        },
        access,
        lab.cancel.clone(),
        &lab.tracker,
    )
    .unwrap();
    let (client, _) = lab.node(bob_key, false, AccessList::open());
    let (mut dead, _) = service::connect(&client, server.node().peer_id(), "dead").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(WAIT, dead.read_to_end(&mut buf)).await.expect("no hang");
    assert!(r.is_err() || buf.is_empty());
    let (out, _) = echo_through(&client, server.node().peer_id(), b"still works").await;
    assert_eq!(out, b"still works");
}

/// A stock rust-libp2p peer that offers only Noise and yamux (as Go peer-up and js-libp2p nodes
/// do) reserves on our relay, reaches our node through the circuit, pings it and uses a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_noise_only_peer_interoperates() {
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{StreamProtocol, identify, noise, ping, relay, tcp, yamux};

    #[derive(NetworkBehaviour)]
    struct Stock {
        relay: relay::client::Behaviour,
        identify: identify::Behaviour,
        ping: ping::Behaviour,
        stream: libp2p_stream::Behaviour,
    }

    let lab = Lab::start().await;
    let stock_key = Keypair::generate_ed25519();
    let stock_id = stock_key.public().to_peer_id();
    let access = AccessList::from_keys(&keys_of(&[stock_id]));
    let (alice, mut ev) = lab.node(Keypair::generate_ed25519(), true, access.clone());
    wait_for(&mut ev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;
    let spec = ServiceSpec {
        name: "echo".into(),
        local_address: echo_server().await,
        allowed_peers: None,
    };
    service::expose(&alice, spec, access, lab.cancel.clone(), &lab.tracker).unwrap();

    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(stock_key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| Stock {
            relay,
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            stream: libp2p_stream::Behaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut control = swarm.behaviour().stream.new_control();
    swarm.listen_on(lab.relay_addr.clone().with(Protocol::P2pCircuit)).unwrap();
    let alice_id = alice.node().peer_id();
    let circuit = lab.relay_addr.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(alice_id));

    // Drive the stock swarm: reservation, then a circuit to alice, then a ping over it.
    let drive = async {
        let (mut reserved, mut dialled, mut pinged) = (false, false, false);
        while !(reserved && pinged) {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(StockEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => {
                    reserved = true;
                }
                SwarmEvent::Behaviour(StockEvent::Ping(ping::Event {
                    peer,
                    result: Ok(_),
                    ..
                })) if peer == alice_id => {
                    pinged = true;
                }
                _ => {}
            }
            if reserved && !dialled {
                swarm.dial(circuit.clone()).unwrap();
                dialled = true;
            }
        }
        swarm
    };
    let mut swarm =
        tokio::time::timeout(WAIT, drive).await.expect("stock peer reserved and pinged");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });

    let stream =
        control.open_stream(alice_id, StreamProtocol::new("/peerup/echo/1.0.0")).await.unwrap();
    let (mut r, mut w) = stream.split();
    w.write_all(b"interop").await.unwrap();
    w.close().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut out)).await.unwrap().unwrap();
    assert_eq!(out, b"interop");
}

/// A node on loopback with no relay, and its TCP listen address.
async fn direct_node(
    lab: &Lab,
    key: Keypair,
    access: AccessList,
    bulk: bool,
) -> (Tunnel, Multiaddr) {
    let mut cfg = NodeConfig::new(key);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.enable_dht = false;
    cfg.access = access;
    cfg.enable_bulk = bulk;
    let (node, mut ev) = Tunnel::spawn(cfg, lab.cancel.clone(), &lab.tracker).unwrap();
    let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(_))).await {
        NodeEvent::Listening(a) => a,
        _ => unreachable!(),
    };
    (node, addr)
}

/// Over a direct TCP connection, service connections take the bulk path (their own TLS
/// connection beside yamux): byte-exact, half-close included; a peer that may not use the service
/// is refused there too; and a peer without the bulk path is reached over yamux as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_path_on_direct_connections() {
    let lab = Lab::start().await;
    let bob_key = Keypair::generate_ed25519();
    let bob_id = bob_key.public().to_peer_id();
    let access = AccessList::from_keys(&keys_of(&[bob_id]));
    let (server, server_addr) =
        direct_node(&lab, Keypair::generate_ed25519(), access.clone(), true).await;
    let echo = echo_server().await;
    let spec =
        ServiceSpec { name: "echo".into(), local_address: echo.clone(), allowed_peers: None };
    service::expose(&server, spec, access.clone(), lab.cancel.clone(), &lab.tracker).unwrap();
    let (client, _) = direct_node(&lab, bob_key, AccessList::open(), true).await;
    client.node().add_addresses(server.node().peer_id(), vec![server_addr.clone()]).await.unwrap();

    // The first connection dials the peer and rides yamux, and the bulk path is probed in the
    // background; once the probe has answered, connections take it.
    let data: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let (out, relayed) = echo_through(&client, server.node().peer_id(), &data).await;
    assert!(out == data && !relayed);
    assert_eq!(server.node().metrics().bulk_connections.get(), 0, "not before the probe answered");
    let mut tries = 0;
    while server.node().metrics().bulk_connections.get() == 0 {
        tries += 1;
        assert!(tries < 200, "the bulk path was never taken");
        let (out, _) = echo_through(&client, server.node().peer_id(), b"until bulk").await;
        assert_eq!(out, b"until bulk");
    }
    for _ in 0..3 {
        let (out, _) = echo_through(&client, server.node().peer_id(), &data).await;
        assert!(out == data, "bulk echo differs");
    }
    assert_eq!(
        server.node().metrics().bulk_connections.get(),
        4,
        "the direct connections went bulk"
    );

    // At most MAX_CLIENT_BULK bulk connections at once; more connections ride yamux streams.
    let mut held = Vec::new();
    for _ in 0..peerup_core::tunnel::bulk::MAX_CLIENT_BULK {
        held.push(service::connect(&client, server.node().peer_id(), "echo").await.unwrap().0);
    }
    let (mut extra, _) = service::connect(&client, server.node().peer_id(), "echo").await.unwrap();
    extra.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    extra.read_exact(&mut one).await.unwrap();
    let cap = peerup_core::tunnel::bulk::MAX_CLIENT_BULK as u64;
    // The server counts a bulk connection before it answers, so these are settled.
    let count = server.node().metrics().bulk_connections.get();
    assert_eq!(count, 4 + cap, "the first {cap} went bulk, the extra one did not");
    drop((held, extra));

    // Revoking the peer (what the daemon does on `auth remove`) ends its open bulk connections.
    let (mut open, _) = service::connect(&client, server.node().peer_id(), "echo").await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    open.read_exact(&mut four).await.unwrap();
    assert_eq!(server.node().metrics().bulk_connections.get(), 5 + cap);
    server.disconnect(bob_id).await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, open.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the bulk connection ends when the peer is revoked");

    // A peer that is not authorized is dropped on the bulk path itself, without an answer.
    let tcp_addr: std::net::SocketAddr =
        peerup_core::netinfo::socket_of(&server_addr).expect("a TCP listen address");
    let stranger_tls =
        peerup_core::transport::tls::Config::new(&Keypair::generate_ed25519()).unwrap();
    let denials = server.node().metrics().auth_denials.get();
    let err =
        peerup_core::tunnel::bulk::dial(stranger_tls, server.node().peer_id(), tcp_addr, "echo")
            .await
            .err()
            .expect("a stranger is refused");
    assert!(matches!(err, peerup_core::tunnel::bulk::BulkError::Connect(_)), "{err}");
    assert_eq!(server.node().metrics().auth_denials.get(), denials + 1);
    // Dialing the wrong peer ID at that address is caught by the handshake.
    let bob_tls = peerup_core::transport::tls::Config::new(&Keypair::generate_ed25519()).unwrap();
    let err =
        peerup_core::tunnel::bulk::dial(bob_tls, PeerId::random(), tcp_addr, "echo").await.err();
    assert!(matches!(err, Some(peerup_core::tunnel::bulk::BulkError::WrongPeer(_))), "{err:?}");

    // A server without the bulk path: connections fall back to yamux and still work.
    let carol_key = Keypair::generate_ed25519();
    let carol_access = AccessList::from_keys(&keys_of(&[carol_key.public().to_peer_id()]));
    let (old, old_addr) =
        direct_node(&lab, Keypair::generate_ed25519(), carol_access.clone(), false).await;
    let spec = ServiceSpec { name: "echo".into(), local_address: echo, allowed_peers: None };
    service::expose(&old, spec, carol_access, lab.cancel.clone(), &lab.tracker).unwrap();
    let (carol, _) = direct_node(&lab, carol_key, AccessList::open(), true).await;
    carol.node().add_addresses(old.node().peer_id(), vec![old_addr]).await.unwrap();
    for _ in 0..2 {
        let (out, _) = echo_through(&carol, old.node().peer_id(), b"over yamux").await;
        assert_eq!(out, b"over yamux");
    }
    assert_eq!(old.node().metrics().bulk_connections.get(), 0);
}

/// Two nodes that only reach each other through the relay (neither listens, so no hole punch
/// can succeed): once the relayed route is probed, service connections take the bulk path on
/// legs the relay joins, byte-exact; at most `MAX_RELAYED_BULK` at once, the rest on yamux.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_path_through_the_relay() {
    bulk_through_relay(true).await;
}

/// The same through a relay that offers no legs: circuits of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_path_through_a_relay_without_legs() {
    bulk_through_relay(false).await;
}

async fn bulk_through_relay(legs: bool) {
    let lab = Lab::start_with(RelayLimits { legs, ..RelayLimits::default() }).await;
    let bob_key = Keypair::generate_ed25519();
    let access = AccessList::from_keys(&keys_of(&[bob_key.public().to_peer_id()]));
    let unreachable = |key: Keypair, reserve: bool, access: AccessList| {
        let mut cfg = NodeConfig::new(key);
        cfg.listen = Vec::new();
        cfg.relays = vec![lab.relay_addr.clone()];
        cfg.enable_dht = false;
        cfg.reserve = reserve;
        cfg.access = access;
        Tunnel::spawn(cfg, lab.cancel.clone(), &lab.tracker).unwrap()
    };
    let (server, mut ev) = unreachable(Keypair::generate_ed25519(), true, access.clone());
    wait_for(&mut ev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;
    let spec = ServiceSpec {
        name: "echo".into(),
        local_address: echo_server().await,
        allowed_peers: None,
    };
    service::expose(&server, spec, access, lab.cancel.clone(), &lab.tracker).unwrap();
    let (client, _) =
        unreachable(bob_key, false, AccessList::from_keys(&keys_of(&[server.node().peer_id()])));

    let data: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    let (out, relayed) = echo_through(&client, server.node().peer_id(), &data).await;
    assert!(out == data && relayed, "the first connection rides yamux on the relayed connection");
    assert_eq!(server.node().metrics().bulk_connections.get(), 0, "not before the probe answered");
    let mut tries = 0;
    while server.node().metrics().bulk_connections.get() == 0 {
        tries += 1;
        assert!(tries < 200, "the relayed bulk path was never taken");
        let (out, relayed) = echo_through(&client, server.node().peer_id(), b"until bulk").await;
        assert!(out == b"until bulk" && relayed);
    }
    let (out, relayed) = echo_through(&client, server.node().peer_id(), &data).await;
    assert!(out == data && relayed, "relayed bulk echo differs");
    assert_eq!(server.node().metrics().bulk_connections.get(), 2);

    // At most MAX_RELAYED_BULK at once: the next connection rides a yamux stream.
    let mut held = Vec::new();
    for _ in 0..peerup_core::tunnel::bulk::MAX_RELAYED_BULK {
        let (mut io, path) =
            service::connect(&client, server.node().peer_id(), "echo").await.unwrap();
        assert!(path.relayed);
        io.write_all(b"held").await.unwrap();
        let mut four = [0u8; 4];
        io.read_exact(&mut four).await.unwrap();
        held.push(io);
    }
    let cap = peerup_core::tunnel::bulk::MAX_RELAYED_BULK as u64;
    assert_eq!(server.node().metrics().bulk_connections.get(), 2 + cap);
    let (out, relayed) = echo_through(&client, server.node().peer_id(), &data).await;
    assert!(out == data && relayed);
    assert_eq!(server.node().metrics().bulk_connections.get(), 2 + cap, "the extra one went yamux");
    // Every bulk connection, and the probe before them.
    let joined = if legs { 3 + cap } else { 0 };
    assert_eq!(lab.relay.node().metrics().relay_legs.get(), joined, "bulk connections on legs");
}
