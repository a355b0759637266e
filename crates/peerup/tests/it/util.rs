//! The test harness: a temporary home with an optional initialized node.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

mod proc;
pub use proc::Proc;

pub const RELAY_ID: &str = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";
pub const PEER_A: &str = "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt";
pub const PEER_B: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";

/// A temporary HOME (also the working directory, so no stray ./peerup.yaml is found).
pub struct Home {
    dir: TempDir,
}

/// What a run printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a successful run and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self.stdout
    }

    /// Asserts a failure with exit code 1 and exactly one `Error: …` line on stderr; returns it.
    #[track_caller]
    pub fn fails(self) -> String {
        assert_eq!(self.code, 1, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one error line, got: {:?}", self.stderr);
        assert!(lines[0].starts_with("Error: "), "{:?}", lines[0]);
        lines[0].to_string()
    }
}

impl Home {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A home with `peerup init` already run.
    pub fn initialized() -> Self {
        let home = Self::new();
        home.run(&[
            "init",
            "--non-interactive",
            "--relay",
            "198.18.0.1",
            "--relay-peer-id",
            RELAY_ID,
        ])
        .ok();
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path().join(".config/peerup")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.config_dir().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).expect("read file")
    }

    pub fn mode(&self, name: &str) -> u32 {
        std::fs::metadata(self.file(name)).expect("stat").permissions().mode() & 0o777
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::cargo_bin("peerup").expect("peerup binary");
        cmd.env_clear()
            .env("HOME", self.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .current_dir(self.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let out = self.command().args(args).write_stdin(stdin).output().expect("run peerup");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a failing command and asserts every listed file is byte-for-byte unchanged.
    #[track_caller]
    pub fn fails_leaving(&self, args: &[&str], files: &[&str]) -> String {
        let before: Vec<Vec<u8>> =
            files.iter().map(|f| std::fs::read(self.file(f)).unwrap()).collect();
        let err = self.run(args).fails();
        for (f, b) in files.iter().zip(before) {
            assert_eq!(
                std::fs::read(self.file(f)).unwrap(),
                b,
                "{f} changed after a failed command"
            );
        }
        err
    }
}

/// Sets up a relay in `home`'s `relay/` folder listening on 127.0.0.1 port 0 (with gating as
/// given), and returns its config file.
pub fn loopback_relay_config(home: &Home, gating: bool) -> PathBuf {
    let dir = home.path().join("relay");
    home.run(&["relay", "setup", "--dir", dir.to_str().unwrap()]).ok();
    let cfg = dir.join("relay-server.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let start = text.find("  listen_addresses:").unwrap();
    let end = text[start..].find("\n\n").unwrap() + start;
    let mut text = format!(
        "{}  listen_addresses:\n    - \"/ip4/127.0.0.1/tcp/0\"{}",
        &text[..start],
        &text[end..]
    );
    if !gating {
        text = text.replace("enable_connection_gating: true", "enable_connection_gating: false");
    }
    std::fs::write(&cfg, text).unwrap();
    cfg
}
