//! Scenarios about what reaches whom: real SSH through the tunnel, refusal of unauthorized peers
//! and of peers outside a service's `allowed_peers`, and a relay that only ever sees ciphertext.

use std::time::Duration;

use super::lab::{Lab, PAYLOAD, READY, RESERVATION, TRANSFER};
use super::node::{ConnReport, Node, PathKind, pair};
use super::paths::{nodes, payload_through, serve_echo};
use super::proc::Stream;
use super::py::{Capture, Client, EchoServer, random_hex};
use super::ssh::{self, Sshd};

/// Issue scenario 4: OpenSSH's sshd in alice's namespace, exposed as service `ssh`; bob runs
/// `ssh … 'echo ok'` through his proxy and gets `ok`.
pub fn cone_ssh() {
    let Some(lab) = Lab::up("pu4", &ssh::TOOLS) else { return };
    let mut sshd = Sshd::start(&lab, "alice", 2222);
    let (relay, n) = nodes(&lab, &["alice", "bob"]);
    let (alice, bob) = (&n[0], &n[1]);
    pair(&lab, alice, bob);
    alice.service_add(&lab, "ssh", &format!("127.0.0.1:{}", sshd.port));
    let mut daemon = alice.daemon(&lab);
    daemon.wait_reservation(0, &relay.id, RESERVATION);
    let mut proxy = bob.proxy(&lab, &alice.id, "ssh");
    let out = sshd.ssh(&lab, "bob", proxy.port, "echo ok");
    let (path, line, _) = proxy.path_from(0, Duration::from_secs(10));
    let stdout = out.ok();
    assert_eq!(stdout.trim(), "ok", "ssh through the proxy printed {stdout:?}");
    sshd.proc.expect_line("Accepted publickey for root", Some(Stream::Err), READY, |l| {
        l.contains("Accepted publickey for root")
    });
    say!("[pu4] ssh through bob's proxy: ok, {path:?} ({line})");
}

/// Asserts that a proxy connection from `client` to `service` is refused: an `Error:` line, no
/// byte echoed, and nothing reached the echo server.
fn assert_refused(lab: &Lab, client: &Node, server: &Node, service: &str, echo: &EchoServer) {
    let who = format!("{} -> {} service {service}", client.host, server.host);
    let before = echo.connections();
    let error = match client.try_proxy(lab, &server.id, service) {
        Err(line) => line,
        Ok(mut proxy) => {
            let mut c = Client::local(&client.host, proxy.port, 1 << 20);
            c.idle = Duration::from_secs(30);
            let t = c.run(lab, &format!("{}-refused-{service}", client.host), TRANSFER);
            assert_eq!(t.recv_bytes, 0, "{who}: bytes came back although refused: {t:?}");
            match proxy.report_from(0, Duration::from_secs(30)) {
                (_, ConnReport::Error(line)) => line,
                (i, ConnReport::Path { line, .. }) => {
                    // A path line may precede the refusal of the stream; the error must follow.
                    let (_, after) = proxy.report_from(i + 1, Duration::from_secs(30));
                    match after {
                        ConnReport::Error(e) => e,
                        other => panic!("{who}: connected ({line}) and no error: {other:?}"),
                    }
                }
            }
        }
    };
    assert_eq!(echo.connections(), before, "{who}: the service was reached although refused");
    say!("[{}] {who} refused: {error}", lab.prefix());
}

/// Issue scenario 5: pubpeer, whose key alice has not authorized, is refused; bob, authorized but
/// not in `allowed_peers` of service `restricted`, is refused that service and served `echo`.
pub fn unauthorized_refused() {
    let Some(lab) = Lab::up("pu5", &[]) else { return };
    let (relay, n) = nodes(&lab, &["alice", "bob", "pubpeer", "dave"]);
    let (alice, bob, pubpeer, dave) = (&n[0], &n[1], &n[2], &n[3]);
    pair(&lab, alice, bob);
    pubpeer.auth_add(&lab, &alice.id); // pubpeer trusts alice; alice does not know pubpeer
    let open = EchoServer::start(&lab, "alice", "127.0.0.1");
    let restricted = EchoServer::start(&lab, "alice", "127.0.0.1");
    alice.service_add(&lab, "echo", &open.local_addr());
    alice.service_add(&lab, "restricted", &restricted.local_addr());
    alice.restrict_service(&lab, "restricted", &[&dave.id]);
    let mut daemon = alice.daemon(&lab);
    daemon.wait_reservation(0, &relay.id, RESERVATION);

    assert_refused(&lab, pubpeer, alice, "echo", &open);
    assert_refused(&lab, bob, alice, "restricted", &restricted);
    // The refusals are about authorization, not a broken path: bob is served `echo`.
    let mut proxy = bob.proxy(&lab, &alice.id, "echo");
    payload_through(&lab, "bob", &mut proxy, "bob -> alice echo (authorized)");
    assert_eq!(open.connections(), 1, "service echo: expected bob's connection only");
    assert_eq!(restricted.connections(), 0, "a refused connection reached service restricted");
}

