//! `Proc`: a process started inside a lab namespace, its stdout and stderr captured line by line.
//!
//! Tests wait for lines (`wait_line`, `expect_line`) instead of sleeping. A `Proc` runs in its own
//! process group; dropping it terminates the whole group (SIGTERM, then SIGKILL), writes its full
//! output to the lab's log folder, and, when the test is panicking, prints the tail of the output.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// One captured line.
#[derive(Debug, Clone)]
pub struct Line {
    pub stream: Stream,
    /// When it was read.
    pub at: Instant,
    pub text: String,
}

#[derive(Default)]
struct Captured {
    lines: Vec<Line>,
    /// How many of the two streams reached end of file.
    closed: u8,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Captured>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a process was started: environment and where its log goes.
pub struct Spawn<'a> {
    /// The namespace (`<prefix>-<host>`), or `None` for the root namespace.
    pub ns: Option<&'a str>,
    /// A short name for messages and the log file, e.g. `alice-daemon`.
    pub name: &'a str,
    pub program: &'a Path,
    pub args: &'a [&'a str],
    /// Variables set on top of `PATH` (the environment is otherwise cleared).
    pub env: &'a [(&'a str, &'a str)],
    /// Folder for `<name>.log`.
    pub log_dir: &'a Path,
}

/// A running (or finished) process with captured output.
pub struct Proc {
    name: String,
    child: Child,
    shared: Arc<Shared>,
    started: Instant,
    log_file: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts the process (`ip netns exec <ns> program args…` inside a namespace).
    pub fn spawn(s: &Spawn<'_>) -> Proc {
        let mut cmd = match s.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(s.program);
                c
            }
            None => Command::new(s.program),
        };
        cmd.args(s.args)
            .env_clear()
            .env("PATH", super::lab::path_env())
            .env("LANG", "C.UTF-8")
            .envs(s.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{}: cannot start {} {:?}: {e}", s.name, s.program.display(), s.args)
        });
        let shared = Arc::new(Shared::default());
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        spawn_reader(out, Stream::Out, Arc::clone(&shared));
        spawn_reader(err, Stream::Err, Arc::clone(&shared));
        let file_name: String = s
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        Proc {
            name: s.name.to_string(),
            child,
            shared,
            started: Instant::now(),
            log_file: s.log_dir.join(format!("{file_name}.log")),
            status: None,
        }
    }

    /// The process ID (of the program itself: `ip netns exec` execs it without forking).
    #[allow(dead_code, reason = "used by benches/lab.rs")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The number of lines captured so far: pass it to `wait_line_from` to see only newer lines.
    pub fn mark(&self) -> usize {
        self.shared.lock().lines.len()
    }

    /// All captured lines of one stream (or both), joined with newlines.
    pub fn text(&self, stream: Option<Stream>) -> String {
        let st = self.shared.lock();
        let lines: Vec<&str> = st
            .lines
            .iter()
            .filter(|l| stream.is_none_or(|s| s == l.stream))
            .map(|l| l.text.as_str())
            .collect();
        lines.join("\n")
    }

    /// Waits until a line at index `from` or later (of `stream`, or either) matches `pred`. Returns its
    /// index and the line, or `None` after `timeout` or once the process closed both streams without
    /// printing one.
    pub fn wait_line_from(
        &self,
        from: usize,
        stream: Option<Stream>,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, Line)> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let found = st
                .lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| stream.is_none_or(|s| s == l.stream) && pred(&l.text));
            if let Some((i, l)) = found {
                return Some((i, l.clone()));
            }
            let now = Instant::now();
            if st.closed == 2 || now >= deadline {
                return None;
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Like `wait_line_from`, but panics with `what` and the process's recent output on failure.
    #[track_caller]
    pub fn expect_line_from(
        &mut self,
        what: &str,
        from: usize,
        stream: Option<Stream>,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, Line) {
        if let Some(found) = self.wait_line_from(from, stream, timeout, pred) {
            return found;
        }
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited with {status}"),
            _ => format!("still running after {timeout:?}"),
        };
        panic!("{}: no line {what} ({state}); last output:\n{}", self.name, self.tail(40));
    }

    /// `expect_line_from(what, 0, …)`, returning only the line's text.
    #[track_caller]
    pub fn expect_line(
        &mut self,
        what: &str,
        stream: Option<Stream>,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.expect_line_from(what, 0, stream, timeout, pred).1.text
    }

    /// Seconds since the process was started, for a line's timestamp.
    pub fn since_start(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }

    /// Waits up to `timeout` for the process to exit (and its output to be read).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.wait_streams_closed(Duration::from_secs(2));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; kills it and panics if it does not within `timeout`.
    #[track_caller]
    pub fn finish(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "{}: did not exit within {timeout:?}; last output:\n{}",
                    self.name,
                    self.tail(40)
                );
            }
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn wait_streams_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.closed < 2 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the whole process group.
    pub fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .env("PATH", super::lab::path_env())
            .args(["-s", signal, "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Terminates the process group: SIGTERM, up to 3 s grace, then SIGKILL. Idempotent.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            self.signal("TERM");
            if self.wait_exit(Duration::from_secs(3)).is_none() {
                self.signal("KILL");
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
            }
        }
        // A child that outlived its parent still holds the output pipes: end the rest of the group.
        if !self.streams_closed() {
            self.signal("KILL");
            self.wait_streams_closed(Duration::from_secs(2));
        }
    }

    fn streams_closed(&self) -> bool {
        self.shared.lock().closed == 2
    }

    /// The last `n` lines, prefixed with their time and stream.
    pub fn tail(&self, n: usize) -> String {
        let st = self.shared.lock();
        let skip = st.lines.len().saturating_sub(n);
        st.lines.iter().skip(skip).map(|l| self.format_line(l)).collect::<Vec<_>>().join("\n")
    }

    fn format_line(&self, l: &Line) -> String {
        let tag = match l.stream {
            Stream::Out => "out",
            Stream::Err => "err",
        };
        format!("  [{:8.3}s {tag}] {}", self.since_start(l.at), l.text)
    }

    fn write_log(&self) {
        let st = self.shared.lock();
        let mut text: String =
            st.lines.iter().map(|l| self.format_line(l) + "\n").collect::<Vec<_>>().concat();
        if let Some(status) = self.status {
            text.push_str(&format!("  (exit: {status})\n"));
        }
        let _ = std::fs::write(&self.log_file, text);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        self.write_log();
        if std::thread::panicking() {
            eprintln!(
                "----- {} (full log: {}) -----\n{}",
                self.name,
                self.log_file.display(),
                self.tail(200)
            );
        }
    }
}

fn spawn_reader(pipe: impl Read + Send + 'static, stream: Stream, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text =
                        String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                    shared.lock().lines.push(Line { stream, at: Instant::now(), text });
                    shared.cv.notify_all();
                }
            }
        }
        shared.lock().closed += 1;
        shared.cv.notify_all();
    });
}
