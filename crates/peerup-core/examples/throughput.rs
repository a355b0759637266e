//! A quick loopback measurement of the tunnel's data path, for A/B work on the core (the full
//! comparison with raw TCP and OpenSSH is `scripts/bench`, in the NAT lab).
//!
//! Two nodes in this process: a client TCP connection → proxy pipe → libp2p stream → service pipe
//! → a TCP sink, all on 127.0.0.1. Prints MiB/s and the process's CPU-seconds per GiB, which
//! carry over between runs far better than throughput on a shared machine.
//!
//! ```text
//! cargo run --release -p peerup-core --example throughput -- [MiB] [direct|relayed] [rtt] [nobulk]
//! ```
//!
//! Direct connections go on the bulk path (`peerup_core::tunnel::bulk`) unless `nobulk` is given.
//!
//! With `rtt`, it also times 2,000 one-byte round trips through the tunnel to an echo server and
//! straight to it, and prints both p50/p99 (µs).

use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use peerup_core::gate::AccessList;
use peerup_core::node::{NodeConfig, NodeEvent};
use peerup_core::relay::RelayLimits;
use peerup_core::service::{self, ServiceSpec, pipe};
use peerup_core::tunnel::Tunnel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("").split(' ').collect();
    let ticks: u64 =
        fields.get(11..13).map_or(0, |f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum());
    ticks as f64 / 100.0
}

async fn first_tcp_addr(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
) -> libp2p::Multiaddr {
    loop {
        if let Ok(NodeEvent::Listening(a)) = events.recv().await
            && a.iter().any(|p| matches!(p, Protocol::Tcp(_)))
        {
            return a;
        }
    }
}

fn config(listen: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(Keypair::generate_ed25519());
    cfg.listen = vec![listen.parse().expect("listen address")];
    cfg.enable_dht = false;
    cfg.access = AccessList::open();
    cfg.enable_bulk = !std::env::args().any(|a| a == "nobulk");
    cfg
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let relayed = args.next().as_deref() == Some("relayed");
    let rest: Vec<String> = args.collect();
    let rtt = rest.iter().any(|a| a == "rtt");
    let bulk = !rest.iter().any(|a| a == "nobulk");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let mut relay_addr = None;
    if relayed {
        let mut cfg = config("/ip4/127.0.0.1/tcp/0");
        cfg.relay_server = Some(RelayLimits { circuit_bytes: u64::MAX, ..RelayLimits::default() });
        cfg.listen_addrs_are_external = true;
        let (relay, mut ev) = Tunnel::spawn(cfg, cancel.clone(), &tracker).expect("relay");
        relay_addr =
            Some(first_tcp_addr(&mut ev).await.with(Protocol::P2p(relay.node().peer_id())));
    }

    // The server node and its sink service.
    let sink = TcpListener::bind("127.0.0.1:0").await.expect("sink");
    let sink_addr = sink.local_addr().expect("sink address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
            });
        }
    });
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("echo");
    let echo_addr = echo.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut server_cfg = config("/ip4/127.0.0.1/tcp/0");
    server_cfg.relays = relay_addr.iter().cloned().collect();
    server_cfg.reserve = relayed;
    server_cfg.listen_addrs_are_external = !relayed;
    let (server, mut server_ev) =
        Tunnel::spawn(server_cfg, cancel.clone(), &tracker).expect("server");
    let server_tcp = first_tcp_addr(&mut server_ev).await;
    if relayed {
        while !matches!(server_ev.recv().await, Ok(NodeEvent::ReservationAccepted { .. })) {}
    }
    let spec = ServiceSpec {
        name: "sink".into(),
        local_address: sink_addr.to_string(),
        allowed_peers: None,
    };
    service::expose(&server, spec, AccessList::open(), cancel.clone(), &tracker).expect("expose");
    let spec = ServiceSpec {
        name: "echo".into(),
        local_address: echo_addr.to_string(),
        allowed_peers: None,
    };
    service::expose(&server, spec, AccessList::open(), cancel.clone(), &tracker).expect("expose");

    // The client node.
    let mut client_cfg = config("/ip4/127.0.0.1/tcp/0");
    client_cfg.relays = relay_addr.iter().cloned().collect();
    let (client, _) = Tunnel::spawn(client_cfg, cancel.clone(), &tracker).expect("client");
    if !relayed {
        client
            .node()
            .add_addresses(server.node().peer_id(), vec![server_tcp])
            .await
            .expect("address");
    }
    // Connect first, so that the measured connections find the connection (and, direct, the bulk
    // path) ready.
    drop(service::connect(&client, server.node().peer_id(), "echo").await.expect("warm-up"));
    eprintln!("bulk path {}", if bulk { "on" } else { "off" });

    // The proxy side: one local TCP connection piped into a service stream.
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("proxy");
    let proxy_addr = proxy.local_addr().expect("proxy address");
    let (peer, node) = (server.node().peer_id(), client.clone());
    tokio::spawn(async move {
        // The first connection goes to the sink, the next (if any) to the echo server.
        for svc in ["sink", "echo"] {
            let (tcp, _) = proxy.accept().await.expect("accept");
            let (stream, path) = service::connect(&node, peer, svc).await.expect("stream");
            eprintln!("{svc} path: {} via {}", path.kind(), path.remote_addr);
            tokio::spawn(pipe::pipe(stream, tcp));
        }
    });

    let bytes = mib << 20;
    let block: Vec<u8> =
        (0..(1 << 20)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut conn = TcpStream::connect(proxy_addr).await.expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut sent = 0u64;
    while sent < bytes {
        conn.write_all(&block).await.expect("write");
        sent += block.len() as u64;
    }
    conn.shutdown().await.expect("shutdown");
    let mut count = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(600), conn.read_exact(&mut count))
        .await
        .expect("sink reply in time")
        .expect("sink reply");
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    assert_eq!(u64::from_be_bytes(count), bytes, "the sink got every byte");
    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!(
        "{} MiB {}: {:.0} MiB/s, {:.2} CPU-s/GiB",
        mib,
        if relayed { "relayed" } else { "direct" },
        mib as f64 / secs,
        cpu / gib
    );
    if rtt {
        let tunnel = round_trips(proxy_addr).await;
        let raw = round_trips(echo_addr).await;
        println!(
            "RTT p50/p99 µs: tunnel {:.0}/{:.0}, raw {:.0}/{:.0}, added {:.0}/{:.0}",
            tunnel.0,
            tunnel.1,
            raw.0,
            raw.1,
            tunnel.0 - raw.0,
            tunnel.1 - raw.1
        );
    }
    cancel.cancel();
}

/// p50 and p99 (µs) of `$RTT_N` (default 2,000) one-byte round trips to `addr`, after 100 warm-up
/// ones.
async fn round_trips(addr: std::net::SocketAddr) -> (f64, f64) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let n: usize = std::env::var("RTT_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let mut times = Vec::new();
    let mut b = [0u8; 1];
    for i in 0..n + 100 {
        let t = Instant::now();
        conn.write_all(b"x").await.expect("write");
        conn.read_exact(&mut b).await.expect("read");
        if i >= 100 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}
