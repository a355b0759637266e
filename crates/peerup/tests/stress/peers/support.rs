//! Helpers of the hostile-peer scenario: attacker threads in lab namespaces, CPU accounting, the
//! lab's set-up steps, the outcome tally and the list of checks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::PREFIX;
use crate::attacker::{self, Outcomes};
use crate::lab::{COMMAND, Lab};
use crate::measure::clk_tck;
use crate::node::Node;
use crate::proc::{Proc, Stream};

/// Collects the outcomes of a flood's attempts.
#[derive(Default)]
pub struct Tally(Outcomes);

impl Tally {
    pub fn add(&mut self, label: String, example: Option<String>, accepted: bool, timed_out: bool) {
        let o = &mut self.0;
        *o.counts.entry(label.clone()).or_default() += 1;
        if let Some(e) = example {
            o.examples.entry(label).or_insert(e);
        }
        o.accepted += u64::from(accepted);
        o.timed_out += u64::from(timed_out);
    }

    pub fn finish(self, started: Instant) -> Outcomes {
        Outcomes { secs: started.elapsed().as_secs_f64(), ..self.0 }
    }
}

/// Runs `run()` on a thread of its own inside namespace `netns`, at the lowest CPU priority, on a
/// single-threaded runtime; returns its result and the CPU seconds the thread used.
pub fn spawn_in<T, F>(
    netns: String,
    name: &str,
    run: impl FnOnce() -> F + Send + 'static,
) -> JoinHandle<(T, f64)>
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            attacker::enter_netns(&netns);
            lower_priority();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let out = rt.block_on(run());
            (out, cpu_secs("thread-self"))
        })
        .expect("spawn an attacker thread")
}

/// Gives this thread (and the threads it starts) the lowest CPU priority (`renice 19`): in the
/// world an attacker's work is done on its own machines, so here it takes only the CPU that the
/// daemon, the relay and the authorized peer leave. What the attempts cost the daemon and the
/// relay still counts in full.
fn lower_priority() {
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = me.file_name().and_then(|t| t.to_str()).expect("thread ID").to_string();
    let status = std::process::Command::new("renice")
        .env("PATH", crate::lab::path_env())
        .args(["-n", "19", "-p", &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run renice");
    assert!(status.success(), "renice -n 19 -p {tid}: {status}");
}

/// CPU seconds (user + system) used so far by `/proc/<which>` (a PID, `self`, `thread-self`).
pub fn cpu_secs(which: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
    let fields: Vec<u64> = text
        .rfind(')')
        .map(|i| text[i + 1..].split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    // Fields 14 and 15 (utime, stime) sit at 10 and 11 here.
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    ticks as f64 / clk_tck()
}

/// `ip:port`, which must be a lab address on the lab's internet (198.18.0.0/24).
pub fn lab_addr(ip: &str, port: u16) -> SocketAddr {
    assert!(ip.starts_with("198.18.0."), "{ip} is not a lab address");
    format!("{ip}:{port}").parse().expect("socket address")
}

/// Moves a node's TCP and QUIC listeners (IPv4) to `port` (before its daemon starts).
pub fn listen_on(lab: &Lab, node: &Node, port: u16) {
    let text = std::fs::read_to_string(node.config()).expect("read config");
    let moved = text
        .replace("\"/ip4/0.0.0.0/tcp/0\"", &format!("\"/ip4/0.0.0.0/tcp/{port}\""))
        .replace("\"/ip4/0.0.0.0/udp/0/quic-v1\"", &format!("\"/ip4/0.0.0.0/udp/{port}/quic-v1\""));
    assert_ne!(text, moved, "no IPv4 listen addresses on port 0 in:\n{text}");
    std::fs::write(node.config(), moved).expect("write config");
    node.peerup(lab, "config-validate", &["config", "validate"]).ok();
}

/// Limits egress of `host`'s uplink to `mbit` (kernel tbf; bursts of 64 KiB, at most 50 ms queued).
pub fn shape_uplink(lab: &Lab, host: &str, mbit: u64) {
    let rate = format!("{mbit}mbit");
    let args = [
        "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "64kb",
        "latency", "50ms",
    ];
    lab.run(Some(host), &format!("{host}-tc"), Path::new("tc"), &args, &[], COMMAND).ok();
}

/// Lines of `p`'s output (both streams) from line `from` on that satisfy `pred`.
pub fn lines(p: &Proc, from: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    p.text(None).lines().skip(from).filter(|l| pred(l)).map(String::from).collect()
}

/// The first line of `p`'s stderr that reports a panic.
pub fn panicked(p: &Proc) -> Option<String> {
    p.wait_line_from(0, Some(Stream::Err), Duration::ZERO, |l| l.contains("panicked"))
        .map(|(_, l)| l.text)
}

/// Prints a flood's figures.
pub fn print_outcomes(what: &str, o: &Outcomes) {
    say!(
        "[{PREFIX}] {what}: {} attempts in {:.1} s ({:.1}/s), {} accepted, {} timed out; {:?}",
        o.total(),
        o.secs,
        o.total() as f64 / o.secs,
        o.accepted,
        o.timed_out,
        o.counts
    );
    say!("[{PREFIX}] {what} examples: {:?}", o.examples);
}

/// The properties checked, each with whether it held.
#[derive(Default)]
pub struct Checks(Vec<(String, bool)>);

impl Checks {
    /// Records (and prints) one property.
    pub fn check(&mut self, ok: bool, what: String) {
        say!("[{PREFIX}] {} {what}", if ok { "HOLDS: " } else { "FAILED:" });
        self.0.push((what, ok));
    }

    /// Fails the test if any property did not hold, naming all that did not.
    #[track_caller]
    pub fn finish(self) {
        let failed: Vec<&str> =
            self.0.iter().filter(|(_, ok)| !ok).map(|(w, _)| w.as_str()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} checks failed:\n{}",
            failed.len(),
            self.0.len(),
            failed.join("\n")
        );
    }
}
