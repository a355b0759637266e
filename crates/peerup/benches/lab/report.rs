//! The Markdown table and JSON written under bench/results/.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::cases::*;
use crate::many::Concurrency;
use crate::measure::*;
use crate::{MIB, Settings};

pub(crate) struct Context<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) cores: usize,
    pub(crate) idle_rss: BTreeMap<String, f64>,
    pub(crate) setup_s: f64,
    pub(crate) total_s: f64,
    /// Why rathole was not measured.
    pub(crate) rathole_skip: Option<String>,
    pub(crate) concurrency: &'a Concurrency,
}

pub(crate) fn workspace() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

pub(crate) fn git(args: &[&str]) -> String {
    let root = workspace();
    let mut all = vec!["-C", root.to_str().unwrap_or(".")];
    all.extend(args);
    Command::new("git")
        .args(all)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

pub(crate) fn report(ctx: &Context<'_>, cases: &[Case]) -> (String, Value) {
    let set = ctx.settings;
    let now = jiff::Timestamp::now().to_string();
    let date = now.get(..10).unwrap_or(&now).to_string();
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = command_line("uname", &["-r"]);
    let ssh_version = command_line("ssh", &["-V"]);
    let python_version =
        command_line(crate::lab::python().to_str().unwrap_or("python3"), &["--version"]);

    let by_id = |id: &str| cases.iter().find(|c| c.id == id);
    let med = |id: &str| by_id(id).map_or(f64::NAN, |c| median(&c.mib_s()));
    let rtt = |id: &str, f: fn(&Rtt) -> f64| {
        by_id(id).map_or(f64::NAN, |c| median(&c.rtts.iter().map(f).collect::<Vec<_>>()))
    };
    let p50 = |id: &str| rtt(id, |r| r.p50);
    let p99 = |id: &str| rtt(id, |r| r.p99);

    let ratios = json!({
        "direct_vs_ssh": num(ratio(med("peerup-public-direct"), med("ssh-default")), 3),
        "direct_vs_ssh_aes": num(ratio(med("peerup-public-direct"), med("ssh-aes128gcm")), 3),
        "direct_vs_raw": num(ratio(med("peerup-public-direct"), med("raw-public")), 3),
        "ssh_vs_raw": num(ratio(med("ssh-default"), med("raw-public")), 3),
        "ssh_aes_vs_raw": num(ratio(med("ssh-aes128gcm"), med("raw-public")), 3),
        "nat_direct_vs_nat_raw": num(ratio(med("peerup-nat-direct"), med("raw-nat")), 3),
        "relayed_vs_direct": num(ratio(med("peerup-nat-relayed"), med("peerup-nat-direct")), 3),
        "rathole_vs_raw": num(ratio(med("rathole-noise"), med("raw-public")), 3),
        "direct_vs_rathole": num(ratio(med("peerup-public-direct"), med("rathole-noise")), 3),
        "added_latency_us": {
            "direct_p50": num(p50("peerup-public-direct") - p50("raw-public"), 1),
            "direct_p99": num(p99("peerup-public-direct") - p99("raw-public"), 1),
            "ssh_p50": num(p50("ssh-default") - p50("raw-public"), 1),
            "ssh_p99": num(p99("ssh-default") - p99("raw-public"), 1),
            "ssh_aes_p50": num(p50("ssh-aes128gcm") - p50("raw-public"), 1),
            "ssh_aes_p99": num(p99("ssh-aes128gcm") - p99("raw-public"), 1),
            "floor_p50": num(p50("floor-public") - p50("raw-public"), 1),
            "floor_p99": num(p99("floor-public") - p99("raw-public"), 1),
            "direct_over_floor_p50": num(p50("peerup-public-direct") - p50("floor-public"), 1),
            "direct_over_floor_p99": num(p99("peerup-public-direct") - p99("floor-public"), 1),
            "rathole_p50": num(p50("rathole-noise") - p50("raw-public"), 1),
            "rathole_p99": num(p99("rathole-noise") - p99("raw-public"), 1),
            "nat_direct_p50": num(p50("peerup-nat-direct") - p50("raw-nat"), 1),
            "nat_direct_p99": num(p99("peerup-nat-direct") - p99("raw-nat"), 1),
            "relayed_p50": num(p50("peerup-nat-relayed") - p50("raw-nat"), 1),
            "relayed_p99": num(p99("peerup-nat-relayed") - p99("raw-nat"), 1),
        },
    });

    let mut rows = Vec::new();
    let mut jcases = Vec::new();
    let mut peerup_rows = Vec::new();
    for c in cases {
        let v = c.mib_s();
        let raw_id = if c.route.starts_with("pubpeer") { "raw-public" } else { "raw-nat" };
        let vs_raw = median(&v) / med(raw_id);
        let p50s: Vec<f64> = c.rtts.iter().map(|r| r.p50).collect();
        let p99s: Vec<f64> = c.rtts.iter().map(|r| r.p99).collect();
        let cpu: Vec<f64> = c.runs.iter().map(|r| r.cpu_per_gib).collect();
        let load: Vec<f64> = c.runs.iter().map(|r| r.load_cpu_per_gib).collect();
        let (hwm, hwm_parts) =
            c.peak_rss.clone().unwrap_or_else(|| memory_mib(&c.tracked, "VmHWM"));
        let raw = c.tracked.is_empty();
        let mut seen: Vec<String> = Vec::new();
        for p in c.runs.iter().map(|r| &r.path).chain(c.rtts.iter().map(|r| &r.path)).flatten() {
            if !seen.contains(p) {
                seen.push(p.clone());
            }
        }
        rows.push(format!(
            "| {} | {} | {} | {} / **{}** / {} | {} | {} / {} | {} | {} |",
            c.label,
            c.route,
            if seen.is_empty() { "–".into() } else { seen.join(", ") },
            fmt(min(&v), 0),
            fmt(median(&v), 0),
            fmt(max(&v), 0),
            fmt(vs_raw, 2),
            fmt(median(&p50s), 0),
            fmt(median(&p99s), 0),
            if raw { "0".into() } else { fmt(median(&cpu), 2) },
            if raw { "–".into() } else { fmt(hwm, 1) },
        ));
        let colds = &c.colds;
        let listen: Vec<f64> = colds.iter().map(|x| x.listen_ms).collect();
        let connect: Vec<f64> = colds.iter().map(|x| x.connect_ms).collect();
        let ttfb: Vec<f64> = colds.iter().map(|x| x.ttfb_ms).collect();
        let total: Vec<f64> = colds.iter().map(|x| x.listen_ms + x.ttfb_ms).collect();
        let direct: Vec<f64> = colds.iter().filter_map(|x| x.to_direct_s).collect();
        if c.cold.is_some() {
            let want_direct = c.cold.as_ref().is_some_and(|s| s.want_direct);
            peerup_rows.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.label,
                fmt(median(&listen), 0),
                fmt(median(&ttfb), 1),
                fmt(median(&total), 0),
                colds.iter().map(|x| x.first_path.as_str()).collect::<Vec<_>>().join(", "),
                if want_direct {
                    format!(
                        "{} (min {}, max {}; {}/{} rounds)",
                        fmt(median(&direct), 2),
                        fmt(min(&direct), 2),
                        fmt(max(&direct), 2),
                        direct.len(),
                        colds.len()
                    )
                } else {
                    "– (relay only)".into()
                },
                c.warmup_to_direct_s.map_or("–".into(), |s| fmt(s, 2)),
            ));
        }
        jcases.push(json!({
            "id": c.id,
            "label": c.label,
            "route": c.route,
            "client_host": c.host,
            "info": c.info,
            "tunnel_processes": c.tracked.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "throughput_mib_s": {
                "min": num(min(&v), 1), "median": num(median(&v), 1), "max": num(max(&v), 1),
                "runs": v.iter().map(|x| num(*x, 1)).collect::<Vec<_>>(),
                "median_vs_raw_same_route": num(vs_raw, 3),
            },
            "rtt_us": {
                "p50_median": num(median(&p50s), 1), "p99_median": num(median(&p99s), 1),
                "runs": c.rtts.iter().map(|r| json!({"p50": num(r.p50, 1), "p99": num(r.p99, 1), "mean": num(r.mean, 1), "path": r.path})).collect::<Vec<_>>(),
            },
            "cpu_s_per_gib": {
                "median": if raw { json!(0) } else { num(median(&cpu), 3) },
                "runs": cpu.iter().map(|x| num(*x, 3)).collect::<Vec<_>>(),
            },
            "load_cpu_s_per_gib": {
                "median": num(median(&load), 3),
                "runs": load.iter().map(|x| num(*x, 3)).collect::<Vec<_>>(),
            },
            "peak_rss_mib": { "total": if raw { Value::Null } else { num(hwm, 1) }, "processes": hwm_parts.iter().map(|(k, v)| (k.clone(), num(*v, 1))).collect::<serde_json::Map<_, _>>() },
            "paths": c.runs.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
            "problems": c.problems,
            "cold_start": if c.cold.is_some() { json!({
                "proxy_listening_ms": listen.iter().map(|x| num(*x, 1)).collect::<Vec<_>>(),
                "connect_ms": connect.iter().map(|x| num(*x, 2)).collect::<Vec<_>>(),
                "first_byte_ms": ttfb.iter().map(|x| num(*x, 1)).collect::<Vec<_>>(),
                "start_to_first_byte_ms_median": num(median(&total), 1),
                "first_connection_path": colds.iter().map(|x| x.first_path.clone()).collect::<Vec<_>>(),
                "start_to_direct_s": colds.iter().map(|x| x.to_direct_s.map_or(Value::Null, |s| num(s, 3))).collect::<Vec<_>>(),
                "start_to_direct_s_median": num(median(&direct), 3),
            }) } else { Value::Null },
            "warmup_start_to_direct_s": c.warmup_to_direct_s.map_or(Value::Null, |s| num(s, 3)),
        }));
    }

    let rtt_note = format!(
        "Throughput = payload ÷ (connect → digest received). RTT: 1-byte request/response, TCP_NODELAY on client and server sockets, {} round trips after {} warm-up ones, Python `perf_counter_ns`; the table shows the median over rounds of each round's p50 and p99.",
        set.rtt_n,
        (set.rtt_n / 40).clamp(5, 50)
    );
    let rathole_note = match &ctx.rathole_skip {
        None => format!(
            "rathole: 0.5.0 from crates.io (`cargo install`), Noise transport ({}), default options (nodelay on). rathole exposes a service of its client at its server, so the rathole server runs on pubpeer (where the visitor connects, like ssh and the peerup proxy) and its client on the relay host beside the sink (like sshd and the peerup daemon): the payload crosses pubpeer → relay host as in every public-path case. A new data channel (TCP connection + Noise handshake) is set up per visitor connection inside the timed window.",
            crate::rathole::NOISE_PATTERN
        ),
        Some(reason) => format!("rathole: not measured: {reason}."),
    };
    let conc = ctx.concurrency;
    let conc_note = format!(
        "Concurrency: a fresh `peerup proxy` on pubpeer (warmed up until DIRECT) to the relay host's sink; `bench.py many` opens {} connections at once (asyncio), each pushing its own {} bytes (a different slice of one random block) and checking the sink's SHA-256. Peak RSS = VmHWM of the daemon on the relay host + that proxy, both reset (`/proc/<pid>/clear_refs`) after warm-up{}; it is taken after the last round so that the cases' peaks above are not reset. The proxy carries at most MAX_CONNECTIONS ({}) and the daemon serves at most MAX_STREAMS_PER_SERVICE ({}) streams at once (values read from the source); more wait. RLIMIT_NOFILE of the proxy: {} (scripts/bench raises it; peerup does not raise its own).",
        conc.connections,
        conc.bytes_each,
        if conc.peak_reset { "" } else { " (reset failed: peaks since process start)" },
        conc.limits.0.map_or("?".into(), |n| n.to_string()),
        conc.limits.1.map_or("?".into(), |n| n.to_string()),
        conc.fd_limit.map_or("?".into(), |n| n.to_string()),
    );
    let smoke_note = "SMOKE run (BENCH_SMOKE): tiny payload and few round trips to check that the harness works; the figures mean nothing.";
    let fixed = [
        "Every case moves the payload with the same Python client (`bench.py push`: 16 MiB random block sent as 1 MiB memoryview slices, hash computed before connecting) into the same Python sink (4 MiB `recv_into`, SHA-256 as it goes, replies with the digest). Python and hashing run on the same 2 cores as the tunnel in every case, so absolute numbers (raw TCP most of all) are below what native tools reach; ratios come from the same run.",
        "CPU-s/GiB: utime+stime from /proc/<pid>/stat of the tunnel processes only (peerup: daemon + proxy, + relay server when RELAYED; ssh: ssh client + the sshd listener and all its children), over the throughput transfer. Raw TCP: 0 by definition (kernel work is not attributed).",
        "Peak RSS: sum of VmHWM of the tunnel processes after the last round. alice's daemon serves both NAT cases and the relay server carries reservations as well, so their peaks are shared.",
        "Cold start: a new `peerup proxy` for the `echo` service is started each round; 'start → first byte' = spawn → `Listening` line + the harness client's time from connect to the first echoed byte (1-byte round trip). The Python client's own start-up between the two is not counted. 'start → DIRECT' = spawn → the proxy's first `[DIRECT]` connection line, probing every 250 ms.",
        "The relay's per-circuit data limit is raised for the benchmark (session_data_limit 1024GB) so that every round fits on one circuit.",
        "Chart: `<stem>.png` beside this file (throughput median with min–max whiskers, RTT p50/p99), drawn from the JSON.",
    ];
    let mut notes: Vec<String> = Vec::new();
    if set.smoke {
        notes.push(smoke_note.into());
    }
    notes.push(fixed[0].into());
    notes.push(rtt_note);
    notes.extend(fixed[1..].iter().map(|n| n.to_string()));
    notes.extend([rathole_note, conc_note]);

    let mut md = String::new();
    md.push_str(&format!(
        "# peerup NAT-lab benchmark, {date}, commit {commit}{}\n\n",
        if dirty { " (+ uncommitted changes)" } else { "" }
    ));
    md.push_str(&format!(
        "- {} cores ({}), kernel {}; {}; {}\n- payload {} bytes ({:.0} MiB) per transfer, {} rounds, cases round-robin (order rotated each round); setup {:.0} s, total {:.0} s\n- binary: `{}`\n\n",
        ctx.cores,
        cpu_model,
        kernel,
        ssh_version,
        python_version,
        set.bytes,
        set.bytes as f64 / MIB,
        set.rounds,
        ctx.setup_s,
        ctx.total_s,
        std::env::var("PEERUP_NETLAB_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_peerup").into()),
    ));
    md.push_str("| case | route | path | MiB/s min / **median** / max | ÷ raw (same route) | RTT p50 / p99 µs | CPU-s/GiB (tunnel) | peak RSS MiB (tunnel) |\n|---|---|---|---|---|---|---|---|\n");
    if let Some(reason) = &ctx.rathole_skip {
        rows.push(format!(
            "| rathole (noise) | pubpeer → relay host | – | skipped: {} | | | | |",
            short(reason, 120)
        ));
    }
    md.push_str(&(rows.join("\n") + "\n\n"));
    md.push_str("Ratios (throughput medians):\n\n");
    for (k, label) in [
        ("direct_vs_ssh", "peerup DIRECT ÷ ssh -L default"),
        ("direct_vs_ssh_aes", "peerup DIRECT ÷ ssh -L aes128-gcm"),
        ("direct_vs_raw", "peerup DIRECT ÷ raw TCP (public path)"),
        ("nat_direct_vs_nat_raw", "peerup bob→alice DIRECT ÷ raw TCP alice→relay"),
        ("relayed_vs_direct", "peerup carol→alice RELAYED ÷ bob→alice DIRECT"),
        ("rathole_vs_raw", "rathole (noise) ÷ raw TCP (public path)"),
        ("direct_vs_rathole", "peerup DIRECT ÷ rathole (noise)"),
    ] {
        md.push_str(&format!("- {label}: **{}**\n", ratios[k]));
    }
    let a = &ratios["added_latency_us"];
    md.push_str(&format!(
        "- added latency vs raw (p50 / p99 µs): peerup DIRECT +{} / +{}; ssh -L +{} / +{}; ssh -L aes +{} / +{}; rathole +{} / +{}; bob→alice DIRECT +{} / +{}, carol→alice RELAYED +{} / +{} (vs raw alice→relay)\n",
        a["direct_p50"], a["direct_p99"], a["ssh_p50"], a["ssh_p99"], a["ssh_aes_p50"], a["ssh_aes_p99"],
        a["rathole_p50"], a["rathole_p99"],
        a["nat_direct_p50"], a["nat_direct_p99"], a["relayed_p50"], a["relayed_p99"]
    ));
    md.push_str(&format!(
        "- the floor of a two-process tunnel (two bare forwarders, no encryption) adds +{} / +{} µs; peerup DIRECT adds +{} / +{} µs over that floor\n\n",
        a["floor_p50"], a["floor_p99"], a["direct_over_floor_p50"], a["direct_over_floor_p99"]
    ));
    md.push_str("peerup start-up (medians over rounds):\n\n| case | proxy start → listening ms | connect → first byte ms | start → first byte ms | first connection path | start → DIRECT s | warm-up: start → DIRECT s |\n|---|---|---|---|---|---|---|\n");
    md.push_str(&(peerup_rows.join("\n") + "\n\n"));
    md.push_str(&format!(
        "Idle RSS after the reservation is held and 2 s idle (VmRSS, MiB): {}\n\n",
        ctx.idle_rss.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", ")
    ));
    md.push_str(&conc.markdown());
    let wrong: Vec<String> = cases
        .iter()
        .flat_map(|c| c.problems.iter().map(move |w| format!("{}: {}", c.id, short(w, 240))))
        .collect();
    if !wrong.is_empty() {
        md.push_str(&format!(
            "Failed connections or unexpected paths (full text in the JSON):\n\n- {}\n\n",
            wrong.join("\n- ")
        ));
    }
    let mut js = json!({
        "date": now,
        "commit": commit,
        "dirty": dirty,
        "smoke": set.smoke,
        "cores": ctx.cores,
        "cpu": cpu_model,
        "kernel": kernel,
        "ssh": ssh_version,
        "python": python_version,
        "payload_bytes": set.bytes,
        "rounds": set.rounds,
        "rtt_round_trips": set.rtt_n,
        "setup_s": num(ctx.setup_s, 1),
        "total_s": num(ctx.total_s, 1),
        "cases": jcases,
        "skipped": ctx.rathole_skip.iter().map(|r| json!({"case": "rathole-noise", "reason": r})).collect::<Vec<_>>(),
        "idle_rss_mib": ctx.idle_rss.iter().map(|(k, v)| (k.clone(), num(*v, 1))).collect::<serde_json::Map<_, _>>(),
        "ratios": ratios,
        "concurrency": conc.json(),
        "notes": notes,
    });
    let targets = crate::summary::targets(&js);
    md.push_str(&crate::summary::targets_md(&targets));
    js["targets"] = serde_json::to_value(&targets).expect("targets");
    let (budget_md, budget) = crate::summary::cpu_budget(&js);
    md.push_str(&budget_md);
    js["cpu_budget"] = budget;
    md.push_str("Notes:\n\n");
    for n in &notes {
        md.push_str(&format!("- {n}\n"));
    }

    (md, js)
}

