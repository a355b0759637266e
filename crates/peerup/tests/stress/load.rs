//! Scenario 6, load: hundreds of concurrent TCP connections through one `peerup proxy` to alice's
//! echo service, each sending its own 1 MiB while reading the echo back (`bench.py many --echo`,
//! SHA-256 checked), once on the hole-punched DIRECT path (bob) and once over one relayed
//! connection (carol, symmetric NAT). The resident memory of alice's daemon, the proxy and (when
//! relayed) the relay server is sampled during the run and bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::lab::{self, Lab};
use super::measure::reset_peak;
use super::node::{Daemon, Node, PathKind, Proxy, Relay, Tally, pair};
use super::paths::{probe_until_direct, serve_echo};
use super::proc::Stream;
use super::py::EchoServer;
use super::rss::{Sampler, Series, hwm_mib, rss_mib};

/// The benchmark's helpers; `many --echo` is the concurrent client.
pub const BENCH_PY: &str = include_str!("../../benches/lab/bench.py");
/// Bound on the peak RSS of each peerup process during a load run (debug build). Measured peaks
/// are 2–4× below it (docs/reliability.md); an unbounded per-stream buffer would pass it.
pub const RSS_BOUND_MIB: f64 = 300.0;
/// For the whole concurrent run (the client's own limit; the process gets a minute more).
const RUN_LIMIT: Duration = Duration::from_secs(420);
/// The relay's `session_data_limit` in these tests. Every stream of a proxy rides on ONE relayed
/// connection, i.e. one circuit, and libp2p counts both directions of a circuit against the one
/// limit: 500 × 1 MiB each way is 1,000 MiB, 98 % of the default `1GB`.
pub const CIRCUIT_DATA_LIMIT: &str = "64GB";

/// Connections and bytes each way per connection: 500 × 1 MiB, or 2,000 × 4 MiB with
/// `PEERUP_SOAK=1`; `PEERUP_STRESS_CONNS` / `PEERUP_STRESS_BYTES` override.
fn shape() -> (u64, u64) {
    let (conns, bytes) = if super::soak() { (2000, 4 << 20) } else { (500, 1 << 20) };
    (
        super::env_num("PEERUP_STRESS_CONNS", conns).max(1),
        super::env_num("PEERUP_STRESS_BYTES", bytes).max(1),
    )
}

