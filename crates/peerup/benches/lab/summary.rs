//! Issue 8's targets checked against one result, and the README's benchmark block (the headline
//! table, the chart and the targets), both computed from the result's JSON so that an earlier
//! result can be summarised again (`BENCH_FROM_JSON`).

use serde::Serialize;
use serde_json::Value;

use crate::measure::fmt;
use crate::report::workspace;

const README_BEGIN: &str = "<!-- bench:begin";
const README_END: &str = "<!-- bench:end -->";

/// One target of issue 8 and how the run did.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) figure: String,
    pub(crate) target: String,
    pub(crate) measured: String,
    /// `None`: not measured in this run.
    pub(crate) met: Option<bool>,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn case<'a>(js: &'a Value, id: &str) -> &'a Value {
    js["cases"].as_array().and_then(|a| a.iter().find(|c| c["id"] == id)).unwrap_or(&Value::Null)
}

fn check(figure: &str, target: &str, measured: String, value: f64, ok: bool) -> Target {
    let met = value.is_finite().then_some(ok);
    Target { figure: figure.into(), target: target.into(), measured, met }
}

/// The targets of issue 8, from a result's JSON.
pub(crate) fn targets(js: &Value) -> Vec<Target> {
    let r = &js["ratios"];
    let lat = &r["added_latency_us"];
    let mut out = Vec::new();
    for (figure, key, min) in [
        ("peerup DIRECT ÷ `ssh -L` (default cipher), throughput", "direct_vs_ssh", 1.5),
        ("peerup DIRECT ÷ raw TCP, same path, throughput", "direct_vs_raw", 0.5),
        ("peerup RELAYED ÷ peerup DIRECT, throughput", "relayed_vs_direct", 0.5),
    ] {
        let x = f(&r[key]);
        out.push(check(figure, &format!("≥ {min}×"), format!("{}×", fmt(x, 2)), x, x >= min));
    }
    // With the floor of any two-process tunnel in the same run, for scale.
    for (figure, key, floor_key, max) in [
        ("added latency p50 (DIRECT, public path)", "direct_p50", "floor_p50", 60.0),
        ("added latency p99 (DIRECT, public path)", "direct_p99", "floor_p99", 300.0),
    ] {
        let x = f(&lat[key]);
        let floor = f(&lat[floor_key]);
        let mut measured = format!("+{} µs", fmt(x, 0));
        if floor.is_finite() {
            measured += &format!(" (two bare forwarders: +{} µs)", fmt(floor, 0));
        }
        out.push(check(figure, &format!("≤ +{max} µs"), measured, x, x <= max));
    }
    let relayed = &case(js, "peerup-nat-relayed")["cold_start"];
    let ttfb = f(&relayed["start_to_first_byte_ms_median"]);
    out.push(check(
        "cold `peerup proxy` start → first byte, relayed",
        "≤ 1 s",
        format!("{} ms", fmt(ttfb, 0)),
        ttfb,
        ttfb <= 1000.0,
    ));
    // New connections go DIRECT within 2 s after the first byte (both direct cases, the worse).
    let mut worst = f64::NAN;
    let mut parts = Vec::new();
    for (id, name) in
        [("peerup-nat-direct", "bob→alice"), ("peerup-public-direct", "pubpeer→relay")]
    {
        let cold = &case(js, id)["cold_start"];
        let after =
            f(&cold["start_to_direct_s_median"]) - f(&cold["start_to_first_byte_ms_median"]) / 1e3;
        if after.is_finite() {
            parts.push(format!("{name} {} s", fmt(after.max(0.0), 2)));
            worst = if worst.is_finite() { worst.max(after) } else { after };
        }
    }
    out.push(check(
        "new connections DIRECT, after that first byte",
        "≤ 2 s",
        parts.join(", "),
        worst,
        worst <= 2.0,
    ));
    let idle: Vec<(String, f64)> = js["idle_rss_mib"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("daemon"))
        .map(|(k, v)| (k.clone(), f(v)))
        .collect();
    let idle_max = idle.iter().map(|(_, v)| *v).fold(f64::NAN, f64::max);
    let idle_text: Vec<String> = idle.iter().map(|(k, v)| format!("{k} {}", fmt(*v, 1))).collect();
    out.push(check(
        "idle daemon RSS",
        "≤ 20 MiB",
        format!("{} MiB", idle_text.join(", ")),
        idle_max,
        idle_max <= 20.0,
    ));
    out.push(concurrency_target(&js["concurrency"]));
    let cpu = |id: &str| f(&case(js, id)["cpu_s_per_gib"]["median"]);
    let best_ssh = cpu("ssh-default").min(cpu("ssh-aes128gcm"));
    let direct = cpu("peerup-public-direct");
    out.push(check(
        "CPU-s per GiB, both ends (DIRECT, public path)",
        "≤ the best `ssh -L` cipher's",
        format!("{} vs {}", fmt(direct, 2), fmt(best_ssh, 2)),
        direct - best_ssh,
        direct <= best_ssh,
    ));
    // A smoke run's figures mean nothing: nothing is judged.
    if js["smoke"] == true {
        for t in &mut out {
            t.met = None;
        }
    }
    out
}

