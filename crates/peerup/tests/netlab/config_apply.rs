//! Safe config changes through real NATs: a config whose relay is wrong, applied on alice and never
//! confirmed, is reverted by her daemon by itself, and her peers reach her again (bob's ssh through
//! his proxy among them) with no hands on her machine.

use std::time::{Duration, Instant};

use super::lab::{Lab, RESERVATION, TRANSFER};
use super::node::{PathKind, pair};
use super::paths::{nodes, payload_through, serve_echo};
use super::py::Client;
use super::ssh::{self, Sshd};

/// How long the change may stay unconfirmed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// A valid peer ID that is not the relay's: dials to it through the relay's address fail.
const WRONG_RELAY_ID: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
/// Bytes of the relayed probe.
const PROBE: u64 = 64 << 10;

pub fn broken_relay_reverts() {
    let Some(lab) = Lab::up("pa1", &ssh::TOOLS) else { return };
    let sshd = Sshd::start(&lab, "alice", 2222);
    let (relay, n) = nodes(&lab, &["alice", "bob", "carol"]);
    let (alice, bob, carol) = (&n[0], &n[1], &n[2]);
    pair(&lab, alice, bob);
    pair(&lab, alice, carol);
    alice.service_add(&lab, "ssh", &format!("127.0.0.1:{}", sshd.port));
    let (_echo, mut daemon) = serve_echo(&lab, alice, &relay);
    let mut bob_proxy = bob.proxy(&lab, &alice.id, "echo");
    payload_through(&lab, "bob", &mut bob_proxy, "bob -> alice before the change");
    let ssh_proxy = bob.proxy(&lab, &alice.id, "ssh");
    let out = sshd.ssh(&lab, "bob", ssh_proxy.port, "echo before").ok();
    assert_eq!(out.trim(), "before", "ssh through bob's proxy before the change");

    // The same config with the relay's peer ID replaced: alice would be unreachable through it.
    let good = std::fs::read_to_string(alice.config()).expect("read alice's config");
    assert!(good.contains(&relay.id), "the relay is in alice's config");
    let broken = alice.config().with_file_name("broken.yaml");
    std::fs::write(&broken, good.replace(&relay.id, WRONG_RELAY_ID)).expect("write broken.yaml");

    let mark = daemon.proc.mark();
    let timeout = format!("{}s", CONFIRM_TIMEOUT.as_secs());
    let broken = broken.to_str().expect("utf-8 path");
    let out = alice
        .peerup(&lab, "config-apply", &["config", "apply", broken, "--confirm-timeout", &timeout])
        .ok();
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    assert!(out.contains("relay.addresses (+1 -1)"), "applied live: {out}");

    // Nobody confirms. The next reservation on the real relay comes only after the revert.
    daemon.wait_reservation(mark, &relay.id, CONFIRM_TIMEOUT + RESERVATION);
    let reserved = Instant::now();
    assert!(
        reserved >= deadline,
        "alice reserved again before the deadline: the change was not live"
    );
    assert_eq!(std::fs::read_to_string(alice.config()).expect("read config"), good, "reverted");

    // carol (symmetric NAT) only reaches alice through the relay: the path the change broke.
    let mut carol_proxy = carol.proxy(&lab, &alice.id, "echo");
    let mark = carol_proxy.proc.mark();
    let t = Client::local("carol", carol_proxy.port, PROBE).run(&lab, "carol-after", TRANSFER);
    t.assert_exact(PROBE, "carol -> alice after the revert");
    let (path, line, _) = carol_proxy.path_from(mark, Duration::from_secs(10));
    assert_eq!(path, PathKind::Relayed, "{line}");
    let carol_ok = Instant::now();
    payload_through(&lab, "bob", &mut bob_proxy, "bob -> alice after the revert");
    let bob_ok = Instant::now();
    let out = sshd.ssh(&lab, "bob", ssh_proxy.port, "echo after").ok();
    assert_eq!(out.trim(), "after", "ssh through bob's proxy after the revert");
    let ssh_ok = Instant::now();
    let since = |t: Instant| t.saturating_duration_since(deadline).as_secs_f64();
    say!(
        "[pa1] after the confirm deadline: alice reserved again in {:.2} s, carol's relayed probe done in {:.2} s, bob's payload done in {:.2} s, bob's ssh in {:.2} s",
        since(reserved),
        since(carol_ok),
        since(bob_ok),
        since(ssh_ok)
    );
}