/// Sets `resources.<key>: <value>` in a relay's config (before it starts).
pub fn set_relay_resource(relay: &Relay, key: &str, value: &str) {
    let text = std::fs::read_to_string(relay.config()).expect("relay config");
    let prefix = format!("{key}:");
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&prefix) {
                found = true;
                format!("  {key}: {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "relay config has no resources.{key}:\n{text}");
    std::fs::write(relay.config(), lines.join("\n") + "\n").expect("write relay config");
}

/// Relay, alice serving `echo`, and `client`'s proxy to it.
pub struct Setup {
    pub relay: Relay,
    pub alice: Node,
    #[allow(dead_code, reason = "kept for the test's duration")]
    pub client: Node,
    pub echo: EchoServer,
    pub daemon: Daemon,
    pub proxy: Proxy,
}

/// Sets the lab up with the relay's circuit data limit raised to [`CIRCUIT_DATA_LIMIT`].
pub fn setup(lab: &Lab, client: &str) -> Setup {
    let mut relay = Relay::setup(lab);
    set_relay_resource(&relay, "session_data_limit", &format!("\"{CIRCUIT_DATA_LIMIT}\""));
    let alice = Node::init(lab, "alice", &relay);
    let client = Node::init(lab, client, &relay);
    relay.start(lab);
    pair(lab, &alice, &client);
    let (echo, daemon) = serve_echo(lab, &alice, &relay);
    let proxy = client.proxy(lab, &alice.id, "echo");
    std::fs::write(lab.script("bench.py"), BENCH_PY).expect("write bench.py");
    Setup { relay, alice, client, echo, daemon, proxy }
}

/// The outcome of one concurrent run.
pub struct LoadRun {
    pub conns: u64,
    pub bytes: u64,
    /// `bench.py many`'s report.
    pub report: Value,
    pub tally: Tally,
    /// VmRSS series and VmHWM (reset before the run) per process, MiB.
    pub rss: BTreeMap<String, (Series, f64)>,
}

impl LoadRun {
    /// Asserts every connection was byte-exact, on `path`, and every process stayed under the RSS
    /// bound.
    #[track_caller]
    pub fn assert_ok(&self, path: PathKind) {
        let r = &self.report;
        assert_eq!(r["ok"].as_u64(), Some(self.conns), "connections byte-exact both ways: {r}");
        assert_eq!(r["failed"].as_u64(), Some(0), "failed connections: {r}");
        let want = match path {
            PathKind::Direct => "DIRECT",
            PathKind::Relayed => "RELAYED",
        };
        let t = &self.tally;
        assert!(t.errors.is_empty(), "the proxy reported errors: {:?}", t.errors);
        assert_eq!(
            t.paths.get(want).copied(),
            Some(self.conns),
            "every connection on {want}: {:?}",
            t.paths
        );
        for (name, (series, hwm)) in &self.rss {
            let peak = series.peak.max(*hwm);
            assert!(
                peak < RSS_BOUND_MIB,
                "{name}: peak RSS {peak:.1} MiB over the bound {RSS_BOUND_MIB} MiB ({series:?})"
            );
        }
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let secs = self.report["secs"].as_f64().unwrap_or(f64::NAN);
        let mib = (self.conns * self.bytes) as f64 / (1024.0 * 1024.0);
        let rss: Vec<String> = self
            .rss
            .iter()
            .map(|(n, (s, hwm))| {
                format!("{n} {:.1} → peak {:.1} (VmHWM {hwm:.1}) → {:.1}", s.first, s.peak, s.last)
            })
            .collect();
        format!(
            "{}/{} connections × {} KiB each way byte-exact in {secs:.1} s ({:.1} MiB/s each way), \
             client had {} open at once, proxy carried {} at once; paths {:?}; RSS MiB: {}",
            self.report["ok"],
            self.conns,
            self.bytes >> 10,
            mib / secs,
            self.report["max_open"],
            self.tally.max_carried,
            self.tally.paths,
            rss.join("; ")
        )
    }
}

/// Runs `conns` concurrent echo connections from `host` through `proxy`, sampling the memory of
/// `procs` (name, pid).
pub fn run(lab: &Lab, host: &str, proxy: &Proxy, procs: &[(&str, u32)]) -> LoadRun {
    let (conns, bytes) = shape();
    for (name, pid) in procs {
        assert!(reset_peak(*pid), "{name}: cannot reset VmHWM of pid {pid}");
    }
    let before: Vec<String> =
        procs.iter().map(|(n, p)| format!("{n} {:.1}", rss_mib(*p).unwrap_or(f64::NAN))).collect();
    say!("[{}] RSS before the run (MiB): {}", lab.prefix(), before.join(", "));
    let sampler = Sampler::start(procs);
    let mark = proxy.proc.mark();
    let script = lab.script("bench.py");
    let (port, n, b) = (proxy.port.to_string(), conns.to_string(), bytes.to_string());
    let limit = RUN_LIMIT.as_secs().to_string();
    let args = [
        script.to_str().expect("utf-8 path"),
        "many",
        "--echo",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--conns",
        &n,
        "--bytes",
        &b,
        "--timeout",
        &limit,
    ];
    let mut p = lab.spawn(Some(host), &format!("{host}-many"), &lab::python(), &args, &[]);
    let status = p.finish(RUN_LIMIT + Duration::from_secs(60));
    let series = sampler.finish();
    let out = p.text(Some(Stream::Out));
    let line = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("bench.py many printed no report ({status}); output:\n{}", p.tail(40))
    });
    let report: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bench.py many: {e}: {line}"));
    let rss = procs
        .iter()
        .map(|(name, pid)| {
            let s = series.get(*name).copied().unwrap_or_default();
            (name.to_string(), (s, hwm_mib(*pid).unwrap_or(f64::NAN)))
        })
        .collect();
    LoadRun { conns, bytes, report, tally: proxy.tally_from(mark), rss }
}

