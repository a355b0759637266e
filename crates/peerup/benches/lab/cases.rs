//! The measurements of one case: throughput, round trips, cold start, warm-up, ssh forwarding.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{Lab, READY};
use crate::measure::*;
use crate::node::{ConnReport, Node, PathKind, Proxy, RELAY_IP};
use crate::proc::{Proc, Stream};
use crate::py::Client;
use crate::ssh::Sshd;
use crate::{DIRECT_WINDOW, GIB, TRANSFER};

// ---------------------------------------------------------------------------------------------
// The cases.

/// What a run of `bench.py push`/`rr` printed.
pub(crate) fn run_py(lab: &Lab, host: &str, name: &str, args: &[&str], timeout: Duration) -> Value {
    try_py(lab, host, name, args, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like `run_py`, returning a failed run's report as the error.
pub(crate) fn try_py(
    lab: &Lab,
    host: &str,
    name: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Value, String> {
    let (status, v) = py_json(lab, host, name, args, timeout);
    if status.success() && v["error"].is_null() {
        Ok(v)
    } else {
        Err(format!("{name} failed ({status}): {v}"))
    }
}

/// Runs `bench.py args…` in `host` and returns its exit status and the JSON line it printed last
/// (panics when there is none).
pub(crate) fn py_json(
    lab: &Lab,
    host: &str,
    name: &str,
    args: &[&str],
    timeout: Duration,
) -> (ExitStatus, Value) {
    let script = lab.script("bench.py");
    let mut all = vec![script.to_str().expect("utf-8 path")];
    all.extend(args);
    let mut p = lab.spawn(Some(host), name, &crate::lab::python(), &all, &[]);
    let status = p.finish(timeout);
    let out = p.text(Some(Stream::Out));
    let line = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("{name}: bench.py printed no report ({status}); output:\n{}", p.tail(40))
    });
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
    (status, v)
}

/// A `bench.py sink` server.
pub(crate) fn start_sink(lab: &Lab, host: &str, bind: &str) -> (Proc, u16) {
    let script = lab.script("bench.py");
    let args = [script.to_str().expect("utf-8 path"), "sink", "--host", bind];
    let mut p = lab.spawn(Some(host), &format!("{host}-sink"), &crate::lab::python(), &args, &[]);
    let line = p.expect_line("READY <port>", Some(Stream::Out), READY, |l| l.starts_with("READY "));
    let port = line["READY ".len()..].trim().parse().expect("sink port");
    (p, port)
}

/// One throughput run.
pub(crate) struct Run {
    pub(crate) mib_s: f64,
    pub(crate) cpu_per_gib: f64,
    /// CPU-s/GiB of the load itself: the Python client and the sink.
    pub(crate) load_cpu_per_gib: f64,
    pub(crate) path: Option<String>,
}

/// One latency run.
pub(crate) struct Rtt {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) mean: f64,
    pub(crate) path: Option<String>,
}

/// One cold start of a `peerup proxy` (for the `echo` service).
pub(crate) struct Cold {
    pub(crate) listen_ms: f64,
    pub(crate) connect_ms: f64,
    pub(crate) ttfb_ms: f64,
    pub(crate) first_path: String,
    pub(crate) to_direct_s: Option<f64>,
}

/// How to start a cold proxy for a peerup case.
pub(crate) struct ColdSpec {
    pub(crate) client: usize,
    pub(crate) server_id: String,
    pub(crate) want_direct: bool,
}

pub(crate) struct Case {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) route: &'static str,
    pub(crate) host: &'static str,
    pub(crate) ip: String,
    pub(crate) port: u16,
    pub(crate) tracked: Vec<Tracked>,
    /// The sink the payload goes to (its CPU is the load's, with the client's).
    pub(crate) sink: Option<Tracked>,
    /// The proxy this case goes through, and the path every connection must take.
    pub(crate) proxy: Option<(usize, PathKind)>,
    pub(crate) cold: Option<ColdSpec>,
    pub(crate) runs: Vec<Run>,
    pub(crate) rtts: Vec<Rtt>,
    pub(crate) colds: Vec<Cold>,
    /// Connections that failed or took an unexpected path.
    pub(crate) problems: Vec<String>,
    /// For proxies: `peerup proxy` start to the first `[DIRECT]` connection during warm-up.
    pub(crate) warmup_to_direct_s: Option<f64>,
    pub(crate) info: Vec<String>,
    /// Sum of the tracked processes' VmHWM (and per process), taken after the last round.
    pub(crate) peak_rss: Option<(f64, BTreeMap<String, f64>)>,
}

impl Case {
    pub(crate) fn new(
        id: &'static str,
        label: &'static str,
        route: &'static str,
        host: &'static str,
    ) -> Case {
        Case {
            id,
            label,
            route,
            host,
            ip: "127.0.0.1".into(),
            port: 0,
            tracked: Vec::new(),
            sink: None,
            proxy: None,
            cold: None,
            runs: Vec::new(),
            rtts: Vec::new(),
            colds: Vec::new(),
            problems: Vec::new(),
            warmup_to_direct_s: None,
            info: Vec::new(),
            peak_rss: None,
        }
    }

