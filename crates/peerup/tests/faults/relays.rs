//! Scenario 1, relay loss: one of two relays crashes (SIGKILL), and the only relay crashes and
//! comes back. carol sits behind the symmetric NAT, so her tunnel to alice is relayed only: it
//! lives or dies with the relays.

use std::time::{Duration, Instant};

use super::lab::{Lab, RESERVATION};
use super::node::{Daemon, Node, PathKind, Relay, pair};
use super::paths::serve_echo;
use super::py::EchoServer;
use super::recover::{PROBE, first_exact};

/// Scenario 1a's bound: new connections through the surviving relay within 5 s of the crash.
const FAILOVER: Duration = Duration::from_secs(5);
/// Scenario 1b's bound: new connections within 10 s of the relay's return.
const RETURN: Duration = Duration::from_secs(10);
/// The second relay's port on pubpeer (not 7777, so the port variant of the setup is exercised).
const SECOND_PORT: u16 = 7787;

/// Waits for `Reservation accepted by relay <id>` of one given relay at or after line `from`.
#[track_caller]
fn wait_reservation_on(daemon: &mut Daemon, from: usize, relay: &Relay, timeout: Duration) {
    daemon.proc.expect_line_from(
        &format!("`Reservation accepted by relay {}`", relay.id),
        from,
        None,
        timeout,
        |l| l.starts_with("Reservation accepted by relay") && l.contains(&relay.id),
    );
}

/// alice and carol use two relays (the relay host, and pubpeer); alice reserves on both. Once
/// carol's proxy has carried a connection, the relay that connection went through is killed with
/// SIGKILL: a new connection from carol must be byte-exact through the other relay within 5 s.
pub fn one_of_two_killed() {
    let Some(lab) = Lab::up("pf1", &[]) else { return };
    let mut first = Relay::setup(&lab);
    let mut second = Relay::setup_on(&lab, "pubpeer", SECOND_PORT);
    let nodes: Vec<Node> = ["alice", "carol"].iter().map(|h| Node::init(&lab, h, &first)).collect();
    let (alice, carol) = (&nodes[0], &nodes[1]);
    for node in &nodes {
        second.authorize(&lab, &node.id);
        node.peerup(&lab, "relay-add", &["relay", "add", &second.addr]).ok();
    }
    pair(&lab, alice, carol);
    first.start(&lab);
    second.start(&lab);
    // Like `serve_echo`, with a reservation on each relay (in either order).
    let echo = EchoServer::start(&lab, "alice", "127.0.0.1");
    alice.service_add(&lab, "echo", &echo.local_addr());
    let mut daemon = alice.daemon(&lab);
    wait_reservation_on(&mut daemon, 0, &first, RESERVATION);
    wait_reservation_on(&mut daemon, 0, &second, RESERVATION);

    let mut proxy = carol.proxy(&lab, &alice.id, "echo");
    let before = first_exact(&lab, "carol", &mut proxy, Instant::now(), RESERVATION, "before");
    assert_eq!(before.path, PathKind::Relayed, "carol's path to alice must be relayed");
    let (_, via) = proxy.proc.expect_line_from("a path line", 0, None, RESERVATION, |l| {
        l.starts_with("Connection ") && l.contains("[RELAYED]")
    });
    // Kill the relay carol's circuit runs through, so the running connection breaks with it.
    let through_first = via.text.contains(&format!("/p2p/{}/p2p-circuit", first.id));
    let (killed, survivor) =
        if through_first { (&mut first, &second) } else { (&mut second, &first) };
    let killed_id = killed.id.clone();
    let mark = proxy.proc.mark();
    let crash = Instant::now();
    killed.kill();
    let after = first_exact(&lab, "carol", &mut proxy, crash, FAILOVER, "after the relay crash");
    assert_eq!(after.path, PathKind::Relayed, "carol -> alice after the crash");
    let (_, line) = proxy.proc.expect_line_from("the new path line", mark, None, RETURN, |l| {
        l.starts_with("Connection ") && l.contains("[RELAYED]")
    });
    assert!(
        line.text.contains(&survivor.id) && !line.text.contains(&killed_id),
        "the new connection must run through the surviving relay {}: {}",
        survivor.addr,
        line.text
    );
    say!(
        "[pf1] relay {} killed (carol's circuit ran through it): carol -> alice byte-exact through \
         the other relay {:.2} s later ({} tries)",
        if through_first { "198.18.0.1:7777" } else { "198.18.0.2:7787" },
        after.after.as_secs_f64(),
        after.tries
    );
    assert!(daemon.proc.is_running(), "alice's daemon exited");
}

/// One relay, killed with SIGKILL, down for 5 s, started again with the same key: alice's daemon
/// reserves again by itself, and new connections from carol (relay only, through a proxy started
/// before the crash) and from bob (through his running proxy) work within 10 s of the return.
pub fn restart_recovers() {
    let Some(lab) = Lab::up("pf2", &[]) else { return };
    let (mut relay, n) = super::paths::nodes(&lab, &["alice", "bob", "carol"]);
    let (alice, bob, carol) = (&n[0], &n[1], &n[2]);
    pair(&lab, alice, bob);
    pair(&lab, alice, carol);
    let (_echo, mut daemon) = serve_echo(&lab, alice, &relay);
    let mut bob_proxy = bob.proxy(&lab, &alice.id, "echo");
    let mut carol_proxy = carol.proxy(&lab, &alice.id, "echo");
    for (host, proxy) in [("bob", &mut bob_proxy), ("carol", &mut carol_proxy)] {
        first_exact(&lab, host, proxy, Instant::now(), RESERVATION, "before the crash");
    }

    let mark = daemon.proc.mark();
    let killed = Instant::now();
    relay.kill();
    // The outage itself: the relay stays away long enough for the daemons' retries to back off.
    std::thread::sleep(Duration::from_secs(5));
    relay.start(&lab);
    let back = Instant::now();
    wait_reservation_on(&mut daemon, mark, &relay, RETURN);
    let reserved = back.elapsed();

    let carol_after = first_exact(&lab, "carol", &mut carol_proxy, back, RETURN, "carol after");
    assert_eq!(carol_after.path, PathKind::Relayed, "carol (symmetric NAT) -> alice");
    let bob_after = first_exact(&lab, "bob", &mut bob_proxy, back, RETURN, "bob after");
    // A fresh proxy works too (it has no connection to reuse).
    let mut fresh = carol.proxy(&lab, &alice.id, "echo");
    let fresh_after = first_exact(&lab, "carol", &mut fresh, back, RETURN, "carol fresh proxy");
    say!(
        "[pf2] relay down {:.1} s: alice reserved again {:.2} s after its return; new connections \
         byte-exact {:.2} s (carol, {} tries), {:.2} s (bob, {:?}, {} tries), {:.2} s (new proxy) \
         after the return; {PROBE} bytes each",
        (back - killed).as_secs_f64(),
        reserved.as_secs_f64(),
        carol_after.after.as_secs_f64(),
        carol_after.tries,
        bob_after.after.as_secs_f64(),
        bob_after.path,
        bob_after.tries,
        fresh_after.after.as_secs_f64()
    );
    assert!(daemon.proc.is_running(), "alice's daemon exited");
}
