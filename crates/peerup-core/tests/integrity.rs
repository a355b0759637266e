//! The data path's integrity between two nodes on loopback: a bulk connection that is cut reaches
//! the local applications at both ends as a reset (ECONNRESET), never as a clean end of file that
//! would make a truncated transfer look complete.

use std::io;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::gate::AccessList;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::service::{self, ServiceSpec, pipe};
use peerup_core::tunnel::Tunnel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/events.rs"]
mod events;
use events::{WAIT, wait_for};

/// A node on 127.0.0.1 with the bulk path, and its TCP listen address.
async fn node(
    key: Keypair,
    access: AccessList,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> (Tunnel, Multiaddr) {
    let mut cfg = NodeConfig::new(key);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.enable_dht = false;
    cfg.access = access;
    cfg.enable_bulk = true;
    let (node, mut ev) = Tunnel::spawn(cfg, cancel.clone(), tracker).unwrap();
    let addr = match wait_for(&mut ev, |e| matches!(e, NodeEvent::Listening(_))).await {
        NodeEvent::Listening(a) => a,
        _ => unreachable!(),
    };
    (node, addr)
}

/// A local service on 127.0.0.1:0 whose accepted sockets go to the test.
async fn service_socket() -> (String, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            if tx.send(sock).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Opens a connection to `peer`'s service as `peerup proxy` does: a local TCP connection (the
/// application's end is returned) piped to the service connection.
async fn proxied(client: &Tunnel, peer: PeerId, name: &str) -> TcpStream {
    let (io, _) = service::connect(client, peer, name).await.expect("service connection");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (app, piped) =
        tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
    tokio::spawn(pipe::pipe(io, piped.unwrap().0));
    app.unwrap()
}

/// Reads until the end: the bytes, and how it ended (Ok: FIN; Err: an error, such as a reset).
async fn read_until_end(sock: &mut TcpStream) -> (u64, io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => total += n as u64,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the socket was neither closed nor reset");
    (total, end)
}

fn assert_reset(end: io::Result<()>, who: &str) {
    let err = end.expect_err(&format!("{who}: a cut connection looked like a clean end of file"));
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{who}: {err}");
}

/// A bulk connection cut midway, first by the far service (a reset while it streams), then by
/// the server revoking the client (with a response sent and the service waiting): each time the
/// local applications get ECONNRESET, not EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_bulk_connection_resets_the_local_sockets() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let bob_key = Keypair::generate_ed25519();
    let bob = bob_key.public().to_peer_id();
    let mut keys = AuthorizedKeys::default();
    keys.add(Entry::new(bob, None)).unwrap();
    let access = AccessList::from_keys(&keys);
    let tracker = TaskTracker::new();
    let (server, server_addr) =
        node(Keypair::generate_ed25519(), access.clone(), &cancel, &tracker).await;
    let (feed_addr, mut accepted) = service_socket().await;
    let (echo_addr, mut echoes) = service_socket().await;
    for (name, local_address) in [("feed", feed_addr), ("echo", echo_addr)] {
        let spec = ServiceSpec { name: name.into(), local_address, allowed_peers: None };
        service::expose(&server, spec, access.clone(), cancel.clone(), &tracker).unwrap();
    }
    tokio::spawn(async move {
        while let Some(mut sock) = echoes.recv().await {
            tokio::spawn(async move {
                let (mut r, mut w) = sock.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let (client, _) = node(bob_key, AccessList::open(), &cancel, &tracker).await;
    client.node().add_addresses(server.node().peer_id(), vec![server_addr]).await.unwrap();

    // The first connections ride yamux while the bulk path is probed in the background.
    let mut tries = 0;
    while server.node().metrics().bulk_connections.get() == 0 {
        tries += 1;
        assert!(tries < 200, "the bulk path was never taken");
        let mut app = proxied(&client, server.node().peer_id(), "echo").await;
        app.write_all(b"until bulk").await.unwrap();
        app.shutdown().await.unwrap();
        let (n, end) = read_until_end(&mut app).await;
        assert!(n == 10 && end.is_ok(), "the echo ends cleanly: {end:?}");
    }

    // The far service resets its socket while it streams.
    let bulk = server.node().metrics().bulk_connections.get();
    let mut app = proxied(&client, server.node().peer_id(), "feed").await;
    let mut svc = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    assert_eq!(server.node().metrics().bulk_connections.get(), bulk + 1, "on the bulk path");
    let sent = vec![0x5a; 512 * 1024];
    let mut got = vec![0u8; 256 * 1024];
    let (wrote, read) = tokio::time::timeout(WAIT, async {
        tokio::join!(svc.write_all(&sent), app.read_exact(&mut got))
    })
    .await
    .expect("half the stream arrives while the rest is in flight");
    wrote.unwrap();
    read.unwrap();
    svc.set_zero_linger().unwrap();
    drop(svc);
    let (rest, end) = read_until_end(&mut app).await;
    assert!(rest <= 256 * 1024);
    assert_reset(end, "the application, after the far service's reset");

    // The server revokes the client after a whole response; the service then waits for more.
    let bulk = server.node().metrics().bulk_connections.get();
    let mut app = proxied(&client, server.node().peer_id(), "feed").await;
    let mut svc = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    assert_eq!(server.node().metrics().bulk_connections.get(), bulk + 1, "on the bulk path");
    let response = vec![0xa5; 1024 * 1024];
    let mut got = vec![0u8; response.len()];
    let (wrote, read) = tokio::time::timeout(WAIT, async {
        tokio::join!(svc.write_all(&response), app.read_exact(&mut got))
    })
    .await
    .expect("the response arrives");
    wrote.unwrap();
    read.unwrap();
    server.disconnect(bob).await.unwrap();
    let ((_, app_end), (_, svc_end)) =
        tokio::join!(read_until_end(&mut app), read_until_end(&mut svc));
    assert_reset(app_end, "the application, after the revocation");
    assert_reset(svc_end, "the service, after the revocation");
}