    pub(crate) fn mib_s(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.mib_s).collect()
    }
}

/// `DIRECT/QUIC`, `RELAYED/TCP`, … from a proxy's path line (the transport of the first hop).
pub(crate) fn path_label(path: PathKind, line: &str) -> String {
    let kind = if path == PathKind::Direct { "DIRECT" } else { "RELAYED" };
    let transport = if line.contains("/quic") { "QUIC" } else { "TCP" };
    format!("{kind}/{transport}")
}

/// The path line a proxy printed for the connection made after `mark`.
pub(crate) fn path_after(
    proxies: &mut [Proxy],
    case: &mut Case,
    mark: Option<usize>,
    what: &str,
) -> Option<String> {
    let ((i, want), mark) = (case.proxy?, mark?);
    let (path, line, _) = proxies[i].path_from(mark, Duration::from_secs(30));
    if path != want {
        say!("[bench] WARNING: {} {what}: expected {want:?}, got: {line}", case.id);
        case.problems.push(format!("{what}: {line}"));
    }
    Some(path_label(path, &line))
}

pub(crate) fn throughput(
    lab: &Lab,
    proxies: &mut [Proxy],
    case: &mut Case,
    bytes: u64,
    round: usize,
    tck: f64,
) {
    let mark = case.proxy.map(|(i, _)| proxies[i].proc.mark());
    let sink = case.sink.iter().cloned().collect::<Vec<_>>();
    let (before, sink_before) = (cpu_secs(&case.tracked, tck), cpu_secs(&sink, tck));
    let (port, n) = (case.port.to_string(), bytes.to_string());
    let args = ["push", "--host", &case.ip, "--port", &port, "--bytes", &n];
    let v = run_py(lab, case.host, &format!("{}-push-{round}", case.id), &args, TRANSFER);
    let cpu = cpu_secs(&case.tracked, tck) - before;
    let sink_cpu = cpu_secs(&sink, tck) - sink_before;
    let client_cpu = v["cpu_s"].as_f64().unwrap_or(f64::NAN);
    let load_cpu_per_gib = match case.sink {
        Some(_) => (client_cpu + sink_cpu) / (bytes as f64 / GIB),
        None => f64::NAN,
    };
    assert_eq!(v["ok"], true, "{}: {v}", case.id);
    let path = path_after(proxies, case, mark, &format!("round {round} throughput"));
    let mib_s = v["mib_s"].as_f64().unwrap_or(f64::NAN);
    let cpu_per_gib = cpu / (bytes as f64 / GIB);
    say!(
        "[bench] round {round} {:<22} {:>8.1} MiB/s  {cpu_per_gib:>5.2} CPU-s/GiB  (client + sink \
         {load_cpu_per_gib:.2})",
        case.id,
        mib_s
    );
    case.runs.push(Run { mib_s, cpu_per_gib, load_cpu_per_gib, path });
}

pub(crate) fn latency(
    lab: &Lab,
    proxies: &mut [Proxy],
    case: &mut Case,
    round: usize,
    round_trips: u64,
) {
    let mark = case.proxy.map(|(i, _)| proxies[i].proc.mark());
    let (port, n) = (case.port.to_string(), round_trips.to_string());
    let warmup = (round_trips / 40).clamp(5, 50).to_string();
    let args = ["rr", "--host", &case.ip, "--port", &port, "--n", &n, "--warmup", &warmup];
    let v =
        run_py(lab, case.host, &format!("{}-rr-{round}", case.id), &args, Duration::from_secs(120));
    let path = path_after(proxies, case, mark, &format!("round {round} latency"));
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (p50, p99, mean) = (f("p50_us"), f("p99_us"), f("mean_us"));
    say!("[bench] round {round} {:<22} RTT p50 {p50:.0} µs, p99 {p99:.0} µs", case.id);
    case.rtts.push(Rtt { p50, p99, mean, path });
}

