//! NAT-lab benchmark of the `peerup` binary against raw TCP and OpenSSH `ssh -L` (`scripts/bench`).
//!
//! One lab (prefix `$BENCH_PREFIX`, default `bn1`) runs a relay server, a peerup node on the relay
//! host, on pubpeer and behind the cone and symmetric NATs, two sshd instances on the relay host
//! and Python sinks (`lab/bench.py`). Every case moves the same kind of payload: `$BENCH_BYTES`
//! random bytes (default 1 GiB) pushed one way, hashed by the sink with SHA-256 and checked by the
//! client. Cases run round-robin for `$BENCH_ROUNDS` rounds (default 3), with the order rotated
//! each round. Results go to `bench/results/<UTC date>-<commit>.{md,json}` and `latest.{md,json}`.
//!
//! Besides the round-robin cases: two bare forwarders in a chain, the latency floor of any
//! two-process tunnel (`lab/forward.rs`); rathole with Noise on the public path (`lab/rathole.rs`, when
//! `$BENCH_RATHOLE` is built), and `$BENCH_CONNS` concurrent connections through one proxy
//! (`lab/many.rs`). A PNG chart (`lab/chart.rs`) goes beside the results, and when they go to
//! bench/results the README's benchmark block is rewritten from them (`lab/summary.rs`).
//!
//! `BENCH_SMOKE=1` is the CI version: a few MiB, 1 round, 200 round trips, 50 × 64 KiB
//! concurrent connections, no rathole, results in `$BENCH_OUT` (default target/bench-smoke), no
//! targets asserted; any failure of the harness is a non-zero exit. `BENCH_FROM_JSON=<file>`
//! only redraws the chart (and the README block, for bench/results/latest.json) from a result.
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
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::{Lab, RESERVATION};
use node::{Node, PathKind, RELAY_IP, pair};
use py::EchoServer;
use ssh::Sshd;

#[path = "lab/cases.rs"]
mod cases;
#[path = "lab/chart.rs"]
mod chart;
#[path = "lab/forward.rs"]
mod forward;
#[path = "lab/many.rs"]
mod many;
#[path = "lab/measure.rs"]
mod measure;
#[path = "lab/rathole.rs"]
mod rathole;
#[path = "lab/report.rs"]
mod report;
#[path = "lab/summary.rs"]
mod summary;

use cases::*;
use measure::*;
use report::*;

pub(crate) const BENCH_PY: &str = include_str!("lab/bench.py");
pub(crate) const GIB: f64 = (1u64 << 30) as f64;
pub(crate) const MIB: f64 = (1u64 << 20) as f64;
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

/// What to run, from the environment.
pub(crate) struct Settings {
    pub(crate) smoke: bool,
    pub(crate) bytes: u64,
    pub(crate) rounds: usize,
    /// Round trips per latency measurement.
    pub(crate) rtt_n: u64,
    /// Connections (and bytes each) of the concurrency case.
    pub(crate) conns: u64,
    pub(crate) conn_bytes: u64,
    /// Where the results go.
    pub(crate) out: PathBuf,
    /// Whether that is bench/results (then the README block is rewritten too).
    pub(crate) published: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0");
        let pick = |full: u64, small: u64| if smoke { small } else { full };
        let published_dir = report::workspace().join("bench/results");
        let out = match std::env::var_os("BENCH_OUT") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ if smoke => report::workspace().join("target/bench-smoke"),
            _ => published_dir.clone(),
        };
        let same = |a: &PathBuf, b: &PathBuf| {
            a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b)
        };
        let published = out == published_dir || same(&out, &published_dir);
        assert!(!(smoke && published), "BENCH_SMOKE results must not go to bench/results");
        Settings {
            smoke,
            bytes: env_num("BENCH_BYTES", pick(1 << 30, 4 << 20)),
            rounds: env_num("BENCH_ROUNDS", pick(3, 1)).max(1) as usize,
            rtt_n: env_num("BENCH_RTT_N", pick(2000, 200)).max(1),
            conns: env_num("BENCH_CONNS", pick(1000, 50)).max(1),
            conn_bytes: env_num("BENCH_CONN_BYTES", pick(1 << 20, 64 << 10)).max(1),
            out,
            published,
        }
    }
}

