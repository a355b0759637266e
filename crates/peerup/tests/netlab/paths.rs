//! Connectivity scenarios: hole punching between cone NATs, relayed service through a symmetric
//! NAT, and double NAT behind a CGNAT. (Relay restarts are in `tests/faults/relays.rs`.)

use std::time::{Duration, Instant};

use super::lab::{Lab, PAYLOAD, RESERVATION, TRANSFER};
use super::node::{Daemon, Node, PathKind, Proxy, Relay, pair};
use super::py::{Client, EchoServer};

/// Bytes of a probe connection (checked by SHA-256 like the payload).
const PROBE: u64 = 64 << 10;

/// A running relay and one initialized node per host (each authorized on the relay).
pub fn nodes(lab: &Lab, hosts: &[&str]) -> (Relay, Vec<Node>) {
    let mut relay = Relay::setup(lab);
    let nodes = hosts.iter().map(|h| Node::init(lab, h, &relay)).collect();
    relay.start(lab);
    (relay, nodes)
}

/// Starts an echo server on `node`'s host, exposes it as service `echo`, and starts the daemon,
/// waiting for its relay reservation.
pub fn serve_echo(lab: &Lab, node: &Node, relay: &Relay) -> (EchoServer, Daemon) {
    let echo = EchoServer::start(lab, &node.host, "127.0.0.1");
    node.service_add(lab, "echo", &echo.local_addr());
    let mut daemon = node.daemon(lab);
    daemon.wait_reservation(0, &relay.id, RESERVATION);
    (echo, daemon)
}

/// The usual setup: `server` and `client` paired, `server` serving `echo`, `client`'s proxy to it
/// listening.
pub struct Pair {
    #[allow(dead_code, reason = "kept running for the test's duration")]
    pub relay: Relay,
    pub server: Node,
    pub client: Node,
    pub echo: EchoServer,
    pub daemon: Daemon,
    pub proxy: Proxy,
}

pub fn echo_pair(lab: &Lab, server: &str, client: &str) -> Pair {
    let (relay, mut n) = nodes(lab, &[server, client]);
    let (cli, srv) = (n.pop().unwrap(), n.pop().unwrap());
    pair(lab, &srv, &cli);
    let (echo, daemon) = serve_echo(lab, &srv, &relay);
    let proxy = cli.proxy(lab, &srv.id, "echo");
    Pair { relay, server: srv, client: cli, echo, daemon, proxy }
}

/// The outcome of probing until a connection reports `[DIRECT]`.
pub struct Probed {
    /// From starting the first connection to reading the `[DIRECT]` line, if one came.
    pub to_direct: Option<Duration>,
    pub connections: usize,
    /// Time to first echoed byte of the first connection.
    pub first_ttfb_ms: f64,
    pub paths: Vec<PathKind>,
}