/// Starts a fresh `peerup proxy` to the `echo` service, does one round trip at once, then (when
/// the path can go direct) probes until a connection reports `[DIRECT]`.
pub(crate) fn cold_start(lab: &Lab, nodes: &[Node], case: &mut Case, round: usize) {
    let Some(spec) = &case.cold else { return };
    let node = &nodes[spec.client];
    let t0 = Instant::now();
    let mut proxy = node.proxy(lab, &spec.server_id, "echo");
    let (_, listening) = proxy
        .proc
        .wait_line_from(0, Some(Stream::Out), READY, |l| l.starts_with("Listening on"))
        .expect("listening line");
    let listen_ms = listening.at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    let mut failed = 0;
    let (t, path, line, at) = loop {
        let mark = proxy.proc.mark();
        let name = format!("{}-cold-{round}-{}", case.id, failed + 1);
        let t = Client::local(&node.host, proxy.port, 1).run(lab, &name, READY);
        match proxy.report_from(mark, Duration::from_secs(30)).1 {
            ConnReport::Path { path, line, at } if t.error.is_none() => {
                t.assert_exact(1, &format!("{} cold start", case.id));
                break (t, path, line, at);
            }
            ConnReport::Path { line, .. } | ConnReport::Error(line) => {
                say!("[bench] WARNING: {} cold start: connection failed: {line}", case.id);
                case.problems.push(format!("round {round} cold start connection failed: {line}"));
                failed += 1;
                assert!(failed < 3, "{}: cold start failed 3 times", case.id);
            }
        }
    };
    let mut to_direct_s =
        (path == PathKind::Direct).then(|| at.saturating_duration_since(t0).as_secs_f64());
    if spec.want_direct && to_direct_s.is_none() {
        let probe_start = Instant::now();
        let probed = crate::paths::probe_until_direct(lab, &node.host, &mut proxy, DIRECT_WINDOW);
        to_direct_s = probed.to_direct.map(|d| (probe_start - t0 + d).as_secs_f64());
    }
    let cold = Cold {
        listen_ms,
        connect_ms: t.connect_ms.unwrap_or(f64::NAN),
        ttfb_ms: t.ttfb_ms.unwrap_or(f64::NAN),
        first_path: path_label(path, &line),
        to_direct_s,
    };
    say!(
        "[bench] round {round} {:<22} cold proxy: listening {:.0} ms, first byte {:.1} ms after \
         connecting ({}: {line}), DIRECT after {}",
        case.id,
        cold.listen_ms,
        cold.ttfb_ms,
        cold.first_path,
        cold.to_direct_s.map_or("never".into(), |s| format!("{s:.2} s"))
    );
    case.colds.push(cold);
}

/// Connects through a new proxy with 1-byte round trips until a connection reports `want`;
/// returns the seconds from `started` to that connection's path line, and the errors of failed
/// connections on the way.
pub(crate) fn warm_up(
    lab: &Lab,
    proxy: &mut Proxy,
    host: &str,
    want: PathKind,
    started: Instant,
) -> (f64, Vec<String>) {
    let deadline = Instant::now() + DIRECT_WINDOW;
    let port = proxy.port.to_string();
    let mut errors = Vec::new();
    for n in 1.. {
        let mark = proxy.proc.mark();
        let args = ["rr", "--host", "127.0.0.1", "--port", &port, "--n", "1", "--warmup", "0"];
        let run = try_py(lab, host, &format!("{host}-warmup-{n}"), &args, Duration::from_secs(60));
        let (_, report) = proxy.report_from(mark, Duration::from_secs(30));
        let line = match (run, report) {
            (Ok(_), ConnReport::Path { path, line, at }) => {
                if path == want {
                    say!("[bench] {host}: warm-up connection {n} is {path:?} ({line})");
                    return (at.saturating_duration_since(started).as_secs_f64(), errors);
                }
                line
            }
            (_, ConnReport::Error(line)) | (Err(_), ConnReport::Path { line, .. }) => {
                say!("[bench] WARNING: {host}: warm-up connection {n} failed: {line}");
                errors.push(format!("warm-up connection {n}: {line}"));
                line
            }
        };
        assert!(
            Instant::now() < deadline,
            "{host}: no {want:?} connection within {DIRECT_WINDOW:?}: {line}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    unreachable!()
}

/// Starts `ssh -N -L 127.0.0.1:<local>:127.0.0.1:<target>` in pubpeer against `sshd`.
pub(crate) fn ssh_forward(
    lab: &Lab,
    sshd: &Sshd,
    local: u16,
    target: u16,
    cipher: Option<&str>,
) -> (Proc, String) {
    let (options, home) = sshd.client_options("pubpeer");
    let forward = format!("127.0.0.1:{local}:127.0.0.1:{target}");
    let port = sshd.port.to_string();
    let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
    args.extend(["-v", "-n", "-N", "-o", "ExitOnForwardFailure=yes", "-p", &port, "-L", &forward]);
    if let Some(c) = cipher {
        args.extend(["-c", c]);
    }
    let dest = format!("root@{RELAY_IP}");
    args.push(&dest);
    let env = [("HOME", home.to_str().expect("utf-8 path"))];
    let name = format!("pubpeer-ssh-L-{local}");
    let mut p = lab.spawn(Some("pubpeer"), &name, Path::new("ssh"), &args, &env);
    p.expect_line("`Entering interactive session`", Some(Stream::Err), READY, |l| {
        l.contains("Entering interactive session")
    });
    let cipher = p
        .wait_line_from(0, Some(Stream::Err), Duration::ZERO, |l| {
            l.contains("kex: client->server cipher:")
        })
        .map(|(_, l)| l.text.split("cipher:").nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_else(|| "?".into());
    (p, cipher)
}

pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).trim().to_string()
        })
        .unwrap_or_default()
}
