//! CPU time and memory of the tunnel's processes from /proc, and small statistics helpers.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Process accounting from /proc.

/// A process whose CPU time and memory count as the tunnel's.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// Count its descendants too (sshd's per-connection processes).
    pub(crate) tree: bool,
}

impl Tracked {
    pub(crate) fn one(name: &str, pid: u32) -> Tracked {
        Tracked { name: name.into(), pid, tree: false }
    }
}

/// `/proc/<pid>/stat` fields from field 4 (ppid) on: field `k` is at index `k - 4`.
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect())
}

pub(crate) fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// `pid` and, for a tree, every live descendant.
pub(crate) fn pids_of(t: &Tracked) -> Vec<u32> {
    let mut pids = vec![t.pid];
    if !t.tree {
        return pids;
    }
    let mut parent: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // After the state field: ppid is the first number.
        if let Some(f) = stat_fields(pid) {
            parent.push((pid, f[0] as u32));
        }
    }
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        pids.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    pids
}

/// CPU seconds (user + system) used so far by the tracked processes; a tree also counts its
/// children that already exited.
pub(crate) fn cpu_secs(tracked: &[Tracked], tck: f64) -> f64 {
    let mut ticks = 0u64;
    for t in tracked {
        for pid in pids_of(t) {
            if let Some(f) = stat_fields(pid) {
                // Fields 14..17 (utime, stime, cutime, cstime) sit at 10..13 here.
                ticks += f[10] + f[11];
                if t.tree && pid == t.pid {
                    ticks += f[12] + f[13];
                }
            }
        }
    }
    ticks as f64 / tck
}

pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim_start_matches(':').split_whitespace().next()?.parse().ok()
}

/// Resets a process's VmHWM to its current RSS (`/proc/<pid>/clear_refs`, Linux ≥ 4.0).
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Sum of `key` (`VmHWM`, `VmRSS`) over each tracked process (and a tree's descendants), MiB,
/// with the per-name parts.
pub(crate) fn memory_mib(tracked: &[Tracked], key: &str) -> (f64, BTreeMap<String, f64>) {
    let mut parts = BTreeMap::new();
    for t in tracked {
        let kib: u64 = pids_of(t).into_iter().filter_map(|p| status_kib(p, key)).sum();
        parts.insert(t.name.clone(), kib as f64 / 1024.0);
    }
    (parts.values().sum(), parts)
}

// ---------------------------------------------------------------------------------------------
// Statistics.

pub(crate) fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let v = sorted(v);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn min(v: &[f64]) -> f64 {
    sorted(v).first().copied().unwrap_or(f64::NAN)
}

pub(crate) fn max(v: &[f64]) -> f64 {
    sorted(v).last().copied().unwrap_or(f64::NAN)
}

/// A float for JSON, rounded to `digits` decimals (`null` when not finite).
pub(crate) fn num(x: f64, digits: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let m = 10f64.powi(digits);
    json!((x * m).round() / m)
}

pub(crate) fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() { format!("{x:.digits$}") } else { "–".into() }
}
