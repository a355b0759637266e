//! Scenario 5, idle longevity: an interactive OpenSSH session from bob to alice's sshd, through
//! bob's proxy over a DIRECT path, stays idle for 3 minutes (6 times the NATs' 30 s UDP timeout;
//! 30 minutes with `PEERUP_SOAK=1`), then still runs a command. Only peerup's keepalives (pings
//! every 2 s, QUIC keep-alives) hold the NAT mappings: ssh itself sends nothing while idle.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::lab::{Lab, RESERVATION};
use super::node::{Node, PathKind, Proxy, pair};
use super::paths::nodes;
use super::proc::{Proc, Stream};
use super::py::random_hex;
use super::recover::connection_path;
use super::ssh::{self, Sshd};

/// How long the session stays idle.
fn idle_for() -> Duration {
    let soak = std::env::var("PEERUP_SOAK").is_ok_and(|v| !v.is_empty() && v != "0");
    Duration::from_secs(if soak { 30 * 60 } else { 3 * 60 })
}

/// For a command's output to come back over the session.
const ANSWER: Duration = Duration::from_secs(10);

/// Short `ssh … echo ok` sessions through the proxy until one runs DIRECT (within 20 s).
fn ssh_until_direct(lab: &Lab, sshd: &Sshd, proxy: &mut Proxy) -> Duration {
    let start = Instant::now();
    loop {
        let mark = proxy.proc.mark();
        let out = sshd.ssh(lab, "bob", proxy.port, "echo ok").ok();
        assert_eq!(out.trim(), "ok", "ssh through the proxy");
        if connection_path(proxy, mark) == PathKind::Direct {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no DIRECT ssh session within 20 s");
    }
}

/// `ssh -T … sh` in bob reading its commands from a FIFO that the test writes.
fn interactive_ssh(lab: &Lab, sshd: &Sshd, port: u16) -> (Proc, File) {
    let fifo = lab.work().join("ssh-stdin");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    // Read and write: opening does not wait for a reader, and ssh sees no EOF while it is open.
    let stdin = File::options().read(true).write(true).open(&fifo).expect("open fifo");
    let (options, home) = sshd.client_options("bob");
    let quoted: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
    let script = format!(
        "exec ssh {} -T -p {port} -o LogLevel=ERROR root@127.0.0.1 sh < '{}'",
        quoted.join(" "),
        fifo.display()
    );
    let env = [("HOME", home.to_str().expect("utf-8 path"))];
    let proc = lab.spawn(Some("bob"), "bob-ssh-idle", Path::new("sh"), &["-c", &script], &env);
    (proc, stdin)
}

/// Writes `echo <marker>` into the session and waits for the marker to come back.
#[track_caller]
fn round_trip(ssh: &mut Proc, stdin: &mut File, what: &str) -> Duration {
    let marker = format!("{what}-{}", random_hex(8));
    let from = ssh.mark();
    let sent = Instant::now();
    writeln!(stdin, "echo {marker}").expect("write to the ssh session");
    ssh.expect_line_from(&format!("`{marker}`"), from, Some(Stream::Out), ANSWER, |l| l == marker);
    sent.elapsed()
}

pub fn ssh_session_survives() {
    let Some(lab) = Lab::up("pf6", &ssh::TOOLS) else { return };
    let sshd = Sshd::start(&lab, "alice", 2222);
    let (relay, n): (_, Vec<Node>) = nodes(&lab, &["alice", "bob"]);
    let (alice, bob) = (&n[0], &n[1]);
    pair(&lab, alice, bob);
    alice.service_add(&lab, "ssh", &format!("127.0.0.1:{}", sshd.port));
    let mut daemon = alice.daemon(&lab);
    daemon.wait_reservation(0, &relay.id, RESERVATION);
    let mut proxy = bob.proxy(&lab, &alice.id, "ssh");
    let to_direct = ssh_until_direct(&lab, &sshd, &mut proxy);

    let mark = proxy.proc.mark();
    let (mut session, mut stdin) = interactive_ssh(&lab, &sshd, proxy.port);
    let first = round_trip(&mut session, &mut stdin, "ready");
    assert_eq!(connection_path(&mut proxy, mark), PathKind::Direct, "the session is not DIRECT");

    let idle = idle_for();
    let idle_from = proxy.proc.mark();
    // The scenario itself: nothing is sent over the session for `idle`.
    std::thread::sleep(idle);
    assert!(session.is_running(), "the ssh session ended while idle:\n{}", session.tail(20));
    let answer = round_trip(&mut session, &mut stdin, "after-idle");
    writeln!(stdin, "exit").expect("write exit");
    let status = session.finish(Duration::from_secs(30));
    assert!(status.success(), "ssh exited with {status}");
    let broke = proxy.proc.text(None).lines().skip(idle_from).any(|l| l.contains("Error:"));
    assert!(!broke, "the proxy reported an error while the session was idle");
    say!(
        "[pf6] ssh over DIRECT (reached in {:.2} s): idle {} s, then `echo` answered in {:.0} ms \
         (before the idle: {:.0} ms); the session exited cleanly",
        to_direct.as_secs_f64(),
        idle.as_secs(),
        answer.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0
    );
    assert!(daemon.proc.is_running(), "alice's daemon exited");
}
