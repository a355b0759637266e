//! NAT-lab benchmark of the `peerup` binary against raw TCP and OpenSSH `ssh -L` (`scripts/bench`).
//!
//! One lab (prefix `$BENCH_PREFIX`, default `bn1`) runs a relay server, a peerup node on the relay
//! host, on pubpeer and behind the cone and symmetric NATs, two sshd instances on the relay host
//! and Python sinks (`lab/bench.py`). Every case moves the same kind of payload: `$BENCH_BYTES`
//! random bytes (default 1 GiB) pushed one way, hashed by the sink with SHA-256 and checked by the
//! client. Cases run round-robin for `$BENCH_ROUNDS` rounds (default 3), with the order rotated
//! each round. Results go to `bench/results/<UTC date>-<commit>.{md,json}` and `latest.{md,json}`.
//!
//! Reuses the NAT-lab test harness (`tests/netlab/*.rs`). Needs root. The binary under test is
//! `$PEERUP_NETLAB_BIN` (scripts/bench points it at the release build).

/// `eprintln!` that nothing captures (the harness modules use it).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[allow(dead_code, reason = "shared with the netlab tests")]
#[path = "../tests/netlab/lab.rs"]
mod lab;
#[allow(dead_code, reason = "shared with the netlab tests")]
#[path = "../tests/netlab/node.rs"]
mod node;
#[allow(dead_code, reason = "shared with the netlab tests")]
#[path = "../tests/netlab/paths.rs"]
mod paths;
#[allow(dead_code, reason = "shared with the netlab tests")]
#[path = "../tests/netlab/proc.rs"]
mod proc;
#[allow(dead_code, reason = "shared with the netlab tests")]
#[path = "../tests/netlab/py.rs"]
mod py;
#[allow(dead_code, reason = "shared with the netlab tests")]
#[path = "../tests/netlab/ssh.rs"]
mod ssh;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lab::{Lab, RESERVATION};
use node::{Node, PathKind, RELAY_IP, pair};
use py::EchoServer;
use ssh::Sshd;

#[path = "lab/cases.rs"]
mod cases;
#[path = "lab/measure.rs"]
mod measure;
#[path = "lab/report.rs"]
mod report;

use cases::*;
use measure::*;
use report::*;

pub(crate) const BENCH_PY: &str = include_str!("lab/bench.py");
pub(crate) const GIB: f64 = (1u64 << 30) as f64;
pub(crate) const MIB: f64 = (1u64 << 20) as f64;
/// Round trips per latency measurement.
pub(crate) const RTT_N: u32 = 2000;
/// How long a proxy may take to report `[DIRECT]`.
pub(crate) const DIRECT_WINDOW: Duration = Duration::from_secs(30);
/// For one payload transfer.
pub(crate) const TRANSFER: Duration = Duration::from_secs(900);

pub(crate) fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
        }
        _ => default,
    }
}

