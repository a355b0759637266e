//! The peerup processes of a lab: the `Relay` server and `Node`s with their daemon, proxy and ping.
//!
//! Every peerup command runs inside its host's namespace with its own temporary `HOME` and config
//! folder, `RUST_LOG=info` (or `$PEERUP_NETLAB_LOG`) and `NO_COLOR=1`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lab::{COMMAND, Finished, Lab, READY};
use super::proc::{Proc, Stream};

/// The relay's public address in every lab.
pub const RELAY_IP: &str = "198.18.0.1";
/// pubpeer's public address (no NAT): a second relay can run there.
pub const PUBPEER_IP: &str = "198.18.0.2";
/// The port `relay setup` writes into `relay-server.yaml` (TCP and QUIC; QUIC also on the next one).
const DEFAULT_RELAY_PORT: u16 = 7777;

/// The binary under test: the one cargo built, or `$PEERUP_NETLAB_BIN` (e.g. a release build).
fn peerup_bin() -> PathBuf {
    std::env::var_os("PEERUP_NETLAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_peerup")))
}

fn env_for(home: &Path) -> [(&'static str, String); 4] {
    [
        ("HOME", home.to_str().expect("utf-8 path").to_string()),
        // `PEERUP_NETLAB_LOG=info,libp2p_dcutr=debug` when investigating.
        ("RUST_LOG", std::env::var("PEERUP_NETLAB_LOG").unwrap_or_else(|_| "info".into())),
        ("NO_COLOR", "1".into()),
        ("RUST_BACKTRACE", "1".into()),
    ]
}

fn spawn_peerup(lab: &Lab, host: &str, home: &Path, name: &str, args: &[&str]) -> Proc {
    let env = env_for(home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    lab.spawn(Some(host), name, &peerup_bin(), args, &env)
}

fn run_peerup(lab: &Lab, host: &str, home: &Path, name: &str, args: &[&str]) -> Finished {
    let env = env_for(home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    lab.run(Some(host), name, &peerup_bin(), args, &env, COMMAND)
}

/// The first `12D3KooW…` token of some output.
pub fn peer_id_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || "\"',;:()[]{}".contains(c))
        .find(|t| t.starts_with("12D3KooW") && t.len() > 40)
        .map(String::from)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A relay server: in host `relay` on port 7777 (`setup`), or elsewhere (`setup_on`).
pub struct Relay {
    /// The lab host it runs in.
    host: String,
    /// Prefix of its processes' names (`relay`, or `relay-<host>-<port>` for another one).
    tag: String,
    home: PathBuf,
    config: PathBuf,
    pub id: String,
    /// `/ip4/198.18.0.1/tcp/7777/p2p/<id>`
    pub addr: String,
    proc: Option<Proc>,
    starts: u32,
}

impl Relay {
    /// `relay setup` and `relay info` in host `relay` on port 7777 (not started yet).
    pub fn setup(lab: &Lab) -> Relay {
        Relay::setup_on(lab, "relay", DEFAULT_RELAY_PORT)
    }

    /// Like `setup`, in a public host (`relay` or `pubpeer`) listening on `port` (TCP and QUIC,
    /// and QUIC on `port + 1`, the second port `doctor` uses), with its own key and folder.
    #[allow(dead_code, reason = "used by tests/faults.rs")]
    pub fn setup_on(lab: &Lab, host: &str, port: u16) -> Relay {
        let ip = match host {
            "relay" => RELAY_IP,
            "pubpeer" => PUBPEER_IP,
            other => panic!("a relay needs a public lab host (relay, pubpeer), not {other}"),
        };
        let default = host == "relay" && port == DEFAULT_RELAY_PORT;
        let tag = if default { "relay".to_string() } else { format!("relay-{host}-{port}") };
        let home = lab.work().join(format!("{tag}-home"));
        std::fs::create_dir_all(&home).expect("relay home");
        let dir = home.join("relay");
        let setup = ["relay", "setup", "--dir", s(&dir), "--non-interactive"];
        run_peerup(lab, host, &home, &format!("{tag}-setup"), &setup).ok();
        let config = dir.join("relay-server.yaml");
        if port != DEFAULT_RELAY_PORT {
            set_relay_port(&config, port);
            let validate = ["relay", "config", "validate", "--config", s(&config)];
            run_peerup(lab, host, &home, &format!("{tag}-validate"), &validate).ok();
        }
        let info = ["relay", "info", "--config", s(&config), "--json"];
        let out = run_peerup(lab, host, &home, &format!("{tag}-info"), &info).ok();
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("relay info --json printed no JSON ({e}):\n{out}"));
        let id = v["peer_id"].as_str().expect("relay info: peer_id").to_string();
        let addr = format!("/ip4/{ip}/tcp/{port}/p2p/{id}");
        Relay { host: host.into(), tag, home, config, id, addr, proc: None, starts: 0 }
    }

    /// Its `relay-server.yaml` (edit it before `start`).
    #[allow(dead_code, reason = "used by benches/lab.rs")]
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The running server's process ID.
    #[allow(dead_code, reason = "used by benches/lab.rs")]
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The running server's process (its output).
    #[allow(dead_code, reason = "used by tests/stress.rs")]
    pub fn proc(&mut self) -> Option<&mut Proc> {
        self.proc.as_mut()
    }

    /// `relay authorize <id>`.
    pub fn authorize(&self, lab: &Lab, peer: &str) {
        let args = ["relay", "authorize", peer, "--config", s(&self.config)];
        let name = format!("{}-authorize", self.tag);
        run_peerup(lab, &self.host, &self.home, &name, &args).ok();
    }

    /// Runs `peerup <args> --config <relay config>` on the relay host to completion.
    #[allow(dead_code, reason = "not used by benches/lab.rs")]
    pub fn peerup(&self, lab: &Lab, what: &str, args: &[&str]) -> Finished {
        let mut all = args.to_vec();
        all.extend(["--config", s(&self.config)]);
        run_peerup(lab, &self.host, &self.home, &format!("{}-{what}", self.tag), &all)
    }

    /// `relay serve`, waiting for `Relay ready: <id>` on stdout.
    pub fn start(&mut self, lab: &Lab) {
        self.starts += 1;
        let name = format!("{}-serve-{}", self.tag, self.starts);
        let args = ["relay", "serve", "--config", s(&self.config)];
        let mut p = spawn_peerup(lab, &self.host, &self.home, &name, &args);
        let line = p.expect_line("`Relay ready: <id>`", Some(Stream::Out), READY, |l| {
            l.starts_with("Relay ready:")
        });
        assert!(
            line.contains(&self.id),
            "relay announced another peer ID: {line:?} vs {}",
            self.id
        );
        self.proc = Some(p);
    }

    /// Kills the relay process with SIGKILL (a crash, not a clean shutdown) and waits for it to go.
    #[allow(dead_code, reason = "used by tests/faults.rs")]
    pub fn kill(&mut self) {
        let mut p = self.proc.take().expect("relay is running");
        p.signal("KILL");
        assert!(p.wait_exit(Duration::from_secs(10)).is_some(), "relay did not die on SIGKILL");
    }
}

/// Moves the listen addresses of a fresh `relay-server.yaml` from ports 7777/7778 to `port`/`port + 1`
/// (a text edit: the file keeps its comments and its mode).
fn set_relay_port(config: &Path, port: u16) {
    let text = std::fs::read_to_string(config).expect("read relay-server.yaml");
    let base = DEFAULT_RELAY_PORT;
    assert!(text.contains(&format!("/tcp/{base}")), "no /tcp/{base} listen address in:\n{text}");
    let moved = text
        .replace(&format!("/tcp/{base}"), &format!("/tcp/{port}"))
        .replace(&format!("/udp/{base}/"), &format!("/udp/{port}/"))
        .replace(&format!("/udp/{}/", base + 1), &format!("/udp/{}/", port + 1));
    std::fs::write(config, moved).expect("write relay-server.yaml");
}

/// A peerup node (config folder, identity) in one lab host.
pub struct Node {
    pub host: String,
    home: PathBuf,
    config: PathBuf,
    pub id: String,
}

impl Node {
    /// `init --non-interactive --relay <relay addr> --dir D`, `whoami`, and authorizes the node on
    /// the relay.
    pub fn init(lab: &Lab, host: &str, relay: &Relay) -> Node {
        let home = lab.work().join(format!("{host}-home"));
        std::fs::create_dir_all(&home).expect("node home");
        let dir = home.join("peerup");
        let init = ["init", "--non-interactive", "--relay", &relay.addr, "--dir", s(&dir)];
        run_peerup(lab, host, &home, &format!("{host}-init"), &init).ok();
        let config = dir.join("config.yaml");
        let out = run_peerup(
            lab,
            host,
            &home,
            &format!("{host}-whoami"),
            &["whoami", "--config", s(&config)],
        )
        .ok();
        let id = peer_id_in(&out).unwrap_or_else(|| panic!("{host}: whoami printed no ID: {out}"));
        relay.authorize(lab, &id);
        Node { host: host.into(), home, config, id }
    }

    /// A node folder in `host` with nothing in it yet (for `join`, which creates the config).
    #[allow(dead_code, reason = "not used by benches/lab.rs")]
    pub fn bare(lab: &Lab, host: &str) -> Node {
        let home = lab.work().join(format!("{host}-home"));
        std::fs::create_dir_all(&home).expect("node home");
        let config = home.join("peerup").join("config.yaml");
        Node { host: host.into(), home, config, id: String::new() }
    }

    /// The node's config file.
    #[allow(dead_code, reason = "not used by benches/lab.rs")]
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Starts `peerup <args> --config <config>` in the background.
    #[allow(dead_code, reason = "not used by benches/lab.rs")]
    pub fn spawn(&self, lab: &Lab, what: &str, args: &[&str]) -> Proc {
        let mut all = args.to_vec();
        all.extend(["--config", s(&self.config)]);
        spawn_peerup(lab, &self.host, &self.home, &format!("{}-{what}", self.host), &all)
    }

    /// Runs `peerup <args> --config <config>` to completion.
    pub fn peerup(&self, lab: &Lab, what: &str, args: &[&str]) -> Finished {
        let mut all = args.to_vec();
        all.extend(["--config", s(&self.config)]);
        run_peerup(lab, &self.host, &self.home, &format!("{}-{what}", self.host), &all)
    }

    /// `auth add <peer>`.
    pub fn auth_add(&self, lab: &Lab, peer: &str) {
        self.peerup(lab, "auth-add", &["auth", "add", peer]).ok();
    }

    /// `service add <name> <addr>`.
    pub fn service_add(&self, lab: &Lab, name: &str, addr: &str) {
        self.peerup(lab, "service-add", &["service", "add", name, addr]).ok();
    }

    /// Adds `allowed_peers: [...]` to service `name` in the YAML (mode stays 0600), then checks the
    /// file with `config validate`.
    pub fn restrict_service(&self, lab: &Lab, name: &str, allowed: &[&str]) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let services = lines.iter().position(|l| l.starts_with("services:")).expect("services:");
        let header = (services + 1..lines.len())
            .find(|&i| lines[i].trim() == format!("{name}:"))
            .unwrap_or_else(|| panic!("service {name} not found in config:\n{text}"));
        let child = &lines[header + 1];
        let indent = &child[..child.len() - child.trim_start().len()];
        let ids: Vec<String> = allowed.iter().map(|id| format!("\"{id}\"")).collect();
        lines.insert(header + 1, format!("{indent}allowed_peers: [{}]", ids.join(", ")));
        std::fs::write(&self.config, lines.join("\n") + "\n").expect("write config");
        std::fs::set_permissions(&self.config, std::fs::Permissions::from_mode(0o600))
            .expect("chmod config");
        self.peerup(lab, "config-validate", &["config", "validate"]).ok();
    }

    /// `daemon`, waiting for `Peer ID: <id>` on stdout.
    pub fn daemon(&self, lab: &Lab) -> Daemon {
        let args = ["daemon", "--config", s(&self.config)];
        let mut proc =
            spawn_peerup(lab, &self.host, &self.home, &format!("{}-daemon", self.host), &args);
        let line = proc.expect_line("`Peer ID: <id>`", Some(Stream::Out), READY, |l| {
            l.starts_with("Peer ID:")
        });
        assert!(line.contains(&self.id), "{}: daemon runs as another peer: {line:?}", self.host);
        Daemon { proc }
    }

    /// `proxy <peer> <service> 0`, waiting for `Listening on 127.0.0.1:<port>` on stdout.
    #[track_caller]
    pub fn proxy(&self, lab: &Lab, peer: &str, service: &str) -> Proxy {
        match self.try_proxy(lab, peer, service) {
            Ok(proxy) => proxy,
            Err(line) => panic!("{}: proxy failed to start: {line}", self.host),
        }
    }

    /// Starts `proxy <peer> <service> 0`: `Ok` once it listens, `Err` with the line if it printed
    /// `Error:` first.
    #[track_caller]
    pub fn try_proxy(&self, lab: &Lab, peer: &str, service: &str) -> Result<Proxy, String> {
        const LISTENING: &str = "Listening on 127.0.0.1:";
        let args = ["proxy", "--config", s(&self.config), peer, service, "0"];
        let name = format!("{}-proxy-{service}", self.host);
        let mut proc = spawn_peerup(lab, &self.host, &self.home, &name, &args);
        let line =
            proc.expect_line("`Listening on 127.0.0.1:<port>` or `Error:`", None, READY, |l| {
                l.starts_with(LISTENING) || (!is_log_line(l) && l.contains("Error:"))
            });
        if !line.starts_with(LISTENING) {
            return Err(line); // the process is dropped: killed, its log kept
        }
        let port = line[LISTENING.len()..]
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{}: no port in {line:?}", self.host));
        Ok(Proxy { proc, port })
    }

    /// `ping -c <count> --json <peer>`: asserts exit 0 and returns the reply objects.
    /// Runs `ping -c <count> --json` and returns the per-reply objects (those with a `seq`),
    /// after checking the closing statistics object counts `count` sent.
    pub fn ping(&self, lab: &Lab, peer: &str, count: u32) -> Vec<serde_json::Value> {
        let n = count.to_string();
        let out = self.peerup(lab, "ping", &["ping", "-c", &n, "--json", peer]).ok();
        let objects: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
            .into_iter::<serde_json::Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| {
                panic!("{}: ping --json printed non-JSON ({e}):\n{out}", self.host)
            });
        let stats = objects.last().unwrap_or_else(|| panic!("{}: ping printed nothing", self.host));
        assert_eq!(stats["sent"], count, "{}: ping statistics: {stats}", self.host);
        objects.into_iter().filter(|o| o.get("seq").is_some()).collect()
    }
}

