//! The rathole case: rathole 0.5 with its Noise transport on the public path, as
//! `shared/reference/baselines.md` runs it, turned around so that the payload crosses the lab
//! the same way as every other public-path case (pubpeer → the relay host's sink).
//!
//! rathole exposes a service of its *client* at its *server*. The rathole server therefore runs on
//! pubpeer (the visitor side, where `ssh` and `peerup proxy` run) and the rathole client on the
//! relay host next to the sink (the service side, where sshd and the peerup daemon run). The
//! binary is `$BENCH_RATHOLE` (scripts/bench builds it with `cargo install`); without it the case
//! is skipped with `$BENCH_RATHOLE_SKIP` (or a default reason) as the note.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cases::{Case, try_py};
use crate::lab::{Lab, READY};
use crate::measure::Tracked;
use crate::node::RELAY_IP;
use crate::proc::{Proc, Stream};

/// pubpeer's address, where the rathole server listens for its client.
const PUBPEER_IP: &str = "198.18.0.2";
/// The rathole server's control port on pubpeer.
const CONTROL_PORT: u16 = 2334;
/// The visitor port on pubpeer (loopback): the case's client connects here.
const VISITOR_PORT: u16 = 8011;
/// How long the tunnel may take to carry its first round trip.
const UP_WITHIN: Duration = Duration::from_secs(30);
pub(crate) const NOISE_PATTERN: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";

/// The running rathole pair.
pub(crate) struct Rathole {
    pub(crate) server: Proc,
    pub(crate) client: Proc,
    pub(crate) version: String,
}

/// The rathole binary to use, or why the case is skipped.
pub(crate) fn binary() -> Result<PathBuf, String> {
    if let Ok(reason) = std::env::var("BENCH_RATHOLE_SKIP")
        && !reason.trim().is_empty()
    {
        return Err(reason.trim().to_string());
    }
    match std::env::var_os("BENCH_RATHOLE") {
        Some(p) if Path::new(&p).is_file() => Ok(p.into()),
        Some(p) => Err(format!("BENCH_RATHOLE={} does not exist", Path::new(&p).display())),
        None => Err("not built (set BENCH_RATHOLE, as scripts/bench does)".into()),
    }
}

/// Writes the configs, starts the server (pubpeer) and the client (relay host, forwarding to the
/// sink on `sink_port`), and waits until a round trip goes through. `Err` says why not.
pub(crate) fn start(lab: &Lab, bin: &Path, sink_port: u16) -> Result<Rathole, String> {
    let (private, public) = genkey(lab, bin)?;
    let token = crate::py::random_hex(16);
    let server_toml = format!(
        "[server]\nbind_addr = \"{PUBPEER_IP}:{CONTROL_PORT}\"\n\n\
         [server.transport]\ntype = \"noise\"\n\n\
         [server.transport.noise]\nlocal_private_key = \"{private}\"\n\n\
         [server.services.sink]\ntoken = \"{token}\"\nbind_addr = \"127.0.0.1:{VISITOR_PORT}\"\n"
    );
    let client_toml = format!(
        "[client]\nremote_addr = \"{PUBPEER_IP}:{CONTROL_PORT}\"\n\n\
         [client.transport]\ntype = \"noise\"\n\n\
         [client.transport.noise]\nremote_public_key = \"{public}\"\n\n\
         [client.services.sink]\ntoken = \"{token}\"\nlocal_addr = \"127.0.0.1:{sink_port}\"\n"
    );
    let server_cfg = lab.work().join("rathole-server.toml");
    let client_cfg = lab.work().join("rathole-client.toml");
    std::fs::write(&server_cfg, server_toml).map_err(|e| e.to_string())?;
    std::fs::write(&client_cfg, client_toml).map_err(|e| e.to_string())?;
    let env = [("RUST_LOG", "warn")];
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let server_args = ["--server".to_string(), path(&server_cfg)];
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = lab.spawn(Some("pubpeer"), "rathole-server", bin, &server_args, &env);
    let client_args = ["--client".to_string(), path(&client_cfg)];
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let client = lab.spawn(Some("relay"), "rathole-client", bin, &client_args, &env);
    let version =
        lab.run(None, "rathole-version", bin, &["--version"], &[], READY).stdout.trim().to_string();
    let mut rathole = Rathole { server, client, version };
    rathole.wait_up(lab)?;
    Ok(rathole)
}

/// `rathole --genkey`: (private, public), base64.
fn genkey(lab: &Lab, bin: &Path) -> Result<(String, String), String> {
    let out = lab.run(None, "rathole-genkey", bin, &["--genkey"], &[], READY);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let after = |label: &str| {
        let i = lines.iter().position(|l| l.starts_with(label))?;
        lines[i + 1..].iter().find(|l| !l.is_empty()).map(|l| l.to_string())
    };
    match (after("Private Key"), after("Public Key")) {
        (Some(private), Some(public)) if out.success => Ok((private, public)),
        _ => Err(format!("rathole --genkey printed no key pair: {}", out.stdout.trim())),
    }
}

impl Rathole {
    /// 1-byte round trips through the visitor port until one comes back.
    fn wait_up(&mut self, lab: &Lab) -> Result<(), String> {
        let deadline = Instant::now() + UP_WITHIN;
        let port = VISITOR_PORT.to_string();
        let args = ["rr", "--host", "127.0.0.1", "--port", &port, "--n", "1", "--warmup", "0"];
        for n in 1.. {
            let name = format!("rathole-warmup-{n}");
            let last = match try_py(lab, "pubpeer", &name, &args, Duration::from_secs(20)) {
                Ok(_) => {
                    say!("[bench] rathole: tunnel is up (round trip {n})");
                    return Ok(());
                }
                Err(e) => e,
            };
            for (p, what) in [(&mut self.server, "server"), (&mut self.client, "client")] {
                if !p.is_running() {
                    return Err(format!("the rathole {what} exited: {}", p.tail(10)));
                }
            }
            if Instant::now() > deadline {
                let logs = format!(
                    "server: {}\nclient: {}",
                    self.server.text(Some(Stream::Err)),
                    self.client.text(Some(Stream::Err))
                );
                return Err(format!("no round trip within {UP_WITHIN:?}: {last}\n{logs}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        unreachable!()
    }

    /// The benchmark case going through it.
    pub(crate) fn case(&self) -> Case {
        let mut c =
            Case::new("rathole-noise", "rathole (noise)", "pubpeer → relay host", "pubpeer");
        c.port = VISITOR_PORT;
        c.tracked = vec![
            Tracked::one("rathole server (pubpeer)", self.server.pid()),
            Tracked::one("rathole client (relay host)", self.client.pid()),
        ];
        c.info.push(format!("{}, {NOISE_PATTERN}", self.version));
        c.info.push(format!(
            "server on pubpeer (visitor side), client on the relay host ({RELAY_IP}) next to the sink"
        ));
        c
    }
}