/// Issue scenario 6: while the relay forwards carol <-> alice, a capture of every interface of
/// the relay host never sees a plaintext marker carried by the tunnel, though it sees the traffic,
/// and sees a control marker sent in the clear.
pub fn relay_sees_only_ciphertext() {
    let Some(lab) = Lab::up("pu6", &[]) else { return };
    let (relay, n) = nodes(&lab, &["alice", "carol"]);
    let (alice, carol) = (&n[0], &n[1]);
    pair(&lab, alice, carol);
    let (_echo, daemon) = serve_echo(&lab, alice, &relay);
    let mut proxy = carol.proxy(&lab, &alice.id, "echo");
    let control_echo = EchoServer::start(&lab, "relay", "0.0.0.0");

    let secret = random_hex(24);
    let control = random_hex(24);
    let capture = Capture::start(&lab, "relay", &[("secret", &secret), ("control", &control)]);

    let mark = proxy.proc.mark();
    let mut tunnel = Client::local("carol", proxy.port, PAYLOAD);
    tunnel.marker = Some(&secret);
    tunnel.run(&lab, "carol-secret", TRANSFER).assert_exact(PAYLOAD, "carol -> alice with marker");
    let (path, line, _) = proxy.path_from(mark, Duration::from_secs(10));
    assert_eq!(path, PathKind::Relayed, "the marker must cross the relay: {line}");
    // That first connection rode yamux on the relayed connection and probed the bulk path; the
    // next one takes it, on two TCP legs that the relay joins and copies between.
    let mut legs = Client::local("carol", proxy.port, PAYLOAD);
    legs.marker = Some(&secret);
    legs.run(&lab, "carol-secret-legs", TRANSFER).assert_exact(PAYLOAD, "carol -> alice on legs");
    daemon
        .proc
        .wait_line_from(0, None, Duration::from_secs(5), |l| {
            l.contains("serving stream") && l.contains("path=\"RELAYED/legs\"")
        })
        .expect("the second connection crossed the relay on legs");

    let plain = Client {
        host: "carol",
        ip: super::node::RELAY_IP,
        port: control_echo.port,
        bytes: 1 << 20,
        marker: Some(&control),
        idle: Duration::from_secs(30),
    };
    plain.run(&lab, "carol-control", TRANSFER).assert_exact(1 << 20, "plain TCP to the relay host");

    let stats = capture.stop();
    say!("[pu6] relay capture: {}", stats.summary());
    assert!(
        stats.hits["control"] > 0,
        "the capture missed the plaintext control marker: {stats:?}"
    );
    assert!(stats.bytes >= 32 << 20, "the capture saw too little of the tunnels: {stats:?}");
    assert_eq!(stats.hits["secret"], 0, "plaintext of the tunnel visible on the relay: {stats:?}");
}

/// `peerup auth remove` on a running daemon cuts the peer's open tunnel within a second (the
/// daemon watches authorized_keys), and `peerup auth add` lets it back in without a restart.
pub fn auth_remove_cuts_tunnel() {
    let Some(lab) = Lab::up("pu8", &[]) else { return };
    let mut p = super::paths::echo_pair(&lab, "alice", "bob");
    let big: u64 = 64 << 30; // far more than can move before access is revoked
    let client = Client::local("bob", p.proxy.port, big);
    let (transfer, cut) = std::thread::scope(|s| {
        let running = s.spawn(|| client.run(&lab, "bob-long", TRANSFER));
        // The tunnel is up once the proxy reports the connection's path.
        let (path, line, _) = p.proxy.path_from(0, Duration::from_secs(30));
        say!("[pu8] bob's long transfer runs {path:?} ({line})");
        p.server.peerup(&lab, "auth-remove", &["auth", "remove", &p.client.id]).ok();
        let removed = std::time::Instant::now();
        let transfer = running.join().expect("client thread");
        (transfer, removed.elapsed())
    });
    assert!(transfer.recv_bytes < big, "the transfer was not cut: {transfer:?}");
    assert!(cut < Duration::from_secs(1), "the tunnel lived {cut:?} after auth remove");
    say!(
        "[pu8] tunnel cut {:.0} ms after `auth remove` ({} MiB had moved)",
        cut.as_secs_f64() * 1000.0,
        transfer.recv_bytes >> 20
    );

    let mark = p.daemon.proc.mark();
    p.server.auth_add(&lab, &p.client.id);
    // The daemon picks the file change up by itself (no restart, no API call).
    p.daemon.proc.expect_line_from(
        "`authorized_keys reloaded … peers=1`",
        mark,
        Some(Stream::Err),
        READY,
        |l| l.contains("authorized_keys reloaded") && l.contains("peers=1"),
    );
    let back = Client::local("bob", p.proxy.port, 1 << 20).run(&lab, "bob-again", TRANSFER);
    back.assert_exact(1 << 20, "bob after auth add, without a daemon restart");
}