/// Opens small proxy connections from `host` one after another until one reports `[DIRECT]` or
/// `window` has passed since the first one started. Every probe must echo its bytes exactly.
pub fn probe_until_direct(lab: &Lab, host: &str, proxy: &mut Proxy, window: Duration) -> Probed {
    let start = Instant::now();
    let mut paths = Vec::new();
    let mut first_ttfb_ms = f64::NAN;
    loop {
        let n = paths.len() + 1;
        let mark = proxy.proc.mark();
        let mut client = Client::local(host, proxy.port, PROBE);
        client.idle = Duration::from_secs(20);
        let t = client.run(lab, &format!("{host}-probe-{n}"), Duration::from_secs(40));
        t.assert_exact(PROBE, &format!("{host} probe connection {n}"));
        if n == 1 {
            first_ttfb_ms = t.ttfb_ms.unwrap_or(f64::NAN);
        }
        let (path, _, at) = proxy.path_from(mark, Duration::from_secs(10));
        paths.push(path);
        let elapsed = at.saturating_duration_since(start);
        if path == PathKind::Direct {
            return Probed { to_direct: Some(elapsed), connections: n, first_ttfb_ms, paths };
        }
        if start.elapsed() >= window {
            return Probed { to_direct: None, connections: n, first_ttfb_ms, paths };
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends the payload through a proxy and asserts it came back byte-exact; returns the path the
/// proxy reported and prints a summary.
#[track_caller]
pub fn payload_through(lab: &Lab, host: &str, proxy: &mut Proxy, what: &str) -> (PathKind, String) {
    let mark = proxy.proc.mark();
    let t = Client::local(host, proxy.port, PAYLOAD).run(lab, &format!("{host}-payload"), TRANSFER);
    let (path, line, _) = proxy.path_from(mark, Duration::from_secs(10));
    t.assert_exact(PAYLOAD, what);
    say!("[{}] {what}: {path:?}: {} ({line})", lab.prefix(), t.summary());
    (path, line)
}

/// Issue scenario 1: bob (cone NAT) reaches an echo service on alice (cone NAT) byte-exact, and new
/// connections report DIRECT within 10 s of the first one.
pub fn cone_x_cone_direct() {
    let Some(lab) = Lab::up("pu1", &[]) else { return };
    let mut p = echo_pair(&lab, "alice", "bob");
    let window = Duration::from_secs(10);
    let probed = probe_until_direct(&lab, "bob", &mut p.proxy, window);
    let to_direct = probed.to_direct.unwrap_or_else(|| {
        panic!("no [DIRECT] connection within {window:?}: paths {:?}", probed.paths)
    });
    assert!(to_direct <= window, "DIRECT only after {to_direct:?} (> {window:?})");
    say!(
        "[pu1] bob -> alice: time to DIRECT {:.2} s (connection {}, paths {:?}); \
         first connection's time to first byte {:.1} ms",
        to_direct.as_secs_f64(),
        probed.connections,
        probed.paths,
        probed.first_ttfb_ms
    );
    // A plain bulk connection to alice's address is filtered by her NAT (its probe fails), so
    // her proxied connections get a hole of their own punched (`peerup_core::tunnel::punch`).
    let punched = wait_punched(&lab, &mut p, Duration::from_secs(20));
    let mark = p.daemon.proc.mark();
    let (path, line) = payload_through(&lab, "bob", &mut p.proxy, "bob -> alice echo");
    assert_eq!(path, PathKind::Direct, "payload connection after DIRECT was not direct: {line}");
    let what = "alice serves the payload on a punched bulk connection";
    p.daemon.proc.expect_line_from(what, mark, None, Duration::from_secs(5), is_punched);

    let replies = p.client.ping(&lab, &p.server.id, 3);
    assert_eq!(replies.len(), 3, "ping -c 3 --json: {replies:?}");
    for r in &replies {
        assert!(r["error"].is_null(), "ping reply with error: {r}");
        assert!(r["rtt_ms"].as_f64().is_some(), "ping reply without rtt_ms: {r}");
        assert!(matches!(r["path"].as_str(), Some("DIRECT" | "RELAYED")), "ping path: {r}");
    }
    say!("[pu1] bob pings alice: {replies:?}");
    let expected = probed.connections + punched + 1;
    assert_eq!(p.echo.connections(), expected, "connections reaching the service");
    assert!(p.daemon.proc.is_running(), "alice's daemon exited");
}

fn is_punched(line: &str) -> bool {
    line.contains("serving stream") && line.contains("path=\"DIRECT/punched\"")
}

/// Opens probe connections through `p`'s proxy until the server's daemon serves one on a punched
/// bulk connection; returns how many were opened.
fn wait_punched(lab: &Lab, p: &mut Pair, window: Duration) -> usize {
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let mark = p.daemon.proc.mark();
        let t = Client::local(&p.client.host, p.proxy.port, PROBE).run(
            lab,
            &format!("{}-punch-{n}", p.client.host),
            TRANSFER,
        );
        t.assert_exact(PROBE, &format!("probe connection {n} for a punched bulk path"));
        if p.daemon.proc.wait_line_from(mark, None, Duration::from_secs(2), is_punched).is_some() {
            say!(
                "[{}] punched bulk connection after {n} probes, {:.1} s",
                lab.prefix(),
                start.elapsed().as_secs_f64()
            );
            return n;
        }
        assert!(start.elapsed() < window, "no bulk connection punched within {window:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Issue scenario 2: carol (symmetric NAT) reaches alice's echo service byte-exact over the relay;
/// hole punching cannot succeed, and the connection keeps working after it failed.
pub fn symmetric_x_cone_relayed() {
    let Some(lab) = Lab::up("pu2", &[]) else { return };
    let mut p = echo_pair(&lab, "alice", "carol");
    let (path, line) = payload_through(&lab, "carol", &mut p.proxy, "carol -> alice echo");
    assert_eq!(path, PathKind::Relayed, "symmetric NAT cannot be hole-punched: {line}");
    // The circuit reaches alice over her reservation connection to the relay, which must be the
    // TCP one (AES, large frames), not the QUIC twin she also holds; her log names it.
    let (_, served) = p
        .daemon
        .proc
        .wait_line_from(0, None, Duration::from_secs(5), |l| {
            l.contains("serving stream") && l.contains("path=\"RELAYED\"")
        })
        .expect("alice's daemon logs the relayed stream it serves");
    assert!(
        served.text.contains("/tcp/") && !served.text.contains("quic"),
        "alice's circuit runs over QUIC to the relay: {}",
        served.text
    );
    // By now every hole punch attempt has had time to fail; the relayed path must still carry
    // new connections.
    let mark = p.proxy.proc.mark();
    let t = Client::local("carol", p.proxy.port, PROBE).run(&lab, "carol-after", TRANSFER);
    t.assert_exact(PROBE, "carol -> alice after the payload");
    let (path, line, _) = p.proxy.path_from(mark, Duration::from_secs(10));
    assert_eq!(path, PathKind::Relayed, "{line}");
    // The first connection probed the bulk path through the relay; later ones take it (two TCP
    // legs the relay joins, without the relayed connection's TLS and yamux layers).
    p.daemon
        .proc
        .wait_line_from(0, None, Duration::from_secs(5), |l| {
            l.contains("serving stream") && l.contains("path=\"RELAYED/legs\"")
        })
        .expect("alice serves a later relayed connection on the bulk path, over relay legs");
}

/// Issue scenario 3: bob (cone NAT) reaches a service on dave (double NAT behind a CGNAT)
/// byte-exact, and the proxy reports the path.
pub fn cgnat_x_cone() {
    let Some(lab) = Lab::up("pu3", &[]) else { return };
    let mut p = echo_pair(&lab, "dave", "bob");
    let probed = probe_until_direct(&lab, "bob", &mut p.proxy, Duration::from_secs(20));
    match probed.to_direct {
        Some(d) => say!(
            "[pu3] bob -> dave: time to DIRECT {:.2} s (connection {}); first byte {:.1} ms",
            d.as_secs_f64(),
            probed.connections,
            probed.first_ttfb_ms
        ),
        None => say!(
            "[pu3] NOTE: bob -> dave stayed {:?} for 20 s (the lab README expects hole punching \
             through nat-d + cgn to work)",
            probed.paths
        ),
    }
    let (path, line) = payload_through(&lab, "bob", &mut p.proxy, "bob -> dave echo");
    say!("[pu3] bob -> dave payload path: {path:?} ({line})");
}
