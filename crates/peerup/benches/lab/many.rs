//! The concurrency case: many connections at once (`$BENCH_CONNS`, default 1,000) through one
//! fresh `peerup proxy` on the public DIRECT path (pubpeer → relay host), each pushing its own
//! `$BENCH_CONN_BYTES` (default 1 MiB) into the relay host's sink, every one checked by SHA-256
//! (`bench.py many`). Measures the peak RSS of the peerup processes at both ends (the daemon's
//! VmHWM is reset first, so earlier bulk transfers do not count) and the time taken.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cases::{py_json, warm_up};
use crate::lab::Lab;
use crate::measure::*;
use crate::node::{Node, PathKind};
use crate::report::short;

/// Errors kept for the report.
const KEEP_ERRORS: usize = 20;
/// For the whole concurrency run (the client's own limit; the process gets a minute more).
const RUN_LIMIT: Duration = Duration::from_secs(600);

pub(crate) struct Concurrency {
    pub(crate) connections: u64,
    pub(crate) bytes_each: u64,
    /// Connections whose digest matched.
    pub(crate) exact: u64,
    pub(crate) seconds: f64,
    /// Sum of VmHWM (reset before the run), and per process.
    pub(crate) peak_rss: (f64, BTreeMap<String, f64>),
    /// Sum of VmRSS just before the run, and per process.
    pub(crate) rss_before: (f64, BTreeMap<String, f64>),
    /// Whether the daemon's VmHWM could be reset (else it is the peak since it started).
    pub(crate) peak_reset: bool,
    /// Connections the client had open at once.
    pub(crate) client_max_open: u64,
    /// Streams the proxy carried at once (from its `Connection n:` and `connection closed` lines).
    pub(crate) proxy_max_carried: Option<i64>,
    /// `DIRECT`, `RELAYED`, `error`: the proxy's per-connection lines.
    pub(crate) paths: BTreeMap<String, u64>,
    pub(crate) errors: Vec<String>,
    /// How many errors there were (only the first `KEEP_ERRORS` are kept).
    pub(crate) error_count: usize,
    /// Failed connections while waiting for the fresh proxy to go DIRECT (not part of the run).
    pub(crate) warmup_problems: Vec<String>,
    /// The proxy's soft RLIMIT_NOFILE.
    pub(crate) fd_limit: Option<u64>,
    /// `MAX_CONNECTIONS` (proxy) and `MAX_STREAMS_PER_SERVICE` (daemon), from the source.
    pub(crate) limits: (Option<u64>, Option<u64>),
}

impl Concurrency {
    pub(crate) fn all_exact(&self) -> bool {
        self.exact == self.connections && self.error_count == 0
    }

    pub(crate) fn json(&self) -> Value {
        let parts = |m: &BTreeMap<String, f64>| {
            m.iter().map(|(k, v)| (k.clone(), num(*v, 1))).collect::<serde_json::Map<_, _>>()
        };
        json!({
            "connections": self.connections,
            "bytes_each": self.bytes_each,
            "all_exact": self.all_exact(),
            "exact": self.exact,
            "seconds": num(self.seconds, 2),
            "peak_rss_mib": num(self.peak_rss.0, 1),
            "peak_rss_processes": parts(&self.peak_rss.1),
            "peak_rss_reset_before_run": self.peak_reset,
            "rss_before_mib": num(self.rss_before.0, 1),
            "client_max_open": self.client_max_open,
            "proxy_max_carried": self.proxy_max_carried,
            "paths": self.paths,
            "error_count": self.error_count,
            "errors": self.errors,
            "warmup_problems": self.warmup_problems,
            "proxy_fd_limit": self.fd_limit,
            "max_connections_per_proxy": self.limits.0,
            "max_streams_per_service": self.limits.1,
        })
    }
}

/// The soft `Max open files` of a process.
fn fd_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The value of `const <name>: usize = <n>;` in a source file of the workspace.
fn source_const(file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(crate::report::workspace().join(file)).ok()?;
    let line = text.lines().find(|l| l.contains(&format!("const {name}: usize =")))?;
    line.split('=').nth(1)?.trim().trim_end_matches(';').replace('_', "").parse().ok()
}

