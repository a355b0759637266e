//! The authorized peer's transfers: bob's echo client through his proxy, one connection per run,
//! each checked by length and SHA-256, with the path the proxy reported and the one the daemon
//! served it on.

use std::collections::BTreeMap;
use std::time::Duration;

use super::FORGED;
use crate::lab::{Lab, TRANSFER};
use crate::node::{ConnReport, Daemon, Proxy};
use crate::py::{Client, Transfer};

/// Bytes sent (and echoed back) by each transfer.
pub const TRANSFER_BYTES: u64 = 8 << 20;
/// Transfers that measure the unloaded rate.
pub const UNLOADED_RUNS: usize = 3;

/// bob's proxy and what went through it.
pub struct Bob {
    pub proxy: Proxy,
    /// Connections made through the proxy so far (each reaches the service once).
    pub made: usize,
    /// Transfers run so far (for log names).
    pub runs: usize,
}

/// One transfer.
pub struct Run {
    pub t: Transfer,
    /// `DIRECT`, `RELAYED` or the proxy's error line.
    pub proxy_path: String,
    /// The `path=` of the daemon's `serving stream` line for it, if one came.
    pub served: String,
}

/// Some transfers.
pub struct Runs(pub Vec<Run>);

impl Runs {
    pub fn runs(&self) -> usize {
        self.0.len()
    }

    /// Bytes sent per second over all runs, MiB/s.
    pub fn rate(&self) -> f64 {
        let bytes: u64 = self.0.iter().map(|r| r.t.bytes).sum();
        let secs: f64 = self.0.iter().map(|r| r.t.secs.unwrap_or(f64::NAN)).sum();
        bytes as f64 / (1024.0 * 1024.0) / secs
    }

    pub fn slowest(&self) -> f64 {
        self.0.iter().map(|r| r.t.mib_per_s()).fold(f64::INFINITY, f64::min)
    }

    /// The runs that were not byte-exact, described.
    pub fn inexact(&self) -> Vec<String> {
        let bad = self.0.iter().filter(|r| !r.t.is_exact(TRANSFER_BYTES));
        bad.map(|r| format!("{:?} ({})", r.t, r.proxy_path)).collect()
    }

    pub fn summary(&self) -> String {
        let mut rates: Vec<f64> = self.0.iter().map(|r| r.t.mib_per_s()).collect();
        rates.sort_by(f64::total_cmp);
        let median = rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN);
        let count = |f: &dyn Fn(&Run) -> &str| {
            let mut m: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &self.0 {
                *m.entry(f(r)).or_default() += 1;
            }
            m
        };
        format!(
            "{} × {} MiB, {} exact; {:.2} MiB/s overall (median {median:.2}, slowest {:.2}, \
             fastest {:.2}); proxy paths {:?}; daemon served on {:?}",
            self.0.len(),
            TRANSFER_BYTES >> 20,
            self.0.iter().filter(|r| r.t.is_exact(TRANSFER_BYTES)).count(),
            self.rate(),
            self.slowest(),
            rates.last().copied().unwrap_or(f64::NAN),
            count(&|r| r.proxy_path.as_str()),
            count(&|r| r.served.as_str()),
        )
    }
}

impl Bob {
    pub fn new(proxy: Proxy) -> Bob {
        Bob { proxy, made: 0, runs: 0 }
    }

    /// One transfer.
    fn run(&mut self, lab: &Lab, what: &str, daemon: &Daemon) -> Run {
        self.runs += 1;
        self.made += 1;
        let (mark, served_mark) = (self.proxy.proc.mark(), daemon.proc.mark());
        let name = format!("bob-{what}-{}", self.runs);
        let t = Client::local("bob", self.proxy.port, TRANSFER_BYTES).run(lab, &name, TRANSFER);
        let proxy_path = match self.proxy.report_from(mark, Duration::from_secs(10)).1 {
            ConnReport::Path { path, .. } => format!("{path:?}").to_uppercase(),
            ConnReport::Error(e) => e,
        };
        let served = daemon
            .proc
            .wait_line_from(served_mark, None, Duration::from_secs(5), |l| {
                l.contains("serving stream") && !l.contains(FORGED)
            })
            .and_then(|(_, l)| {
                let path = l.text.split("path=").nth(1)?.split_whitespace().next()?.to_string();
                Some(path.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "none".into());
        Run { t, proxy_path, served }
    }

    /// `n` transfers one after another.
    pub fn run_some(&mut self, lab: &Lab, what: &str, n: usize, daemon: &Daemon) -> Runs {
        Runs((0..n).map(|_| self.run(lab, what, daemon)).collect())
    }

    /// Transfers one after another for as long as `going()` says (at least one).
    pub fn run_while(
        &mut self,
        lab: &Lab,
        what: &str,
        going: impl Fn() -> bool,
        daemon: &Daemon,
    ) -> Runs {
        let mut runs = vec![self.run(lab, what, daemon)];
        while going() {
            runs.push(self.run(lab, what, daemon));
        }
        Runs(runs)
    }
}
