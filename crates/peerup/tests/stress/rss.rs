//! `Sampler`: the resident memory of some processes, read from `/proc/<pid>/status` every 100 ms in
//! a background thread while a scenario runs, with its first, peak and last value per process.
//! VmHWM (the kernel's own peak, reset with `measure::reset_peak`) catches what falls between
//! samples.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::measure::status_kib;

/// How often VmRSS is read.
const PERIOD: Duration = Duration::from_millis(100);

/// One process's VmRSS over a run, MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Series {
    pub first: f64,
    pub peak: f64,
    pub last: f64,
    pub samples: u64,
}

impl Series {
    fn add(&mut self, mib: f64) {
        if self.samples == 0 {
            self.first = mib;
        }
        self.peak = self.peak.max(mib);
        self.last = mib;
        self.samples += 1;
    }
}

/// A running sampler; `finish` stops it and returns the series.
pub struct Sampler {
    stop: SyncSender<()>,
    thread: JoinHandle<BTreeMap<String, Series>>,
}

/// VmRSS of `pid`, MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0)
}

/// VmHWM of `pid`, MiB.
pub fn hwm_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0)
}

impl Sampler {
    /// Starts sampling the named processes.
    pub fn start(procs: &[(&str, u32)]) -> Sampler {
        let procs: Vec<(String, u32)> = procs.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        let (stop, stopped) = mpsc::sync_channel(1);
        let thread = std::thread::spawn(move || {
            let mut series: BTreeMap<String, Series> = BTreeMap::new();
            loop {
                for (name, pid) in &procs {
                    if let Some(mib) = rss_mib(*pid) {
                        series.entry(name.clone()).or_default().add(mib);
                    }
                }
                match stopped.recv_timeout(PERIOD) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return series,
                }
            }
        });
        Sampler { stop, thread }
    }

    /// Stops sampling and returns each process's series.
    pub fn finish(self) -> BTreeMap<String, Series> {
        let _ = self.stop.send(());
        self.thread.join().expect("RSS sampler thread")
    }
}
