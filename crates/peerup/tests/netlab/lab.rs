//! `Lab`: one netlab NAT lab (`netlab up --prefix P`) for one test, removed again on drop.
//!
//! Labs are serialized by a process-wide lock, so tests of this target run one at a time whatever
//! `--test-threads` says: they share two CPU cores, and timing checks (DIRECT within 10 s) must not
//! be disturbed by another lab's 64 MiB transfer. When the lab cannot be had (not root, no netlab,
//! `up` fails), a test fails if `CI` is set and is skipped with a message on stderr otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tempfile::TempDir;

use super::proc::{Proc, Spawn, Stream};

/// Bytes sent (and echoed back) by every byte-exact transfer.
pub const PAYLOAD: u64 = 64 << 20;
/// For a process to print its readiness line.
pub const READY: Duration = Duration::from_secs(30);
/// For a node to hold a relay reservation.
pub const RESERVATION: Duration = Duration::from_secs(60);
/// For one payload transfer (debug builds encrypt slowly).
pub const TRANSFER: Duration = Duration::from_secs(600);
/// For a one-shot command.
pub const COMMAND: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

/// The running lab; `down` on drop.
pub struct Lab {
    prefix: String,
    netlab: PathBuf,
    work: TempDir,
    log_dir: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

/// What a one-shot command printed.
pub struct Finished {
    pub name: String,
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "{} failed ({})\nstdout:\n{}\nstderr:\n{}",
            self.name, self.status, self.stdout, self.stderr
        );
        self.stdout
    }
}

/// Whether this run is CI, where an unavailable lab is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Fails the test in CI, or prints why it is skipped and returns `None`.
#[track_caller]
pub fn unavailable<T>(reason: &str) -> Option<T> {
    assert!(!in_ci(), "the NAT lab is required when CI is set, but: {reason}");
    say!("SKIPPED: NAT lab test not run: {reason} (with CI=true this is a failure)");
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// The netlab script: `$NETLAB`, else `shared/netlab/netlab` beside the repository.
fn netlab_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NETLAB") {
        return p.into();
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/netlab/netlab");
    if beside.exists() { beside } else { "/work/shared/netlab/netlab".into() }
}

/// `/usr/bin/python3` when present (a pyenv shim needs a HOME the tests replace), else `python3`.
pub fn python() -> PathBuf {
    let system = Path::new("/usr/bin/python3");
    if system.exists() { system.into() } else { "python3".into() }
}

/// `PATH` for the lab's processes: the inherited one, plus the sbin folders (`ip`, `nft`, `sshd`).
pub fn path_env() -> std::ffi::OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&inherited).collect();
    for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    std::env::join_paths(dirs).expect("PATH")
}

/// Whether `program` (a path, or a name on `path_env()`) exists.
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::split_paths(&path_env()).any(|d| d.join(program).is_file())
}

const SCRIPTS: [(&str, &str); 3] = [
    ("echo_server.py", include_str!("py/echo_server.py")),
    ("client.py", include_str!("py/client.py")),
    ("capture.py", include_str!("py/capture.py")),
];

impl Lab {
    /// Brings up lab `prefix` (1–12 characters `[A-Za-z0-9_]`), after removing any leftover of it.
    /// `tools` are further programs the test needs (paths or names on PATH).
    #[track_caller]
    pub fn up(prefix: &str, tools: &[&str]) -> Option<Lab> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !is_root() {
            return unavailable("not running as root (network namespaces need it)");
        }
        let netlab = netlab_path();
        if !netlab.exists() {
            return unavailable(&format!("netlab not found at {}", netlab.display()));
        }
        let python = python();
        for tool in ["ip", "nft", python.to_str().unwrap_or("python3")].iter().chain(tools) {
            if !have(tool) {
                return unavailable(&format!("{tool} is not installed"));
            }
        }
        let work = tempfile::Builder::new()
            .prefix(&format!("peerup-netlab-{prefix}-"))
            .tempdir()
            .expect("temp dir");
        for (name, text) in SCRIPTS {
            std::fs::write(work.path().join(name), text).expect("write script");
        }
        let log_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netlab-logs").join(prefix);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir).expect("log dir");

        let lab = Lab { prefix: prefix.into(), netlab, work, log_dir, _serial: serial };
        lab.netlab_cmd(&["down"]); // leftovers of a killed run
        let (ok, out) = lab.netlab_cmd(&["up"]);
        if !ok {
            drop(lab); // runs down
            return unavailable(&format!("netlab up --prefix {prefix} failed:\n{out}"));
        }
        eprintln!("[{prefix}] lab is up; logs in {}", lab.log_dir.display());
        Some(lab)
    }

    fn netlab_cmd(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(&self.netlab);
        cmd.env("PATH", path_env()).arg("--prefix").arg(&self.prefix).args(args);
        match cmd.output() {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (false, format!("cannot run {}: {e}", self.netlab.display())),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace of a lab host.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// A scratch folder removed with the lab.
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// One of the Python helpers, written into the work folder.
    pub fn script(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Starts `program args…` inside `host`'s namespace (`None`: the root namespace).
    pub fn spawn(
        &self,
        host: Option<&str>,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let ns = host.map(|h| self.ns(h));
        Proc::spawn(&Spawn {
            ns: ns.as_deref(),
            name: &format!("{}-{name}", self.prefix),
            program,
            args,
            env,
            log_dir: &self.log_dir,
        })
    }

    /// Runs a command to completion (killed and failed after `timeout`).
    #[track_caller]
    pub fn run(
        &self,
        host: Option<&str>,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Finished {
        let mut p = self.spawn(host, name, program, args, env);
        let status = p.finish(timeout);
        Finished {
            name: format!("{name}: {} {}", program.display(), args.join(" ")),
            success: status.success(),
            status: status.to_string(),
            stdout: p.text(Some(Stream::Out)),
            stderr: p.text(Some(Stream::Err)),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let (ok, out) = self.netlab_cmd(&["down"]);
        if !ok {
            say!("[{}] netlab down failed:\n{out}", self.prefix);
        }
        let listed = Command::new("ip").env("PATH", path_env()).args(["netns", "list"]).output();
        let mine = format!("{}-", self.prefix);
        if let Ok(o) = listed {
            let left: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&mine))
                .map(String::from)
                .collect();
            if !left.is_empty() {
                say!("[{}] namespaces left after down: {left:?}", self.prefix);
            }
        }
    }
}