/// `text` cut to `n` characters (full text stays in the JSON).
pub(crate) fn short(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.into();
    }
    text.chars().take(n).collect::<String>() + " …"
}

/// `<date>-<commit>`, the name of a run's files.
pub(crate) fn stem(js: &Value) -> String {
    let date = js["date"].as_str().and_then(|d| d.get(..10)).unwrap_or("unknown");
    format!("{date}-{}", js["commit"].as_str().unwrap_or("unknown"))
}

/// Writes `<stem>.{md,json,png}` and `latest.{md,json,png}` to the output folder, and the
/// README's benchmark block when that folder is bench/results.
pub(crate) fn write_results(set: &Settings, md: &str, js: &Value) {
    let dir = &set.out;
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let stem = stem(js);
    let text = serde_json::to_string_pretty(js).expect("json") + "\n";
    for name in [stem.as_str(), "latest"] {
        std::fs::write(dir.join(format!("{name}.md")), md).expect("write md");
        std::fs::write(dir.join(format!("{name}.json")), &text).expect("write json");
        crate::chart::draw(js, &dir.join(format!("{name}.png")))
            .unwrap_or_else(|e| panic!("chart {name}.png: {e}"));
    }
    say!("[bench] results: {}/{stem}.{{md,json,png}} (and latest.*)", dir.display());
    if set.published {
        crate::summary::update_readme(js);
    }
}

/// `BENCH_FROM_JSON`: draws the chart of an earlier result beside it (`<stem>.png`, and for a
/// `latest.json` also `<date>-<commit>.png`), and rewrites the README block when it is
/// bench/results/latest.json.
pub(crate) fn redraw(json_path: &Path) {
    let text = std::fs::read_to_string(json_path)
        .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    let js: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    crate::chart::load_font().unwrap_or_else(|e| panic!("chart: {e}"));
    let dir = json_path.parent().unwrap_or(Path::new("."));
    let own = json_path.file_stem().and_then(|s| s.to_str()).unwrap_or("latest").to_string();
    let mut names = vec![own.clone()];
    if own == "latest" {
        names.push(stem(&js));
    }
    for name in names {
        let png = dir.join(format!("{name}.png"));
        crate::chart::draw(&js, &png).unwrap_or_else(|e| panic!("chart {}: {e}", png.display()));
        say!("[bench] chart: {}", png.display());
    }
    let published = workspace().join("bench/results/latest.json");
    if own == "latest" && json_path.canonicalize().ok() == published.canonicalize().ok() {
        crate::summary::update_readme(&js);
    }
}