/// What the cores allow on the public path: the client and sink (Python, SHA-256) share the
/// machine's cores with the tunnel, so DIRECT can move at most `cores ÷ (load + tunnel)` GiB/s,
/// where load and tunnel are their CPU-seconds per GiB. Also the tunnel CPU that half of raw
/// TCP's throughput would need with this load.
pub(crate) fn cpu_budget(js: &Value) -> (String, Value) {
    // A smoke run's transfers are too short for CPU times counted in 10 ms ticks.
    if js["smoke"] == true {
        return (String::new(), Value::Null);
    }
    let cores = js["cores"].as_f64().unwrap_or(f64::NAN);
    let (raw, direct) = (case(js, "raw-public"), case(js, "peerup-public-direct"));
    let load_raw = f(&raw["load_cpu_s_per_gib"]["median"]);
    let load = f(&direct["load_cpu_s_per_gib"]["median"]);
    let tunnel = f(&direct["cpu_s_per_gib"]["median"]);
    let measured = f(&direct["throughput_mib_s"]["median"]);
    let half_raw = f(&raw["throughput_mib_s"]["median"]) / 2.0;
    let bound = cores / (load + tunnel) * 1024.0;
    let tunnel_for_half = cores / (half_raw / 1024.0) - load;
    if !(bound.is_finite() && tunnel_for_half.is_finite()) {
        return (String::new(), Value::Null);
    }
    let md = format!(
        "CPU budget (public path): the Python client and sink used {} CPU-s/GiB with raw TCP and {} \
         with DIRECT; the tunnel used {}. On {cores} cores DIRECT can move at most {cores} ÷ \
         ({} + {}) = **{} MiB/s**; it moved {} ({}% of that). Half of raw TCP ({} MiB/s) would \
         need a tunnel at ≤ **{} CPU-s/GiB** with this client and sink.\n\n",
        fmt(load_raw, 2),
        fmt(load, 2),
        fmt(tunnel, 2),
        fmt(load, 2),
        fmt(tunnel, 2),
        fmt(bound, 0),
        fmt(measured, 0),
        fmt(100.0 * measured / bound, 0),
        fmt(half_raw, 0),
        fmt(tunnel_for_half, 2),
    );
    let js = serde_json::json!({
        "load_cpu_s_per_gib_raw": load_raw,
        "load_cpu_s_per_gib_direct": load,
        "tunnel_cpu_s_per_gib_direct": tunnel,
        "direct_bound_mib_s": bound,
        "direct_mib_s": measured,
        "tunnel_cpu_s_per_gib_for_half_raw": tunnel_for_half,
    });
    (md, js)
}

fn concurrency_target(c: &Value) -> Target {
    let figure = "1,000 concurrent connections × 1 MiB: peak RSS (daemon + proxy), byte-exact";
    let target = "≤ 150 MiB, all byte-exact";
    if c.is_null() {
        return Target {
            figure: figure.into(),
            target: target.into(),
            measured: "not measured in this run".into(),
            met: None,
        };
    }
    let (n, rss) = (c["connections"].as_u64().unwrap_or(0), f(&c["peak_rss_mib"]));
    let exact = c["all_exact"] == true;
    let measured = format!(
        "{} MiB, {} ({} × {} B, {} s)",
        fmt(rss, 1),
        if exact { "all byte-exact" } else { "NOT all byte-exact" },
        n,
        c["bytes_each"],
        fmt(f(&c["seconds"]), 1)
    );
    let full = n >= 1000 && c["bytes_each"].as_u64().unwrap_or(0) >= 1 << 20;
    Target {
        figure: figure.into(),
        target: target.into(),
        measured: if full { measured } else { format!("{measured}: smaller than the target's") },
        met: (full && rss.is_finite()).then_some(rss <= 150.0 && exact),
    }
}

