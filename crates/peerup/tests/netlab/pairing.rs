//! Pairing through real NATs: alice (cone NAT, authorized on the relay, daemon running with an echo
//! service) runs `invite --non-interactive`; bob (another cone NAT, no config at all) runs `join`,
//! which creates his config. With no other step bob pings alice and moves bytes through
//! `peerup proxy`. Prints the time from starting `join` to the first successful ping.

use std::time::{Duration, Instant};

use super::lab::{Lab, READY, RESERVATION};
use super::node::{Node, Relay};
use super::paths::serve_echo;
use super::proc::Stream;
use super::py::Client;

/// Bytes moved through bob's proxy.
const BYTES: u64 = 4 << 20;
/// How long the first ping may take to succeed after `join` returns.
const PING_WINDOW: Duration = Duration::from_secs(20);

pub fn invite_join_then_proxy() {
    let Some(lab) = Lab::up("pp1", &[]) else { return };
    let mut relay = Relay::setup(&lab);
    let alice = Node::init(&lab, "alice", &relay);
    relay.start(&lab);
    let (_echo, mut daemon) = serve_echo(&lab, &alice, &relay);

    // Go peer-up's quick start, word for word: `peerup invite --name home` on the home server,
    // `peerup join <code> --name laptop` on the laptop, then `peerup proxy home …` there.
    let mut invite =
        alice.spawn(&lab, "invite", &["invite", "--non-interactive", "--name", "home"]);
    let code =
        invite.expect_line("the invite code", Some(Stream::Out), READY, |l| !l.trim().is_empty());
    let code = code.trim().to_string();
    assert!(code.replace('-', "").len() <= 32, "code too long: {code}");

    let mut bob = Node::bare(&lab, "bob");
    let start = Instant::now();
    let out = bob.peerup(&lab, "join", &["join", &code, "--name", "laptop"]).ok();
    let joined = start.elapsed();
    assert!(out.contains("Paired with \"home\""), "{out}");
    let status = invite.finish(READY);
    assert!(status.success(), "invite failed: {}", invite.text(None));
    bob.id = bob.peerup(&lab, "whoami", &["whoami"]).ok().trim().to_string();

    // The first successful ping, retried until the window closes.
    let first_ping = loop {
        let n = bob.peerup(&lab, "ping", &["ping", "-c", "1", "--json", "home"]);
        if n.success && n.stdout.contains("\"rtt_ms\"") {
            break start.elapsed();
        }
        assert!(start.elapsed() < joined + PING_WINDOW, "bob never pinged alice: {}", n.stderr);
        std::thread::sleep(Duration::from_millis(200));
    };
    say!(
        "[pp1] pairing: join took {:.2} s; join start -> first successful ping {:.2} s",
        joined.as_secs_f64(),
        first_ping.as_secs_f64()
    );

    let laptop = alice.peerup(&lab, "names", &["resolve", "laptop"]).ok();
    assert!(laptop.contains(&bob.id), "home knows the joiner as the name it offered: {laptop}");
    let mut proxy = bob.proxy(&lab, "home", "echo");
    let mark = proxy.proc.mark();
    let t = Client::local("bob", proxy.port, BYTES).run(
        &lab,
        "bob-paired-echo",
        Duration::from_secs(120),
    );
    t.assert_exact(BYTES, "bob -> alice echo after pairing");
    let (path, line, _) = proxy.path_from(mark, Duration::from_secs(10));
    say!("[pp1] bob -> alice after pairing: {path:?}: {} ({line})", t.summary());
    assert!(daemon.proc.is_running(), "alice's daemon exited");
}

/// `relay pair --count 3`; alice, bob and dave (behind the carrier-grade NAT) each join with one
/// command and start their daemon; then every member pings every other one (introductions made
/// the earlier members accept the later ones).
pub fn group_of_three() {
    let Some(lab) = Lab::up("pp2", &[]) else { return };
    let mut relay = Relay::setup(&lab);
    relay.start(&lab);
    let out = relay.peerup(&lab, "pair", &["relay", "pair", "--count", "3", "--json"]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("relay pair --json: {e}: {out}"));
    let codes: Vec<String> = v["codes"]
        .as_array()
        .unwrap_or_else(|| panic!("no codes: {v}"))
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 3, "{v}");
    let start = Instant::now();
    let mut members = Vec::new();
    for (host, code) in ["alice", "bob", "dave"].into_iter().zip(&codes) {
        let mut node = Node::bare(&lab, host);
        let out = node.peerup(&lab, "join", &["join", code]).ok();
        assert!(out.contains("Joined group"), "{host}: {out}");
        node.id = node.peerup(&lab, "whoami", &["whoami"]).ok().trim().to_string();
        let mut daemon = node.daemon(&lab);
        daemon.wait_reservation(0, &relay.id, RESERVATION);
        members.push((node, daemon));
    }
    let joined = start.elapsed();
    let deadline = Instant::now() + PING_WINDOW;
    for (a, _) in &members {
        for (b, _) in members.iter().filter(|(b, _)| b.id != a.id) {
            loop {
                let n = a.peerup(&lab, "ping", &["ping", "-c", "1", "--json", &b.id]);
                if n.success && n.stdout.contains("\"rtt_ms\"") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} cannot ping {}: {}",
                    a.host,
                    b.host,
                    n.stderr
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    say!(
        "[pp2] group of 3: joins and daemons up in {:.2} s; all 6 pings answered {:.2} s after the first join",
        joined.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    let list = relay.peerup(&lab, "pair-list", &["relay", "pair", "--list", "--json"]).ok();
    let groups: serde_json::Value = serde_json::from_str(&list).expect("relay pair --list --json");
    assert_eq!(groups[0]["used"], 3, "{list}");
}
