//! `Proc`: a background `peerup` in a test home, with its stdout and stderr lines; killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Home;

/// How long a line or an exit may take.
const WAIT: Duration = Duration::from_secs(30);

/// A running `peerup`; its lines are read as they come and kept.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    /// The lines read but not returned by a wait, each with whether it came from stdout.
    seen: Vec<(bool, String)>,
}

impl Proc {
    /// Starts `peerup <args>` in `home` (only `HOME` and `NO_COLOR` set).
    pub fn spawn(home: &Home, args: &[&str]) -> Proc {
        Self::spawn_with(home, args, &[])
    }

    /// Like [`Self::spawn`], with more environment variables.
    pub fn spawn_with(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("peerup"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .current_dir(home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start peerup");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (is_out, r) in
            [(true, Box::new(out) as Box<dyn std::io::Read + Send>), (false, Box::new(err))]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send((is_out, line));
                }
            });
        }
        Proc { child, lines, seen: Vec::new() }
    }

    /// The next stdout line matching `pred`.
    #[track_caller]
    pub fn wait_out(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((true, l)) if pred(&l) => return l,
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("never printed {what}: {e}; output so far: {:#?}", self.texts()),
            }
        }
    }

    /// The first stderr line, printed already or still to come, matching `pred`.
    #[track_caller]
    pub fn wait_err(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some((_, l)) = self.seen.iter().find(|(out, l)| !out && pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((false, l)) if pred(&l) => return l,
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("never logged {what}: {e}; output so far: {:#?}", self.texts()),
            }
        }
    }

    /// The next stdout line starting with `prefix`.
    #[track_caller]
    pub fn wait_line(&mut self, prefix: &str) -> String {
        self.wait_out(&format!("{prefix:?}"), |l| l.starts_with(prefix))
    }

    /// Sends SIGTERM (as systemd does to stop a service).
    pub fn terminate(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself; false if it still runs after the wait.
    pub fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            // Keep reading its lines meanwhile (and wait a little when there are none).
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line);
            }
        }
        false
    }

    /// Waits for the process to exit by itself; returns its code and every line it printed.
    #[track_caller]
    pub fn finish(mut self) -> (i32, String) {
        let code = self.exit_and_drain();
        (code, self.texts().join("\n"))
    }

    /// Waits for the process to exit by itself; returns its code, the lines it printed on stdout
    /// (besides those a wait returned) and those it printed on stderr.
    #[track_caller]
    pub fn finish_split(mut self) -> (i32, Vec<String>, Vec<String>) {
        let code = self.exit_and_drain();
        let (out, err): (Vec<_>, Vec<_>) = self.seen.drain(..).partition(|(is_out, _)| *is_out);
        let text = |v: Vec<(bool, String)>| v.into_iter().map(|(_, l)| l).collect();
        (code, text(out), text(err))
    }

    /// Waits for the exit, then reads what the reader threads still hold; returns the exit code.
    #[track_caller]
    fn exit_and_drain(&mut self) -> i32 {
        assert!(self.wait_exit(), "did not exit; output: {:#?}", self.texts());
        let code = self.child.try_wait().ok().flatten().and_then(|s| s.code()).unwrap_or(-1);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        code
    }

    /// The text of the lines seen so far, stdout and stderr in the order they came.
    fn texts(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, l)| l.as_str()).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