/// Both nodes authorize each other.
pub fn pair(lab: &Lab, a: &Node, b: &Node) {
    a.auth_add(lab, &b.id);
    b.auth_add(lab, &a.id);
}

/// A running `peerup daemon`.
pub struct Daemon {
    pub proc: Proc,
}

impl Daemon {
    /// Waits for `Reservation accepted by relay <relay id>` at or after line `from`; returns its
    /// index.
    #[track_caller]
    pub fn wait_reservation(&mut self, from: usize, relay_id: &str, timeout: Duration) -> usize {
        let (i, line) = self.proc.expect_line_from(
            "`Reservation accepted by relay <id>`",
            from,
            Some(Stream::Out),
            timeout,
            |l| l.starts_with("Reservation accepted by relay"),
        );
        assert!(line.text.contains(relay_id), "reservation with another relay: {:?}", line.text);
        i
    }
}

/// Whether a line is a tracing log line (`  INFO …`, `WARN …`), not one of the CLI's own lines.
pub fn is_log_line(line: &str) -> bool {
    const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    line.split_whitespace().take(2).any(|t| LEVELS.contains(&t))
}

/// The path a proxy reported for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Direct,
    Relayed,
}

/// What a proxy printed for one accepted connection.
#[derive(Debug, Clone)]
pub enum ConnReport {
    /// `Connection <n>: [DIRECT|RELAYED] via <multiaddr>`
    Path { path: PathKind, line: String, at: Instant },
    /// A line containing `Error:`.
    Error(String),
}