/// Runs the case from `node` (pubpeer) to the `sink` service of `server_id`, whose daemon is
/// `daemon`.
pub(crate) fn run(
    lab: &Lab,
    node: &Node,
    server_id: &str,
    daemon: &Tracked,
    connections: u64,
    bytes_each: u64,
) -> Concurrency {
    let t0 = Instant::now();
    let mut proxy = node.proxy(lab, server_id, "sink");
    let (_, warmup_problems) = warm_up(lab, &mut proxy, &node.host, PathKind::Direct, t0);
    let mut errors = Vec::new();
    let tracked = vec![daemon.clone(), Tracked::one("proxy (pubpeer)", proxy.proc.pid())];
    let peak_reset = tracked.iter().all(|t| reset_peak(t.pid));
    let rss_before = memory_mib(&tracked, "VmRSS");
    let mark = proxy.proc.mark();
    let (port, conns, bytes) =
        (proxy.port.to_string(), connections.to_string(), bytes_each.to_string());
    let limit = RUN_LIMIT.as_secs().to_string();
    let args = [
        "many",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--conns",
        &conns,
        "--bytes",
        &bytes,
        "--timeout",
        &limit,
    ];
    say!("[bench] concurrency: {connections} connections × {bytes_each} bytes through one proxy");
    let (status, v) =
        py_json(lab, &node.host, "concurrency", &args, RUN_LIMIT + Duration::from_secs(60));
    // The proxy logs each close just after the sink's reply went out.
    std::thread::sleep(Duration::from_millis(500));
    let peak_rss = memory_mib(&tracked, "VmHWM");

    let tally = proxy.tally_from(mark);
    let paths = tally.paths;
    errors.extend(tally.errors);
    if paths.get("RELAYED").is_some_and(|n| *n > 0) {
        errors.push(format!("{} connections went RELAYED, not DIRECT", paths["RELAYED"]));
    }
    errors.extend(v["errors"].as_array().into_iter().flatten().map(|e| e.to_string()));
    if !status.success() && errors.is_empty() {
        errors.push(format!("bench.py many exited with {status}: {v}"));
    }
    let error_count = errors.len();
    errors.truncate(KEEP_ERRORS);
    // Its log would be overwritten by the long-lived proxy of the same name: keep a copy.
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("netlab-logs")
        .join(lab.prefix())
        .join(format!("{}-concurrency-proxy.log", lab.prefix()));
    let _ = std::fs::write(&log, proxy.proc.text(None));
    let c = Concurrency {
        connections,
        bytes_each,
        exact: v["ok"].as_u64().unwrap_or(0),
        seconds: v["secs"].as_f64().unwrap_or(f64::NAN),
        peak_rss,
        rss_before,
        peak_reset,
        client_max_open: v["max_open"].as_u64().unwrap_or(0),
        proxy_max_carried: (tally.closes > 0).then_some(tally.max_carried),
        paths,
        errors,
        error_count,
        warmup_problems,
        fd_limit: fd_limit(proxy.proc.pid()),
        limits: (
            source_const("crates/peerup/src/proxy.rs", "MAX_CONNECTIONS"),
            source_const("crates/peerup-core/src/service.rs", "MAX_STREAMS_PER_SERVICE"),
        ),
    };
    say!(
        "[bench] concurrency: {}/{} byte-exact in {:.2} s; peak RSS {:.1} MiB ({:?}); proxy carried \
         at most {} at once",
        c.exact,
        c.connections,
        c.seconds,
        c.peak_rss.0,
        c.peak_rss.1,
        c.proxy_max_carried.map_or("?".into(), |n| n.to_string())
    );
    c
}

impl Concurrency {
    /// The report's section.
    pub(crate) fn markdown(&self) -> String {
        let parts: Vec<String> =
            self.peak_rss.1.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
        let mut md = format!(
            "Concurrency: {} connections at once through one `peerup proxy` (DIRECT, pubpeer → \
             relay host), {} bytes each, SHA-256 checked:\n\n\
             | connections | bytes each | all byte-exact | seconds | peak RSS MiB (daemon + proxy) \
             | RSS before MiB | open at once: client / carried by the proxy | paths |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} ({}/{}) | {} | **{}** ({}) | {} | {} / {} | {} |\n\n",
            self.connections,
            self.bytes_each,
            self.connections,
            self.bytes_each,
            if self.all_exact() { "**yes**" } else { "**NO**" },
            self.exact,
            self.connections,
            fmt(self.seconds, 2),
            fmt(self.peak_rss.0, 1),
            parts.join(", "),
            fmt(self.rss_before.0, 1),
            self.client_max_open,
            self.proxy_max_carried.map_or("?".into(), |n| n.to_string()),
            self.paths.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        );
        if self.error_count > 0 {
            let shown: Vec<String> = self.errors.iter().take(5).map(|e| short(e, 200)).collect();
            md.push_str(&format!(
                "Concurrency errors ({}; the first {} in the JSON):\n\n- {}\n\n",
                self.error_count,
                self.errors.len(),
                shown.join("\n- ")
            ));
        }
        md
    }
}