/// Checks the end state shared by both paths: every process alive, the service saw every
/// connection.
fn assert_alive(s: &mut Setup, served_before: usize, conns: u64) {
    assert!(s.daemon.proc.is_running(), "alice's daemon exited");
    assert!(s.proxy.proc.is_running(), "the proxy exited");
    let served = s.echo.connections() - served_before;
    assert_eq!(served as u64, conns, "connections that reached alice's echo service");
}

/// bob (cone NAT) → alice (cone NAT), DIRECT once hole punching has succeeded.
pub fn cone_x_cone_direct() {
    let Some(lab) = Lab::up("ps1", &[]) else { return };
    let mut s = setup(&lab, "bob");
    let window = Duration::from_secs(30);
    let probed = probe_until_direct(&lab, "bob", &mut s.proxy, window);
    let to_direct = probed
        .to_direct
        .unwrap_or_else(|| panic!("no DIRECT connection within {window:?}: {:?}", probed.paths));
    say!("[ps1] bob -> alice DIRECT after {:.2} s", to_direct.as_secs_f64());
    let served = s.echo.connections();
    let procs = [("alice daemon", s.daemon.proc.pid()), ("bob proxy", s.proxy.proc.pid())];
    let r = run(&lab, "bob", &s.proxy, &procs);
    say!("[ps1] load DIRECT: {}", r.summary());
    r.assert_ok(PathKind::Direct);
    assert_alive(&mut s, served, r.conns);
}

/// carol (symmetric NAT) → alice (cone NAT): every stream on one relayed connection.
pub fn symmetric_x_cone_relayed() {
    let Some(lab) = Lab::up("ps2", &[]) else { return };
    let mut s = setup(&lab, "carol");
    let probed = probe_until_direct(&lab, "carol", &mut s.proxy, Duration::ZERO);
    assert_eq!(probed.paths, [PathKind::Relayed], "carol's first connection");
    let served = s.echo.connections();
    let relay_pid = s.relay.pid().expect("relay runs");
    let procs = [
        ("alice daemon", s.daemon.proc.pid()),
        ("carol proxy", s.proxy.proc.pid()),
        ("relay server", relay_pid),
    ];
    let r = run(&lab, "carol", &s.proxy, &procs);
    say!("[ps2] load RELAYED: {}", r.summary());
    let carried = 2 * r.conns * r.bytes;
    say!(
        "[ps2] the one circuit carried {:.0} MiB of payload (both directions; relay limit \
         {CIRCUIT_DATA_LIMIT}, default 1GB)",
        carried as f64 / (1024.0 * 1024.0)
    );
    r.assert_ok(PathKind::Relayed);
    assert_alive(&mut s, served, r.conns);
    // The proxy logs `connected peer=<id> path=…` once per connection it opens to a peer, and
    // `connection failed peer=<id>` for one that broke. Besides the first, only the fresh relayed
    // connections that try hole punching again (`node/repunch.rs`; it cannot succeed from carol's
    // symmetric NAT) may have been opened, and none may have broken: the circuit was never cut.
    let text = s.proxy.proc.text(Some(Stream::Err));
    let peer = format!("peer={}", s.alice.id);
    let count = |what: &str| text.lines().filter(|l| l.contains(what) && l.contains(&peer)).count();
    let (opened, again) = (count(" connected "), count("hole punching again"));
    assert_eq!(
        opened,
        1 + again,
        "carol's proxy connected to alice {opened} times, {again} of them to hole-punch again"
    );
    assert_eq!(count("connection failed"), 0, "a connection from carol to alice broke");
    let lost =
        s.daemon.proc.wait_line_from(0, None, Duration::ZERO, |l| l.contains("Reservation lost"));
    assert!(lost.is_none(), "alice lost her reservation during the load: {lost:?}");
}
