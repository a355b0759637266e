//! Scenarios 2 and 4: the path under a DIRECT bob -> alice tunnel breaks at a NAT router. nat-a
//! forgets every mapping (its conntrack table flushed), or nat-b's uplink goes down for 5 s. New
//! connections must work within 10 s, a direct path must come back, and a connection that was
//! open during the fault must end, one way or the other, within 30 s.
//!
//! Also: hole punching that failed while the NATs could not reach each other is tried again once
//! they can.

use std::time::{Duration, Instant};

use super::lab::Lab;
use super::node::PathKind;
use super::paths::{Pair, echo_pair, probe_until_direct};
use super::proc::Stream;
use super::py::{Client, Transfer};
use super::recover::{Recovered, first_exact, in_host};

/// New connections after the fault.
const NEW_CONNECTIONS: Duration = Duration::from_secs(10);
/// The connection open across the fault ends (byte-exact or failed) within this.
const OPEN_ENDS: Duration = Duration::from_secs(30);
/// Its socket inactivity timeout.
const OPEN_IDLE: Duration = Duration::from_secs(10);
/// Its size: long enough to be open when the fault hits, short enough to finish well within
/// `OPEN_ENDS` when the tunnel recovers.
const OPEN_BYTES: u64 = 256 << 20;
/// Hole punching after the fault.
const DIRECT_AGAIN: Duration = Duration::from_secs(20);

/// What happened around one fault.
struct Outcome {
    recovered: Recovered,
    /// The connection that was open during the fault, and when it ended (from the fault's end).
    open: Transfer,
    open_ended: Duration,
    direct_again: Option<Duration>,
    paths: Vec<PathKind>,
}

/// bob -> alice DIRECT first; then a long transfer is started, and `fault` runs while it is open
/// (returning when the fault is over). Measures the recovery from there.
fn through_fault(lab: &Lab, p: &mut Pair, what: &str, fault: impl FnOnce()) -> Outcome {
    let before = probe_until_direct(lab, "bob", &mut p.proxy, DIRECT_AGAIN);
    assert!(before.to_direct.is_some(), "no DIRECT path before the fault: {:?}", before.paths);

    let mut open = Client::local("bob", p.proxy.port, OPEN_BYTES);
    open.idle = OPEN_IDLE;
    let mark = p.proxy.proc.mark();
    let (recovered, open, open_ended) = std::thread::scope(|s| {
        let running = s.spawn(|| open.run(lab, "bob-open", OPEN_ENDS * 3));
        let path = super::recover::connection_path(&mut p.proxy, mark);
        assert_eq!(path, PathKind::Direct, "the open connection is not direct");
        assert!(
            !running.is_finished(),
            "the open connection ended before the fault: raise OPEN_BYTES"
        );
        fault();
        let over = Instant::now();
        let recovered = first_exact(lab, "bob", &mut p.proxy, over, NEW_CONNECTIONS, what);
        let open = running.join().expect("client thread");
        (recovered, open, over.elapsed())
    });
    assert!(
        open_ended <= OPEN_ENDS,
        "{what}: the connection open during the fault lasted {open_ended:?} after it (> {OPEN_ENDS:?}): {open:?}"
    );
    if open.error.is_none() {
        open.assert_exact(OPEN_BYTES, &format!("{what}: the connection open during the fault"));
    }
    let after = probe_until_direct(lab, "bob", &mut p.proxy, DIRECT_AGAIN);
    assert_eq!(
        after.paths.last(),
        Some(&PathKind::Direct),
        "{what}: no direct path within {DIRECT_AGAIN:?} after the fault: {:?}",
        after.paths
    );
    assert!(p.daemon.proc.is_running(), "alice's daemon exited");
    Outcome { recovered, open, open_ended, direct_again: after.to_direct, paths: after.paths }
}

fn report(prefix: &str, what: &str, o: &Outcome) {
    let open = match &o.open.error {
        None => format!("recovered, {} MiB byte-exact", o.open.bytes >> 20),
        Some(e) => format!("failed after {} MiB echoed ({e})", o.open.recv_bytes >> 20),
    };
    say!(
        "[{prefix}] {what}: first new connection byte-exact {:.2} s after the fault ({} tries, \
         {:?}); the open connection {open}, ended {:.2} s after the fault; DIRECT again {:.2} s \
         later (paths {:?})",
        o.recovered.after.as_secs_f64(),
        o.recovered.tries,
        o.recovered.path,
        o.open_ended.as_secs_f64(),
        o.direct_again.map_or(f64::NAN, |d| d.as_secs_f64()),
        o.paths
    );
}

