//! Network changes under a running daemon: alice's LAN is renumbered while bob's tunnel to her
//! is DIRECT, and new connections must work again within 15 s with no restart.

use std::time::{Duration, Instant};

use super::lab::Lab;
use super::node::PathKind;
use super::paths::{echo_pair, probe_until_direct};
use super::proc::Stream;
use super::py::Client;

/// Bytes of each connection tried after the change.
const PROBE: u64 = 256 << 10;
/// The bound: working tunnels within 15 s of the address change.
const RECOVERY: Duration = Duration::from_secs(15);

/// Moves `host` from `old` to `new` in its /24, as a DHCP renumbering would: the new address
/// first (promoted when the old one goes), then the old one removed and the default route put back.
fn renumber(lab: &Lab, host: &str, old: &str, new: &str) {
    let ns = lab.ns(host);
    let steps: [&[&str]; 4] = [
        &["sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"],
        &["ip", "addr", "add", &format!("{new}/24"), "dev", "eth0"],
        &["ip", "addr", "del", &format!("{old}/24"), "dev", "eth0"],
        &["ip", "route", "replace", "default", "via", "192.168.1.1", "dev", "eth0"],
    ];
    for step in steps {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(step)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{host}: {step:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// alice (cone NAT) gets a new LAN address while bob's proxy to her echo service runs DIRECT.
/// Her daemon must notice, re-reserve and come back: new connections through bob's proxy work
/// within 15 s (byte-exact), and a direct path returns.
pub fn address_change_recovers() {
    let Some(lab) = Lab::up("pn1", &[]) else { return };
    let mut p = echo_pair(&lab, "alice", "bob");
    let window = Duration::from_secs(20);
    let before = probe_until_direct(&lab, "bob", &mut p.proxy, window);
    assert!(before.to_direct.is_some(), "no DIRECT path before the change: {:?}", before.paths);

    let mark = p.daemon.proc.mark();
    renumber(&lab, "alice", "192.168.1.2", "192.168.1.3");
    let changed = Instant::now();
    p.daemon.proc.expect_line_from(
        "`Network change: … -192.168.1.2`",
        mark,
        Some(Stream::Out),
        Duration::from_secs(10),
        |l| l.starts_with("Network change:") && l.contains("-192.168.1.2"),
    );
    let noticed = changed.elapsed();

    // New connections, one after another, until one is byte-exact.
    let mut tries = 0;
    let recovered = loop {
        tries += 1;
        let mut client = Client::local("bob", p.proxy.port, PROBE);
        client.idle = Duration::from_secs(3);
        let t = client.run(&lab, &format!("bob-after-{tries}"), Duration::from_secs(20));
        if t.is_exact(PROBE) {
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < RECOVERY,
            "no working connection {RECOVERY:?} after alice's address changed ({tries} tries, last: {t:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let reserved = p.daemon.wait_reservation(mark, &p.relay.id, Duration::from_secs(10));
    assert!(reserved > mark, "alice did not reserve again after the change");

    let after = probe_until_direct(&lab, "bob", &mut p.proxy, window);
    let to_direct = after.to_direct.map(|d| d.as_secs_f64());
    say!(
        "[pn1] alice renumbered: daemon noticed in {:.2} s; first working connection {:.2} s after \
         the change ({tries} tries); DIRECT again {:?} s later (paths {:?})",
        noticed.as_secs_f64(),
        recovered.as_secs_f64(),
        to_direct,
        after.paths
    );
    assert!(recovered <= RECOVERY, "recovered only after {recovered:?}");
    assert_eq!(
        after.paths.last(),
        Some(&PathKind::Direct),
        "no direct path within {window:?} after the change: {:?}",
        after.paths
    );
    assert!(p.daemon.proc.is_running(), "alice's daemon exited");
}