fn main() {
    forward::serve_if_asked();
    if let Some(json) = std::env::var_os("BENCH_FROM_JSON") {
        report::redraw(std::path::Path::new(&json));
        return;
    }
    let set = Settings::from_env();
    // `run` has dropped every process and the lab by the time it returns.
    if !run(&set) {
        say!("[bench] FAILED: not every concurrent connection was byte-exact (results written)");
        std::process::exit(1);
    }
}

/// The whole benchmark; false when the concurrency case was not byte-exact.
fn run(set: &Settings) -> bool {
    let (bytes, rounds) = (set.bytes, set.rounds);
    let prefix = std::env::var("BENCH_PREFIX").unwrap_or_else(|_| "bn1".into());
    let tck = clk_tck();
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    say!(
        "[bench] {}payload {bytes} bytes, {rounds} rounds, {} round trips, {} × {} bytes \
         concurrent, {cores} cores, lab {prefix}, results to {}",
        if set.smoke { "SMOKE run: " } else { "" },
        set.rtt_n,
        set.conns,
        set.conn_bytes,
        set.out.display()
    );
    // Checked before the lab is built, so a missing font fails at once rather than at the end.
    chart::load_font().unwrap_or_else(|e| panic!("chart: {e}"));

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
    let (relay_sink, relay_sink_port) = start_sink(&lab, "relay", "0.0.0.0");
    let (alice_sink, alice_sink_port) = start_sink(&lab, "alice", "127.0.0.1");
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
    let forwarders = forward::Forwarders::start(&lab, relay_sink_port);
    cases.push(forwarders.case());
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
    let rathole = if set.smoke {
        Err("skipped in the smoke run (BENCH_SMOKE)".to_string())
    } else {
        rathole::binary().and_then(|bin| rathole::start(&lab, &bin, relay_sink_port))
    };
    let rathole_skip = match &rathole {
        Ok(r) => {
            cases.insert(4, r.case());
            None
        }
        Err(reason) => {
            say!("[bench] rathole: skipped: {reason}");
            Some(reason.lines().next().unwrap_or_default().to_string())
        }
    };
    // Every route ends at the relay host's sink, but bob's and carol's at alice's.
    for c in &mut cases {
        let (host, pid) = match c.route.ends_with("alice") {
            true => ("alice", alice_sink.pid()),
            false => ("relay host", relay_sink.pid()),
        };
        c.sink = Some(Tracked::one(&format!("sink ({host})"), pid));
    }
    // BENCH_CASES=id,id,…: measure only these cases (for experiments; a published run has all).
    if let Some(only) = std::env::var("BENCH_CASES").ok().filter(|v| !v.is_empty()) {
        assert!(!set.published, "a BENCH_CASES run must not replace bench/results: set BENCH_OUT");
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        cases.retain(|c| only.contains(&c.id));
        assert!(!cases.is_empty(), "BENCH_CASES={only:?} names no case");
    }

    let setup_s = started.elapsed().as_secs_f64();
    for round in 1..=rounds {
        let n = cases.len();
        for k in 0..n {
            let case = &mut cases[(k + round - 1) % n];
            throughput(&lab, &mut proxies, case, bytes, round, tck);
            latency(&lab, &mut proxies, case, round, set.rtt_n);
        }
        for k in 0..n {
            cold_start(&lab, &nodes, &mut cases[(k + round - 1) % n], round);
        }
    }

    for c in &mut cases {
        c.peak_rss = Some(memory_mib(&c.tracked, "VmHWM"));
    }
    drop(rathole);
    drop(forwarders);

    // Last, so that its reset of the daemon's VmHWM leaves the cases' peaks alone.
    let concurrency = many::run(
        &lab,
        &nodes[pubpeer],
        &nodes[relay_node].id,
        &relay_d,
        set.conns,
        set.conn_bytes,
    );

    let ctx = Context {
        settings: set,
        cores,
        idle_rss,
        setup_s,
        total_s: started.elapsed().as_secs_f64(),
        rathole_skip,
        concurrency: &concurrency,
    };
    let (md, js) = report(&ctx, &cases);
    write_results(set, &md, &js);
    println!("{md}");
    concurrency.all_exact()
    // Everything started in the lab ends here; `lab`, declared first, is dropped last (`down`).
}