fn main() {
    let bytes = env_num("BENCH_BYTES", 1 << 30);
    let rounds = env_num("BENCH_ROUNDS", 3).max(1) as usize;
    let prefix = std::env::var("BENCH_PREFIX").unwrap_or_else(|_| "bn1".into());
    let tck = clk_tck();
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    say!("[bench] payload {bytes} bytes, {rounds} rounds, {cores} cores, lab {prefix}");

    let Some(lab) = Lab::up(&prefix, &ssh::TOOLS) else {
        say!("[bench] the NAT lab is not available: nothing measured");
        std::process::exit(1);
    };
    std::fs::write(lab.script("bench.py"), BENCH_PY).expect("write bench.py");

    // peerup: relay server, a node on the relay host, pubpeer, alice (cone), bob (cone), carol
    // (symmetric). Circuits may carry every round's payload.
    let mut relay = node::Relay::setup(&lab);
    let yaml = std::fs::read_to_string(relay.config()).expect("relay config");
    let yaml: String = yaml
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("session_data_limit:") {
                "  session_data_limit: \"1024GB\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(relay.config(), yaml + "\n").expect("relay config");
    let hosts = ["relay", "pubpeer", "alice", "bob", "carol"];
    let nodes: Vec<Node> = hosts.iter().map(|h| Node::init(&lab, h, &relay)).collect();
    let (relay_node, pubpeer, alice, bob, carol) = (0, 1, 2, 3, 4);
    relay.start(&lab);
    pair(&lab, &nodes[relay_node], &nodes[pubpeer]);
    pair(&lab, &nodes[alice], &nodes[bob]);
    pair(&lab, &nodes[alice], &nodes[carol]);

    // Sinks and echo servers; the relay host's sink also takes raw connections from outside.
    let (_relay_sink, relay_sink_port) = start_sink(&lab, "relay", "0.0.0.0");
    let (_alice_sink, alice_sink_port) = start_sink(&lab, "alice", "127.0.0.1");
    let relay_echo = EchoServer::start(&lab, "relay", "127.0.0.1");
    let alice_echo = EchoServer::start(&lab, "alice", "127.0.0.1");
    for (n, sink, echo) in
        [(relay_node, relay_sink_port, &relay_echo), (alice, alice_sink_port, &alice_echo)]
    {
        nodes[n].service_add(&lab, "sink", &format!("127.0.0.1:{sink}"));
        nodes[n].service_add(&lab, "echo", &echo.local_addr());
    }
    let mut daemons = Vec::new();
    for n in [relay_node, alice] {
        let mut d = nodes[n].daemon(&lab);
        d.wait_reservation(0, &relay.id, RESERVATION);
        daemons.push(d);
    }
    std::thread::sleep(Duration::from_secs(2));
    let relay_pid = relay.pid().expect("relay runs");
    let relay_d = Tracked::one("daemon (relay host)", daemons[0].proc.pid());
    let alice_d = Tracked::one("daemon (alice)", daemons[1].proc.pid());
    let relay_t = Tracked::one("relay server", relay_pid);
    let mut idle_rss = BTreeMap::new();
    for t in [&relay_d, &alice_d, &relay_t] {
        idle_rss.insert(t.name.clone(), memory_mib(std::slice::from_ref(t), "VmRSS").0);
    }
    say!("[bench] idle RSS after reservation + 2 s (MiB): {idle_rss:?}");

    // OpenSSH: one sshd per cipher case on the relay host, forwards from pubpeer to the sink.
    let sshd_default = Sshd::start_on(&lab, "relay", RELAY_IP, 2222);
    let sshd_aes = Sshd::start_on(&lab, "relay", RELAY_IP, 2223);
    let (ssh_default, cipher_default) =
        ssh_forward(&lab, &sshd_default, 7101, relay_sink_port, None);
    let aes = "aes128-gcm@openssh.com";
    let (ssh_aes, cipher_aes) = ssh_forward(&lab, &sshd_aes, 7102, relay_sink_port, Some(aes));
    say!("[bench] ssh -L ciphers: default {cipher_default}, -c {aes}: {cipher_aes}");

    // Long-lived proxies to the sinks, warmed up until they take the expected path.
    let mut proxies = Vec::new();
    let mut warm = Vec::new();
    for (client, server, want) in [
        (pubpeer, relay_node, PathKind::Direct),
        (bob, alice, PathKind::Direct),
        (carol, alice, PathKind::Relayed),
    ] {
        let t0 = Instant::now();
        let mut p = nodes[client].proxy(&lab, &nodes[server].id, "sink");
        let (secs, errors) = warm_up(&lab, &mut p, &nodes[client].host, want, t0);
        warm.push((secs, errors));
        proxies.push(p);
    }

    let mut cases = Vec::new();
    let mut c = Case::new("raw-public", "raw TCP", "pubpeer → relay host", "pubpeer");
    (c.ip, c.port) = (RELAY_IP.into(), relay_sink_port);
    cases.push(c);
    for (id, label, local, sshd, client, cipher) in [
        (
            "ssh-default",
            "ssh -L (default cipher)",
            7101,
            &sshd_default,
            &ssh_default,
            &cipher_default,
        ),
        ("ssh-aes128gcm", "ssh -L -c aes128-gcm", 7102, &sshd_aes, &ssh_aes, &cipher_aes),
    ] {
        let mut c = Case::new(id, label, "pubpeer → relay host", "pubpeer");
        c.port = local;
        c.tracked = vec![
            Tracked { name: "sshd (with children)".into(), pid: sshd.proc.pid(), tree: true },
            Tracked::one("ssh", client.pid()),
        ];
        c.info.push(format!("cipher {cipher}"));
        cases.push(c);
    }
    let mut c = Case::new(
        "peerup-public-direct",
        "peerup proxy, DIRECT",
        "pubpeer → relay host",
        "pubpeer",
    );
    c.port = proxies[0].port;
    c.tracked = vec![relay_d.clone(), Tracked::one("proxy (pubpeer)", proxies[0].proc.pid())];
    c.proxy = Some((0, PathKind::Direct));
    c.cold = Some(ColdSpec {
        client: pubpeer,
        server_id: nodes[relay_node].id.clone(),
        want_direct: true,
    });
    (c.warmup_to_direct_s, c.problems) = (Some(warm[0].0), warm[0].1.clone());
    cases.push(c);
    let mut c = Case::new("raw-nat", "raw TCP through NAT", "alice → relay host", "alice");
    (c.ip, c.port) = (RELAY_IP.into(), relay_sink_port);
    cases.push(c);
    let mut c =
        Case::new("peerup-nat-direct", "peerup proxy, hole-punched DIRECT", "bob → alice", "bob");
    c.port = proxies[1].port;
    c.tracked = vec![alice_d.clone(), Tracked::one("proxy (bob)", proxies[1].proc.pid())];
    c.proxy = Some((1, PathKind::Direct));
    c.cold = Some(ColdSpec { client: bob, server_id: nodes[alice].id.clone(), want_direct: true });
    (c.warmup_to_direct_s, c.problems) = (Some(warm[1].0), warm[1].1.clone());
    cases.push(c);
    let mut c = Case::new("peerup-nat-relayed", "peerup proxy, RELAYED", "carol → alice", "carol");
    c.port = proxies[2].port;
    c.tracked = vec![
        alice_d.clone(),
        Tracked::one("proxy (carol)", proxies[2].proc.pid()),
        relay_t.clone(),
    ];
    c.proxy = Some((2, PathKind::Relayed));
    c.cold =
        Some(ColdSpec { client: carol, server_id: nodes[alice].id.clone(), want_direct: false });
    c.problems = warm[2].1.clone();
    cases.push(c);
    say!("[bench] rathole: skipped (not built here)");

    let setup_s = started.elapsed().as_secs_f64();
    for round in 1..=rounds {
        let n = cases.len();
        for k in 0..n {
            let case = &mut cases[(k + round - 1) % n];
            throughput(&lab, &mut proxies, case, bytes, round, tck);
            latency(&lab, &mut proxies, case, round);
        }
        for k in 0..n {
            cold_start(&lab, &nodes, &mut cases[(k + round - 1) % n], round);
        }
    }

    let ctx = Context {
        bytes,
        rounds,
        cores,
        idle_rss,
        setup_s,
        total_s: started.elapsed().as_secs_f64(),
    };
    let (md, js) = report(&ctx, &cases);
    write_results(&md, &js);
    println!("{md}");
    // Everything started in the lab ends here; `lab`, declared first, is dropped last (`down`).
}
