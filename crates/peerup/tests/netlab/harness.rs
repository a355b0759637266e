//! A check of the lab and of this harness alone, without peerup's networking: line capture and
//! process-group kill, the echo server and client, NAT to the relay host, the capture's
//! plaintext detection, and sshd with the generated keys. When this fails, the other tests'
//! failures say nothing about peerup.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::lab::{COMMAND, Lab, PAYLOAD, READY, TRANSFER};
use super::node::RELAY_IP;
use super::proc::Stream;
use super::py::{Capture, Client, EchoServer, random_hex};
use super::ssh::{self, Sshd};

fn ns_pids(ns: &str) -> String {
    let out = Command::new("ip")
        .env("PATH", super::lab::path_env())
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn harness_selfcheck() {
    let Some(lab) = Lab::up("pu0", &ssh::TOOLS) else { return };
    let sh = Path::new("sh");

    // Lines from both streams; a process that exited ends a wait at once.
    let script = "echo one; echo two >&2; exit 3";
    let mut p = lab.spawn(Some("alice"), "lines", sh, &["-c", script], &[]);
    let (_, two) = p.wait_line_from(0, Some(Stream::Err), READY, |l| l == "two").expect("stderr");
    assert_eq!(two.stream, Stream::Err);
    p.expect_line("one", Some(Stream::Out), READY, |l| l == "one");
    let waited = Instant::now();
    assert!(p.wait_line_from(0, None, Duration::from_secs(30), |l| l == "never").is_none());
    assert!(waited.elapsed() < Duration::from_secs(5), "a wait outlived the process");
    assert_eq!(p.finish(COMMAND).code(), Some(3));

    // Dropping a Proc ends its whole process group.
    let script = "sleep 300 & sleep 300 & echo started; wait";
    let mut p = lab.spawn(Some("bob"), "sleepers", sh, &["-c", script], &[]);
    p.expect_line("started", Some(Stream::Out), READY, |l| l == "started");
    assert!(!ns_pids(&lab.ns("bob")).is_empty());
    drop(p);
    assert_eq!(ns_pids(&lab.ns("bob")), "", "processes left in bob's namespace");

    // Hosts are where the README says.
    let args = ["-4", "-o", "addr", "show", "dev", "eth0"];
    let out = lab.run(Some("alice"), "alice-addr", Path::new("ip"), &args, &[], COMMAND).ok();
    assert!(out.contains("192.168.1.2/24"), "alice's address: {out}");

    // The echo service on alice's loopback: byte-exact from alice, unreachable from bob.
    let echo = EchoServer::start(&lab, "alice", "127.0.0.1");
    let t = Client::local("alice", echo.port, PAYLOAD).run(&lab, "alice-local", TRANSFER);
    t.assert_exact(PAYLOAD, "echo on alice's loopback");
    say!("[pu0] loopback echo: {}", t.summary());
    let t = Client::local("bob", echo.port, 1024).run(&lab, "bob-local", COMMAND);
    assert!(t.error.is_some() && t.recv_bytes == 0, "alice's loopback seen from bob: {t:?}");

    // Plaintext from alice to the relay host: seen from nat-a's public address, and by the capture.
    let relay_echo = EchoServer::start(&lab, "relay", "0.0.0.0");
    let (marker, absent) = (random_hex(24), random_hex(24));
    let capture = Capture::start(&lab, "relay", &[("marker", &marker), ("absent", &absent)]);
    let plain = Client {
        host: "alice",
        ip: RELAY_IP,
        port: relay_echo.port,
        bytes: 4 << 20,
        marker: Some(&marker),
        idle: Duration::from_secs(30),
    };
    plain.run(&lab, "alice-to-relay", TRANSFER).assert_exact(4 << 20, "alice -> relay, plain");
    let mut relay_echo = relay_echo;
    relay_echo.proc.expect_line("from nat-a's address", Some(Stream::Out), READY, |l| {
        l.contains(" OPEN 198.18.0.11:")
    });
    let stats = capture.stop();
    say!("[pu0] relay capture: {}", stats.summary());
    assert!(stats.hits["marker"] > 0, "capture missed plaintext: {stats:?}");
    assert_eq!(stats.hits["absent"], 0, "capture found a marker never sent: {stats:?}");
    assert!(stats.bytes >= 8 << 20, "capture saw too few bytes: {stats:?}");

    // sshd with the generated keys, reached directly on alice's loopback.
    let mut sshd = Sshd::start(&lab, "alice", 2222);
    let out = sshd.ssh(&lab, "alice", sshd.port, "echo ok").ok();
    assert_eq!(out.trim(), "ok");
    sshd.proc.expect_line("Accepted publickey for root", Some(Stream::Err), READY, |l| {
        l.contains("Accepted publickey for root")
    });
}
