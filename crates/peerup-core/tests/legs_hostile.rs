//! Relay legs ([`peerup_core::tunnel::legs`]) against peers that do not play by the rules, on loopback:
//! leg offers from peers that are not this node's relays, and TCP connections to a relay that
//! negotiate a leg and never name it.

use std::net::{IpAddr, SocketAddr};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use multistream_select::{Version, dialer_select_proto};
use peerup_core::gate::AccessList;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::relay::RelayLimits;
use peerup_core::service::{self, ServiceSpec};
use peerup_core::tunnel::Tunnel;
use peerup_core::tunnel::legs::{INCOMING, OPEN, PAIRING_TIMEOUT, SECURITY};
use tokio::net::TcpSocket;
use tokio_util::compat::TokioAsyncReadCompatExt;

#[path = "support/events.rs"]
mod events;
#[path = "support/lab.rs"]
mod lab;

use events::{WAIT, wait_for};
use lab::{Forwarder, Lab, echo_server, echo_through, keys_of, listening_tcp};

/// The answer byte of an accepted request or offer, and of a refusal.
const OK: u8 = 0;
const REFUSED: u8 = 1;

/// A hello naming `peer`, with a token when `token` (what a relay sends a target).
fn hello(peer: PeerId, token: bool) -> Vec<u8> {
    let id = peer.to_bytes();
    let mut out = vec![1, u8::try_from(id.len()).unwrap()];
    out.extend_from_slice(&id);
    if token {
        out.extend_from_slice(&[7u8; 16]);
    }
    out
}

/// Sends `request` on a new stream of `protocol` from `node` to `peer` and returns the answer's
/// status byte.
async fn ask(node: &Tunnel, peer: PeerId, protocol: &'static str, request: &[u8]) -> u8 {
    let (mut s, _) = node.node().open_stream(peer, StreamProtocol::new(protocol)).await.unwrap();
    // A refusal may come before the request is read: a failed write is not the point here.
    let _ = s.write_all(request).await;
    let _ = s.flush().await;
    let mut status = [0u8; 1];
    tokio::time::timeout(WAIT, s.read_exact(&mut status)).await.expect("answered").unwrap();
    status[0]
}

fn loopback_tcp() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

/// A node takes leg offers only from a relay it holds a reservation on. Mallory, configured as
/// one of its relays but holding no reservation for it, is refused, and no leg goes to her
/// (through the forwarder its connection to her runs through); carol, a connected and
/// authorized peer but no relay, cannot even negotiate an offer. The relay it does hold a
/// reservation on gets its offers taken, for dialers the node authorizes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leg_offers_only_from_relays_with_a_reservation() {
    let lab = Lab::start(RelayLimits::default()).await;
    let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
    cfg.listen = loopback_tcp();
    let (mallory, mut mallory_ev) = lab.spawn(cfg);
    let mallory_addr = listening_tcp(&mut mallory_ev).await;
    let upstream = peerup_core::netinfo::socket_of(&mallory_addr).unwrap();
    let forwarder = Forwarder::start(upstream, SECURITY.as_bytes()).await;
    let via_forwarder: Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", forwarder.addr.port(), mallory.node().peer_id())
            .parse()
            .unwrap();

    let carol_key = Keypair::generate_ed25519();
    let carol_id = carol_key.public().to_peer_id();
    let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
    cfg.listen = loopback_tcp();
    cfg.relays = vec![lab.relay_addr.clone(), via_forwarder];
    cfg.reserve = true;
    cfg.access = keys_of(&[carol_id]);
    let (target, mut ev) = lab.spawn(cfg);
    let target_addr = listening_tcp(&mut ev).await;
    let relay_id = lab.relay.node().peer_id();
    wait_for(
        &mut ev,
        |e| matches!(e, NodeEvent::ReservationAccepted { relay, .. } if *relay == relay_id),
    )
    .await;
    let target_id = target.node().peer_id();
    wait_for(
        &mut mallory_ev,
        |e| matches!(e, NodeEvent::Identified { peer, .. } if *peer == target_id),
    )
    .await;

    let status = ask(&mallory, target_id, INCOMING, &hello(carol_id, true)).await;
    assert_eq!(status, REFUSED, "an offer from a relay without our reservation");
    assert_eq!(forwarder.marked(), 0, "a leg was dialled to mallory");

    let mut cfg = NodeConfig::new(carol_key);
    cfg.relays = vec![lab.relay_addr.clone()];
    cfg.reserve = false;
    let (carol, _) = lab.spawn(cfg);
    carol.node().add_addresses(target_id, vec![target_addr]).await.unwrap();
    let offer = carol.node().open_stream(target_id, StreamProtocol::new(INCOMING)).await;
    assert!(offer.is_err(), "an offer from a peer that is no relay of ours was negotiated");

    // The relay with our reservation: carol's request reaches the target, which takes it.
    let status = ask(&carol, relay_id, OPEN, &hello(target_id, false)).await;
    assert_eq!(status, OK, "the target refused its own relay's offer for carol");
    // A dialer the target does not authorize is refused by the target, not sent a leg.
    let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
    cfg.relays = vec![lab.relay_addr.clone()];
    cfg.reserve = false;
    let (dave, _) = lab.spawn(cfg);
    let status = ask(&dave, relay_id, OPEN, &hello(target_id, false)).await;
    assert_eq!(status, REFUSED, "the target took an offer for a dialer it does not authorize");
    assert_eq!(lab.relay.node().metrics().relay_legs.get(), 0, "no pair was joined");
}