/// What a proxy printed for its connections since some line: `Connection <n>: …` lines by path
/// (`DIRECT`, `RELAYED`, `error`), the error lines, and how many streams it carried at once.
#[derive(Debug, Default)]
#[allow(dead_code, reason = "used by benches/lab.rs and tests/stress.rs")]
pub struct Tally {
    pub paths: BTreeMap<String, u64>,
    pub errors: Vec<String>,
    /// Most connections open at once (from its `Connection n:` and `connection closed` lines).
    pub max_carried: i64,
    /// `connection closed` log lines.
    pub closes: u64,
}

/// A running `peerup proxy`.
pub struct Proxy {
    pub proc: Proc,
    pub port: u16,
}

impl Proxy {
    /// The first `Connection <n>: [DIRECT|RELAYED] …` or `Error:` line (either stream, tracing log
    /// lines excluded) at or after line `from`.
    #[track_caller]
    pub fn report_from(&mut self, from: usize, timeout: Duration) -> (usize, ConnReport) {
        let is_path = |l: &str| {
            l.starts_with("Connection ") && (l.contains("[DIRECT]") || l.contains("[RELAYED]"))
        };
        let (i, line) = self.proc.expect_line_from(
            "`Connection <n>: [DIRECT|RELAYED] via …` or `Error:`",
            from,
            None,
            timeout,
            |l| !is_log_line(l) && (l.contains("Error:") || is_path(l)),
        );
        if line.text.contains("Error:") {
            return (i, ConnReport::Error(line.text));
        }
        let path =
            if line.text.contains("[DIRECT]") { PathKind::Direct } else { PathKind::Relayed };
        (i, ConnReport::Path { path, line: line.text, at: line.at })
    }

