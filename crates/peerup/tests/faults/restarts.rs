//! Scenario 3, peer restarts: alice's daemon is stopped (SIGTERM) and started again, then crashes
//! (SIGKILL) and is started again, while bob's proxy to her keeps running. The proxy's listener
//! must keep accepting, and the next connection once alice is back must be byte-exact within 10 s.

use std::time::{Duration, Instant};

use super::lab::{READY, RESERVATION};
use super::node::{Daemon, PathKind};
use super::paths::{echo_pair, probe_until_direct};
use super::proc::Stream;
use super::py::Client;
use super::recover::{PROBE, connection_path};

/// From alice's daemon being back (holding its reservation) to a byte-exact connection.
const NEXT_CONNECTION: Duration = Duration::from_secs(10);
/// For the old daemon to exit.
const EXIT: Duration = Duration::from_secs(10);

pub fn daemon_restarts() {
    let Some(lab) = super::lab::Lab::up("pf4", &[]) else { return };
    let mut p = echo_pair(&lab, "alice", "bob");
    let before = probe_until_direct(&lab, "bob", &mut p.proxy, Duration::from_secs(20));
    assert!(before.to_direct.is_some(), "no DIRECT path before the restarts: {:?}", before.paths);

    for (round, signal) in ["TERM", "KILL"].into_iter().enumerate() {
        let old = &mut p.daemon.proc;
        old.signal(signal);
        let status = old.wait_exit(EXIT);
        assert!(status.is_some(), "alice's daemon did not exit on SIG{signal}");

        let started = Instant::now();
        let mut proc = p.server.spawn(&lab, &format!("daemon-{}", round + 2), &["daemon"]);
        proc.expect_line("`Peer ID: <id>`", Some(Stream::Out), READY, |l| {
            l.starts_with("Peer ID:")
        });
        let mut daemon = Daemon { proc };
        daemon.wait_reservation(0, &p.relay.id, RESERVATION);
        let back = Instant::now();

        // Exactly one connection: the proxy must not need retries from the user.
        let mark = p.proxy.proc.mark();
        let mut client = Client::local("bob", p.proxy.port, PROBE);
        client.idle = NEXT_CONNECTION;
        let t = client.run(&lab, &format!("bob-after-sig{signal}"), NEXT_CONNECTION * 3);
        let took = back.elapsed();
        t.assert_exact(PROBE, &format!("bob's next connection after alice's SIG{signal} restart"));
        assert!(
            took <= NEXT_CONNECTION,
            "after SIG{signal}: the next connection took {took:?} (> {NEXT_CONNECTION:?}): {t:?}"
        );
        let path = connection_path(&mut p.proxy, mark);
        assert!(p.proxy.proc.is_running(), "bob's proxy exited");
        let direct = probe_until_direct(&lab, "bob", &mut p.proxy, Duration::from_secs(20));
        say!(
            "[pf4] alice's daemon SIG{signal} and restart: reservation {:.2} s after the start; \
             bob's next connection byte-exact in {:.2} s ({path:?}, first byte {:.0} ms); DIRECT \
             again: {:?} (paths {:?})",
            (back - started).as_secs_f64(),
            took.as_secs_f64(),
            t.ttfb_ms.unwrap_or(f64::NAN),
            direct.to_direct,
            direct.paths
        );
        assert_eq!(
            direct.paths.last(),
            Some(&PathKind::Direct),
            "no DIRECT path after SIG{signal}"
        );
        p.daemon = daemon;
    }
}