/// Scenario 2: `conntrack -F` on nat-a (alice's router) while bob -> alice is DIRECT.
pub fn conntrack_flush_recovers() {
    let Some(lab) = Lab::up("pf3", &["conntrack"]) else { return };
    let mut p = echo_pair(&lab, "alice", "bob");
    let outcome = through_fault(&lab, &mut p, "nat-a conntrack flush", || {
        let before = in_host(&lab, "nat-a", &["conntrack", "-C"]);
        in_host(&lab, "nat-a", &["conntrack", "-F"]);
        say!("[pf3] flushed nat-a's conntrack table ({} entries)", before.trim());
    });
    report("pf3", "nat-a conntrack flush", &outcome);
}

/// Scenario 4: nat-b's (bob's router's) uplink down for 5 s while bob -> alice is DIRECT. When
/// it comes back, its default route is put back, as a router's DHCP client would.
pub fn uplink_flap_recovers() {
    let Some(lab) = Lab::up("pf5", &[]) else { return };
    let mut p = echo_pair(&lab, "alice", "bob");
    let route = in_host(&lab, "nat-b", &["ip", "route", "show", "default"]);
    let route: Vec<&str> = route.split_whitespace().collect();
    assert!(route.first() == Some(&"default"), "nat-b has no default route: {route:?}");
    let outcome = through_fault(&lab, &mut p, "nat-b uplink flap", || {
        in_host(&lab, "nat-b", &["ip", "link", "set", "eth0", "down"]);
        // The outage itself.
        std::thread::sleep(Duration::from_secs(5));
        in_host(&lab, "nat-b", &["ip", "link", "set", "eth0", "up"]);
        let mut replace = vec!["ip", "route", "replace"];
        replace.extend(&route);
        in_host(&lab, "nat-b", &replace);
    });
    report("pf5", "nat-b uplink down 5 s", &outcome);
}

/// nat-b refuses every packet from and to nat-a's public address while bob's proxy first reaches
/// alice, so that each of DCUtR's dials fails at once and libp2p gives up on that relayed
/// connection. Once the block is lifted, a direct path must come back by itself: bob opens a fresh
/// relayed connection, on which hole punching runs again.
pub fn failed_hole_punch_is_retried() {
    let Some(lab) = Lab::up("pf6", &[]) else { return };
    const NAT_A: &str = "198.18.0.11"; // netlab's fixed address for nat-a
    let nft = |rule: &str| in_host(&lab, "nat-b", &["nft", rule]);
    nft("add table ip pf6block");
    // Forwarded packets (bob's dials out, alice's to a mapping of bob's), and alice's dials to
    // nat-b itself (no mapping: the router would drop them, and each dial would wait 10 s).
    for hook in ["forward", "input"] {
        nft(&format!("add chain ip pf6block {hook} {{ type filter hook {hook} priority 0 ; }}"));
        for dir in ["saddr", "daddr"] {
            let rule = format!("add rule ip pf6block {hook} ip {dir} {NAT_A}");
            nft(&format!("{rule} meta l4proto tcp reject with tcp reset"));
            nft(&format!("{rule} reject"));
        }
    }
    let mut p = echo_pair(&lab, "alice", "bob");
    let first = probe_until_direct(&lab, "bob", &mut p.proxy, Duration::ZERO);
    assert_eq!(first.paths, [PathKind::Relayed], "the first connection while blocked");
    p.daemon.proc.expect_line_from(
        "`hole punch failed`",
        0,
        Some(Stream::Err),
        Duration::from_secs(10),
        |l| l.contains("hole punch failed"),
    );
    nft("delete table ip pf6block");
    let after = probe_until_direct(&lab, "bob", &mut p.proxy, DIRECT_AGAIN);
    assert_eq!(
        after.paths.last(),
        Some(&PathKind::Direct),
        "no direct path within {DIRECT_AGAIN:?} after the block was lifted: {:?}",
        after.paths
    );
    let again = p.proxy.proc.wait_line_from(0, Some(Stream::Err), Duration::ZERO, |l| {
        l.contains("hole punching again")
    });
    assert!(again.is_some(), "DIRECT without a second hole punch: {}", p.proxy.proc.tail(30));
    say!(
        "[pf6] hole punching blocked, then allowed: DIRECT {:.2} s after the block was lifted \
         (paths {:?})",
        after.to_direct.map_or(f64::NAN, |d| d.as_secs_f64()),
        after.paths
    );
    assert!(p.daemon.proc.is_running(), "alice's daemon exited");
}
