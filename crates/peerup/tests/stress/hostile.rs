//! Scenario 7, hostile relay traffic: from pubpeer, reservation and circuit requests (half each,
//! half over TCP and half over QUIC) from fresh unauthorized Ed25519 identities, in two waves, while
//! bob (DIRECT) and carol (RELAYED) keep moving byte-exact data to alice. Every request must be
//! refused; alice keeps her reservation; the relay neither panics nor exits, refuses every
//! connection at its gate, and its memory stays bounded and does not grow from wave to wave.

use std::time::{Duration, Instant};

use super::attacker::{self, Outcomes, Plan};
use super::lab::{Lab, TRANSFER};
use super::node::{Node, PathKind, Proxy, RELAY_IP, Relay, pair};
use super::paths::{probe_until_direct, serve_echo};
use super::proc::{Proc, Stream};
use super::py::Client;
use super::rss::{Sampler, rss_mib};

/// Bytes of each transfer of the authorized peers during and after the attack.
const TRANSFER_BYTES: u64 = 1 << 20;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// For one hostile request to be refused.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Peak relay RSS during the attack may exceed the RSS before it by at most this (MiB).
const RELAY_PEAK_GROWTH_MIB: f64 = 64.0;
/// RSS after the second wave may exceed that after the first by at most this (MiB): a per-peer
/// leak of even 16 KiB would be 8 MiB per 500 identities.
const RELAY_WAVE_GROWTH_MIB: f64 = 8.0;
/// The relay's audit line for a connection refused at the gate.
const DENIED: &str = "auth_decision: inbound connection denied (not authorized)";

/// One byte-exact transfer through `proxy`, on `path`.
#[track_caller]
fn transfer(lab: &Lab, host: &str, proxy: &mut Proxy, path: PathKind, what: &str) {
    let mark = proxy.proc.mark();
    let t =
        Client::local(host, proxy.port, TRANSFER_BYTES).run(lab, &format!("{host}-x"), TRANSFER);
    t.assert_exact(TRANSFER_BYTES, what);
    let (got, line, _) = proxy.path_from(mark, Duration::from_secs(10));
    assert_eq!(got, path, "{what}: {line}");
}

fn relay_proc(relay: &mut Relay) -> &mut Proc {
    relay.proc().expect("relay runs")
}

fn count_lines(p: &Proc, from: usize, needle: &str) -> usize {
    let mut n = 0;
    let mut i = from;
    while let Some((k, _)) = p.wait_line_from(i, None, Duration::ZERO, |l| l.contains(needle)) {
        (n, i) = (n + 1, k + 1);
    }
    n
}

/// Runs one wave of `attempts` while bob and carol transfer; returns the outcomes and how many
/// transfer rounds started while it ran.
fn wave(lab: &Lab, plan: Plan, bob: &mut Proxy, carol: &mut Proxy, n: usize) -> (Outcomes, usize) {
    let flood = attacker::launch(plan);
    let mut rounds = 0;
    while !flood.is_finished() {
        rounds += 1;
        transfer(lab, "bob", bob, PathKind::Direct, &format!("bob -> alice during wave {n}"));
        transfer(
            lab,
            "carol",
            carol,
            PathKind::Relayed,
            &format!("carol -> alice during wave {n}"),
        );
    }
    let outcomes = flood.join().expect("the hostile client thread panicked");
    (outcomes, rounds)
}