pub(crate) fn targets_md(targets: &[Target]) -> String {
    let mut md = String::from(
        "Targets (issue 8), from this run:\n\n| figure | target | measured | met |\n|---|---|---|---|\n",
    );
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        md.push_str(&format!("| {} | {} | {} | {met} |\n", t.figure, t.target, t.measured));
    }
    md + "\n"
}

/// The README block: headline table, chart, concurrency and targets.
pub(crate) fn readme_block(js: &Value) -> String {
    let raw = |route: &str| {
        let id = if route.starts_with("pubpeer") { "raw-public" } else { "raw-nat" };
        f(&case(js, id)["throughput_mib_s"]["median"])
    };
    let ssh = f(&case(js, "ssh-default")["throughput_mib_s"]["median"]);
    let mut md = format!(
        "{README_BEGIN}: written by scripts/bench from bench/results/latest.json -->\n\
         Latest run: {}, commit {}, {} cores, {} MiB SHA-256-checked pushes, {} rounds \
         ([full results](bench/results/latest.md)):\n\n\
         | case | route | MiB/s median (min–max) | ÷ raw TCP | ÷ `ssh -L` | RTT p50 / p99 µs | \
         CPU-s/GiB | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n",
        js["date"].as_str().and_then(|d| d.get(..10)).unwrap_or("?"),
        js["commit"].as_str().unwrap_or("?"),
        js["cores"],
        f(&js["payload_bytes"]) / (1u64 << 20) as f64,
        js["rounds"],
    );
    for c in js["cases"].as_array().into_iter().flatten() {
        let t = &c["throughput_mib_s"];
        let route = c["route"].as_str().unwrap_or("");
        let med = f(&t["median"]);
        let public = route.starts_with("pubpeer");
        let raw_case = c["id"].as_str().is_some_and(|id| id.starts_with("raw-"));
        md.push_str(&format!(
            "| {} | {route} | **{}** ({}–{}) | {} | {} | {} / {} | {} | {} |\n",
            c["label"].as_str().unwrap_or("?"),
            fmt(med, 0),
            fmt(f(&t["min"]), 0),
            fmt(f(&t["max"]), 0),
            fmt(med / raw(route), 2),
            if public && !raw_case { fmt(med / ssh, 2) } else { String::new() },
            fmt(f(&c["rtt_us"]["p50_median"]), 0),
            fmt(f(&c["rtt_us"]["p99_median"]), 0),
            if raw_case { "–".into() } else { fmt(f(&c["cpu_s_per_gib"]["median"]), 2) },
            if raw_case { "–".into() } else { fmt(f(&c["peak_rss_mib"]["total"]), 1) },
        ));
    }
    for s in js["skipped"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | | not measured: {} | | | | | |\n",
            s["case"].as_str().unwrap_or("?"),
            s["reason"].as_str().unwrap_or("?")
        ));
    }
    md.push_str("\n![benchmark](bench/results/latest.png)\n\n");
    md.push_str(&targets_md(&targets(js)));
    md + README_END
}

/// Replaces the README's block between `<!-- bench:begin` and `<!-- bench:end -->`.
pub(crate) fn update_readme(js: &Value) {
    let path = workspace().join("README.md");
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let (Some(a), Some(b)) = (text.find(README_BEGIN), text.find(README_END)) else {
        say!("[bench] README.md has no `{README_BEGIN} … {README_END}` block: not updated");
        return;
    };
    let new = format!("{}{}{}", &text[..a], readme_block(js), &text[b + README_END.len()..]);
    std::fs::write(&path, new).expect("write README.md");
    say!("[bench] README.md: benchmark block rewritten from this result");
}