/// A TCP connection from `from` to the relay at `relay` that negotiates a leg and sends nothing
/// more; `None` when the relay closed it during the negotiation.
async fn silent_leg(
    relay: SocketAddr,
    from: IpAddr,
) -> Option<multistream_select::Negotiated<tokio_util::compat::Compat<tokio::net::TcpStream>>> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = socket.connect(relay).await.unwrap();
    let negotiated = dialer_select_proto(tcp.compat(), [SECURITY], Version::V1).await;
    negotiated.ok().map(|(_, io)| io)
}

/// One address floods a relay with legs that never send their token, as many as the relay
/// takes in total. Beyond its address's share they are closed at once (before any within the
/// share, which wait for their token until [`PAIRING_TIMEOUT`]), and a relayed bulk connection
/// between two peers at another address still gets its legs joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legs_without_a_token_are_capped_per_address() {
    let per_ip = 4;
    let limits =
        RelayLimits { max_circuits: 8, max_connections_per_ip: per_ip, ..RelayLimits::default() };
    let lab = Lab::start(limits).await;
    let bob_key = Keypair::generate_ed25519();
    let access = keys_of(&[bob_key.public().to_peer_id()]);
    let unreachable = |key: Keypair, reserve: bool, access: AccessList| {
        let mut cfg = NodeConfig::new(key);
        cfg.listen = Vec::new();
        cfg.relays = vec![lab.relay_addr.clone()];
        cfg.reserve = reserve;
        cfg.access = access;
        lab.spawn(cfg)
    };
    let (server, mut ev) = unreachable(Keypair::generate_ed25519(), true, access.clone());
    wait_for(&mut ev, |e| matches!(e, NodeEvent::ReservationAccepted { .. })).await;
    let spec = ServiceSpec {
        name: "echo".into(),
        local_address: echo_server().await,
        allowed_peers: None,
    };
    service::expose(&server, spec, access, lab.cancel.clone(), &lab.tracker).unwrap();
    let (client, _) = unreachable(bob_key, false, keys_of(&[server.node().peer_id()]));
    // Until the relayed route is probed, connections ride yamux; then they take legs.
    let mut tries = 0;
    while server.node().metrics().bulk_connections.get() == 0 {
        tries += 1;
        assert!(tries < 200, "the relayed bulk path was never taken");
        let (out, relayed) = echo_through(&client, server.node().peer_id(), b"until bulk").await;
        assert!(out == b"until bulk" && relayed);
    }
    let joined = lab.relay.node().metrics().relay_legs.get();

    // Two places per circuit for legs without a token, in total: the flood asks for all.
    let flood = 2 * 8;
    let started = tokio::time::Instant::now();
    let mut legs = Vec::new();
    for _ in 0..flood {
        legs.push(silent_leg(lab.relay_socket(), IpAddr::from([127, 0, 0, 2])).await);
    }
    let (out, relayed) = echo_through(&client, server.node().peer_id(), b"past the flood").await;
    assert!(out == b"past the flood" && relayed);
    let elapsed = started.elapsed();
    assert!(
        elapsed < PAIRING_TIMEOUT,
        "too slow to tell ({elapsed:?}): the flood's legs may have timed out already"
    );
    assert_eq!(
        lab.relay.node().metrics().relay_legs.get(),
        joined + 1,
        "the bulk connection from 127.0.0.1 did not get its legs past the flood from 127.0.0.2"
    );

    // The order in which the flood's legs were closed.
    let (tx, mut rx) = tokio::sync::mpsc::channel(flood);
    for (i, leg) in legs.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(mut leg) = leg {
                let mut byte = [0u8; 1];
                let _ = leg.read(&mut byte).await;
            }
            let _ = tx.send(i).await;
        });
    }
    let mut closed = Vec::new();
    for _ in 0..flood {
        let limit = PAIRING_TIMEOUT + WAIT;
        closed.push(tokio::time::timeout(limit, rx.recv()).await.expect("closed").unwrap());
    }
    let (first, last) = closed.split_at(flood - per_ip);
    assert!(
        first.iter().all(|&i| i >= per_ip) && last.iter().all(|&i| i < per_ip),
        "closing order {closed:?}: the first {per_ip} should have waited for their tokens"
    );
    eprintln!(
        "{flood} silent legs from one address, {} closed at once, {per_ip} held; a bulk \
         connection from another crossed on legs {elapsed:?} after the flood began",
        flood - per_ip
    );
}