    /// Counts the lines printed so far at or after line `from` (see [`Tally`]).
    #[allow(dead_code, reason = "used by benches/lab.rs and tests/stress.rs")]
    pub fn tally_from(&self, from: usize) -> Tally {
        let mut t = Tally::default();
        let mut open = 0i64;
        let mut i = from;
        while let Some((k, line)) = self.proc.wait_line_from(i, None, Duration::ZERO, |_| true) {
            i = k + 1;
            let text = line.text;
            if is_log_line(&text) {
                if text.contains("connection closed") {
                    open -= 1;
                    t.closes += 1;
                }
                continue;
            }
            if !text.starts_with("Connection ") {
                continue;
            }
            let kind = if text.contains("Error:") {
                t.errors.push(text.clone());
                "error"
            } else if text.contains("[DIRECT]") {
                open += 1;
                "DIRECT"
            } else if text.contains("[RELAYED]") {
                open += 1;
                "RELAYED"
            } else {
                continue;
            };
            *t.paths.entry(kind.to_string()).or_insert(0) += 1;
            t.max_carried = t.max_carried.max(open);
        }
        t
    }

    /// Like `report_from`, asserting a path (not an error).
    #[track_caller]
    pub fn path_from(&mut self, from: usize, timeout: Duration) -> (PathKind, String, Instant) {
        match self.report_from(from, timeout).1 {
            ConnReport::Path { path, line, at } => (path, line, at),
            ConnReport::Error(e) => panic!("proxy reported an error for the connection: {e}"),
        }
    }
}
