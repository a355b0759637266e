//! The bulk path's admission against hostile peers, on loopback: strangers are dropped right
//! after the TLS handshake and leave nothing behind, a handshake that stalls is dropped at its
//! deadline, and one address gets only so many bulk connections at once.
//!
//! `ten_thousand_strangers` makes 10,000 handshakes, each verifying two Ed25519 signatures: it
//! runs in the normal suite because the workspace builds curve25519-dalek optimized even in
//! debug builds (unoptimized, a verification took about 80 ms, and the test 15 minutes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use multistream_select::{Negotiated, Version, dialer_select_proto};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::gate::AccessList;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::tunnel::Tunnel;
use peerup_core::tunnel::bulk::{self, BulkError};
use tokio::sync::Semaphore;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/events.rs"]
mod events;
use events::{WAIT, wait_for};

/// The tests run one at a time: `ten_thousand_strangers` measures the process's memory.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A node on 127.0.0.1 that authorizes `friend` only, with the bulk path on.
struct Server {
    node: Tunnel,
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn server(friend: PeerId, max_inbound_per_ip: Option<usize>) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut keys = AuthorizedKeys::default();
    keys.add(Entry::new(friend, None)).unwrap();
    let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.enable_dht = false;
    cfg.watch_network = false;
    cfg.access = AccessList::from_keys(&keys);
    cfg.max_inbound_per_ip = max_inbound_per_ip;
    let cancel = CancellationToken::new();
    let (node, mut ev) = Tunnel::spawn(cfg, cancel.clone(), &TaskTracker::new()).unwrap();
    let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(_))).await {
        NodeEvent::Listening(a) => a,
        _ => unreachable!(),
    };
    let addr = peerup_core::netinfo::socket_of(&addr).expect("a TCP listen address");
    Server { node, addr, cancel }
}

/// A bulk connection to `server` as `key` asking for `service` ("" is a probe).
async fn dial(server: &Server, key: &Keypair, service: &str) -> Result<(), BulkError> {
    let tls = peerup_core::transport::tls::Config::new(key).unwrap();
    let dial = bulk::dial(tls, server.node.node().peer_id(), server.addr, service);
    tokio::time::timeout(WAIT, dial).await.expect("an answer or a close, not a hang").map(|_| ())
}

/// A connection that names the bulk path and then says nothing (no TLS ClientHello).
async fn silent(server: &Server) -> Negotiated<Compat<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The server confirms the protocol before its TLS handshake starts waiting.
    let (_, io) = dialer_select_proto(tcp.compat(), [bulk::PROTOCOL], Version::V1).await.unwrap();
    io
}

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// `n` probes from `n` fresh identities, `CONCURRENT` at a time: none gets an answer.
async fn strangers(server: &Server, n: usize) {
    const CONCURRENT: usize = 16;
    let limit = Arc::new(Semaphore::new(CONCURRENT));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let tls = peerup_core::transport::tls::Config::new(&Keypair::generate_ed25519()).unwrap();
        let (peer, addr) = (server.node.node().peer_id(), server.addr);
        // Every other one asks for a service instead of probing.
        let service = if i % 2 == 0 { "" } else { "echo" };
        tasks.spawn(async move {
            let answer = tokio::time::timeout(WAIT, bulk::dial(tls, peer, addr, service)).await;
            drop(permit);
            match answer.expect("a close, not a hang") {
                Err(BulkError::Connect(_)) => {}
                Ok(_) => panic!("a stranger's bulk request was answered Ok"),
                Err(e) => panic!("a stranger got an answer: {e}"),
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Strangers (fresh identities, as many as they like) get no answer on the bulk path, not even
/// to a probe: each is dropped right after the TLS handshake, counted as a denial, and leaves
/// no entry behind. A friend's probe is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_no_answer_and_leave_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let friend = Keypair::generate_ed25519();
    let s = server(friend.public().to_peer_id(), None).await;
    strangers(&s, 32).await;
    assert_eq!(s.node.node().metrics().auth_denials.get(), 32, "every stranger counted");
    assert_eq!(s.node.bulk_peers(), 0, "no stranger is tracked");
    dial(&s, &friend, "").await.expect("a friend's probe is answered");
    let err = dial(&s, &friend, "echo").await.unwrap_err();
    assert!(matches!(err, BulkError::Refused), "no such service: a refusal, {err}");
    assert_eq!(s.node.node().metrics().auth_denials.get(), 33, "no such service counts too");
}

/// 10,000 bulk handshakes from 10,000 fresh identities leave no entry behind, and the process's
/// memory where it was (within 5 MiB) once they are over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_strangers() {
    const STRANGERS: usize = 10_000;
    const WARM_UP: usize = 500;
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(PeerId::random(), None).await;
    // The allocator's arenas and the runtime's buffers grow to their working size first.
    strangers(&s, WARM_UP).await;
    let before = rss();
    let start = Instant::now();
    strangers(&s, STRANGERS).await;
    let took = start.elapsed();
    let after = rss();
    let grew = after.saturating_sub(before);
    eprintln!(
        "{STRANGERS} strangers in {took:.1?} ({:.2?} each): RSS {} -> {} KiB (+{} KiB)",
        took / STRANGERS as u32,
        before / 1024,
        after / 1024,
        grew / 1024
    );
    assert_eq!(s.node.node().metrics().auth_denials.get(), (WARM_UP + STRANGERS) as u64);
    assert_eq!(s.node.bulk_peers(), 0, "no stranger is tracked");
    assert!(grew <= 5 << 20, "RSS grew by {} KiB", grew / 1024);
}

/// A connection that names the bulk path and then stalls is dropped at the handshake's deadline
/// (on the swarm's listener, libp2p's 10 s connection timeout used to be the only one; legs
/// and punched connections had none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_dropped_at_its_deadline() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(PeerId::random(), None).await;
    let mut conn = silent(&s).await;
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(WAIT, conn.read(&mut buf)).await;
    let took = start.elapsed();
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed by the server: {read:?}");
    assert!(took + Duration::from_millis(100) >= bulk::SETUP_TIMEOUT, "not before it: {took:?}");
    assert!(took < bulk::SETUP_TIMEOUT + Duration::from_secs(2), "but at it: {took:?}");
}

/// One address gets only the node's `max_inbound_per_ip` bulk connections at once, handshaking
/// or open; a place is taken again once one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_only_so_many_bulk_connections() {
    let _one = ONE_AT_A_TIME.lock().await;
    let friend = Keypair::generate_ed25519();
    let s = server(friend.public().to_peer_id(), Some(2)).await;
    let held = [silent(&s).await, silent(&s).await];
    let err = dial(&s, &friend, "").await.unwrap_err();
    assert!(matches!(err, BulkError::Connect(_)), "a third from 127.0.0.1 is refused: {err}");
    drop(held);
    // The server sees those two end, and gives their places back.
    let again = tokio::time::timeout(WAIT, async {
        while dial(&s, &friend, "").await.is_err() {
            tokio::task::yield_now().await;
        }
    });
    again.await.expect("a place again once the others ended");
}