pub fn unauthorized_flood() {
    let Some(lab) = Lab::up("ps3", &[]) else { return };
    let attempts =
        super::env_num("PEERUP_STRESS_ATTEMPTS", if super::soak() { 10_000 } else { 1_000 });
    let mut relay = Relay::setup(&lab);
    let hosts = ["alice", "bob", "carol"];
    let n: Vec<Node> = hosts.iter().map(|h| Node::init(&lab, h, &relay)).collect();
    relay.start(&lab);
    let (alice, bob, carol) = (&n[0], &n[1], &n[2]);
    pair(&lab, alice, bob);
    pair(&lab, alice, carol);
    let (_echo, mut daemon) = serve_echo(&lab, alice, &relay);
    let mut bob_proxy = bob.proxy(&lab, &alice.id, "echo");
    let mut carol_proxy = carol.proxy(&lab, &alice.id, "echo");
    let window = Duration::from_secs(30);
    let probed = probe_until_direct(&lab, "bob", &mut bob_proxy, window);
    assert!(probed.to_direct.is_some(), "bob never went DIRECT: {:?}", probed.paths);
    transfer(&lab, "carol", &mut carol_proxy, PathKind::Relayed, "carol -> alice before");

    let relay_pid = relay.pid().expect("relay runs");
    let relay_mark = relay_proc(&mut relay).mark();
    let daemon_mark = daemon.proc.mark();
    let before = rss_mib(relay_pid).expect("relay RSS");
    let sampler = Sampler::start(&[("relay", relay_pid), ("alice daemon", daemon.proc.pid())]);
    let plan = Plan {
        netns: lab.ns("pubpeer"),
        relay: relay.id.parse().expect("relay peer ID"),
        relay_tcp: format!("/ip4/{RELAY_IP}/tcp/7777").parse().expect("relay TCP address"),
        relay_quic: format!("/ip4/{RELAY_IP}/udp/7777/quic-v1")
            .parse()
            .expect("relay QUIC address"),
        target: alice.id.parse().expect("alice's peer ID"),
        attempts: (attempts as usize).div_ceil(2),
        concurrency: CONCURRENCY,
        attempt_timeout: ATTEMPT_TIMEOUT,
    };
    let started = Instant::now();
    let (first, rounds1) = wave(&lab, plan.clone(), &mut bob_proxy, &mut carol_proxy, 1);
    let after_first = rss_mib(relay_pid).expect("relay RSS after wave 1");
    let (second, rounds2) = wave(&lab, plan.clone(), &mut bob_proxy, &mut carol_proxy, 2);
    let after_second = rss_mib(relay_pid).expect("relay RSS after wave 2");
    let secs = started.elapsed().as_secs_f64();
    let series = sampler.finish();
    let relay_series = series["relay"];

    for (n, o) in [(1, &first), (2, &second)] {
        say!(
            "[ps3] wave {n}: {} hostile requests in {:.1} s ({:.0}/s), {} accepted, {} timed out; {:?}",
            o.total(),
            o.secs,
            o.total() as f64 / o.secs,
            o.accepted,
            o.timed_out,
            o.counts
        );
        say!("[ps3] wave {n} examples: {:?}", o.examples);
    }
    let denied = count_lines(relay_proc(&mut relay), relay_mark, DENIED);
    say!(
        "[ps3] relay RSS MiB: before {before:.1}, peak {:.1} (sampled {} times), after wave 1 \
         {after_first:.1}, after wave 2 {after_second:.1}; gate refusals logged {denied}; \
         transfer rounds during the waves {rounds1} + {rounds2} in {secs:.1} s",
        relay_series.peak,
        relay_series.samples
    );
    say!("[ps3] alice's daemon RSS MiB: {:?}", series.get("alice daemon"));

    let sent = (first.total() + second.total()) as usize;
    assert_eq!(sent, plan.attempts * 2, "hostile requests made");
    assert_eq!(first.accepted + second.accepted, 0, "the relay served unauthorized peers");
    assert_eq!(
        first.timed_out + second.timed_out,
        0,
        "requests left unanswered: {first:?} {second:?}"
    );
    assert!(denied >= sent, "the relay's gate refused {denied} connections for {sent} requests");
    assert!(rounds1 >= 1 && rounds2 >= 1, "no transfer overlapped a wave ({rounds1}, {rounds2})");

    assert!(relay_proc(&mut relay).is_running(), "the relay exited during the attack");
    let panicked =
        relay_proc(&mut relay)
            .wait_line_from(0, Some(Stream::Err), Duration::ZERO, |l| l.contains("panicked"));
    assert!(panicked.is_none(), "the relay panicked: {panicked:?}");
    assert!(
        relay_series.peak < before + RELAY_PEAK_GROWTH_MIB,
        "relay RSS peaked at {:.1} MiB, {before:.1} MiB before the attack",
        relay_series.peak
    );
    assert!(
        after_second < after_first + RELAY_WAVE_GROWTH_MIB,
        "relay RSS grew from {after_first:.1} MiB after wave 1 to {after_second:.1} MiB after wave 2"
    );
    let lost = daemon
        .proc
        .wait_line_from(daemon_mark, None, Duration::ZERO, |l| l.contains("Reservation lost"));
    assert!(lost.is_none(), "alice lost her reservation during the attack: {lost:?}");

    // After the attack: the same proxies, and a new circuit (it needs alice's reservation).
    transfer(&lab, "bob", &mut bob_proxy, PathKind::Direct, "bob -> alice after the attack");
    transfer(&lab, "carol", &mut carol_proxy, PathKind::Relayed, "carol -> alice after the attack");
    drop(carol_proxy);
    let mut fresh = carol.proxy(&lab, &alice.id, "echo");
    transfer(&lab, "carol", &mut fresh, PathKind::Relayed, "a new carol proxy after the attack");
    assert!(daemon.proc.is_running(), "alice's daemon exited");
}
