//! The Python helpers (`py/*.py`) run inside lab namespaces: an echo server, an echo client that
//! checks a random payload by SHA-256, and a packet capture that looks for plaintext markers.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::lab::{self, Lab, READY};
use super::proc::{Proc, Stream};

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP echo server in a lab host.
pub struct EchoServer {
    pub proc: Proc,
    pub port: u16,
}

impl EchoServer {
    /// Starts it on `bind` (e.g. `127.0.0.1`, or `0.0.0.0` for a public host) with a free port.
    pub fn start(lab: &Lab, host: &str, bind: &str) -> EchoServer {
        let script = lab.script("echo_server.py");
        let args = [script.to_str().expect("utf-8 path"), "--host", bind];
        let mut proc = lab.spawn(Some(host), &format!("{host}-echo"), &lab::python(), &args, &[]);
        let line =
            proc.expect_line("READY <port>", Some(Stream::Out), READY, |l| l.starts_with("READY "));
        let port = line["READY ".len()..].trim().parse().expect("echo server port");
        EchoServer { proc, port }
    }

    /// `127.0.0.1:<port>`, the address to expose as a service.
    pub fn local_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections reached it so far.
    pub fn connections(&self) -> usize {
        self.proc.text(Some(Stream::Out)).lines().filter(|l| l.contains(" OPEN ")).count()
    }
}

/// The client's report of one transfer.
#[derive(Debug, Clone, Deserialize)]
pub struct Transfer {
    pub sent_sha256: Option<String>,
    pub recv_sha256: Option<String>,
    /// Bytes sent.
    pub bytes: u64,
    pub recv_bytes: u64,
    pub secs: Option<f64>,
    pub connect_ms: Option<f64>,
    /// From starting to connect to the first echoed byte.
    pub ttfb_ms: Option<f64>,
    pub error: Option<String>,
}

impl Transfer {
    /// Whether `size` bytes went out and the same bytes came back.
    pub fn is_exact(&self, size: u64) -> bool {
        self.error.is_none()
            && self.bytes == size
            && self.recv_bytes == size
            && self.sent_sha256.is_some()
            && self.sent_sha256 == self.recv_sha256
    }

    /// Asserts that `size` bytes went out and the same bytes came back.
    #[track_caller]
    pub fn assert_exact(&self, size: u64, what: &str) {
        assert!(self.error.is_none(), "{what}: transfer failed: {self:?}");
        assert_eq!(self.bytes, size, "{what}: bytes sent: {self:?}");
        assert_eq!(self.recv_bytes, size, "{what}: bytes echoed back: {self:?}");
        assert!(self.sent_sha256.is_some(), "{what}: no hash: {self:?}");
        assert_eq!(self.sent_sha256, self.recv_sha256, "{what}: SHA-256 differs: {self:?}");
    }

    /// Echo throughput: bytes sent per second of the whole exchange, in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        let secs = self.secs.unwrap_or(f64::NAN);
        self.bytes as f64 / (1024.0 * 1024.0) / secs
    }

    /// A one-line summary for the test output.
    pub fn summary(&self) -> String {
        format!(
            "{} MiB echoed in {:.2} s ({:.1} MiB/s), connect {:.1} ms, first byte {:.1} ms",
            self.bytes >> 20,
            self.secs.unwrap_or(f64::NAN),
            self.mib_per_s(),
            self.connect_ms.unwrap_or(f64::NAN),
            self.ttfb_ms.unwrap_or(f64::NAN),
        )
    }
}

/// One run of the echo client.
pub struct Client<'a> {
    pub host: &'a str,
    /// Address to connect to, inside `host`'s namespace.
    pub ip: &'a str,
    pub port: u16,
    pub bytes: u64,
    /// Hex written at every multiple of 4 KiB of the payload.
    pub marker: Option<&'a str>,
    /// Socket inactivity timeout.
    pub idle: Duration,
}

impl Client<'_> {
    /// A client of `127.0.0.1:port` in `host` (a proxy's local port).
    pub fn local(host: &str, port: u16, bytes: u64) -> Client<'_> {
        Client { host, ip: "127.0.0.1", port, bytes, marker: None, idle: Duration::from_secs(60) }
    }

    /// Runs it to completion (at most `timeout`) and returns its report.
    #[track_caller]
    pub fn run(&self, lab: &Lab, name: &str, timeout: Duration) -> Transfer {
        let script = lab.script("client.py");
        let (port, bytes, idle) =
            (self.port.to_string(), self.bytes.to_string(), self.idle.as_secs_f64().to_string());
        let mut args = vec![
            script.to_str().expect("utf-8 path"),
            "--host",
            self.ip,
            "--port",
            &port,
            "--bytes",
            &bytes,
            "--timeout",
            &idle,
        ];
        if let Some(m) = self.marker {
            args.extend(["--marker", m, "--every", "4096"]);
        }
        let mut p = lab.spawn(Some(self.host), name, &lab::python(), &args, &[]);
        p.finish(timeout);
        let out = p.text(Some(Stream::Out));
        let json = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
            panic!("{name}: the client printed no report; output:\n{}", p.tail(40))
        });
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: bad report {json:?}: {e}"))
    }
}

/// What the capture saw.
#[derive(Debug, Clone, Deserialize)]
pub struct CaptureStats {
    pub frames: u64,
    pub bytes: u64,
    /// Frames the kernel dropped because the capture was too slow (-1: unknown).
    pub drops: i64,
    /// Frames containing each marker, by name.
    pub hits: BTreeMap<String, u64>,
}

impl CaptureStats {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} frames, {:.1} MiB, {} dropped by the kernel, marker hits {:?}",
            self.frames,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.drops,
            self.hits
        )
    }
}

/// A raw-socket capture of every interface of one lab host.
pub struct Capture {
    proc: Proc,
    stop_file: PathBuf,
}

impl Capture {
    /// Starts capturing in `host`, counting frames that contain each `(name, hex)` marker.
    pub fn start(lab: &Lab, host: &str, markers: &[(&str, &str)]) -> Capture {
        let script = lab.script("capture.py");
        let stop_file = lab.work().join(format!("capture-{host}.stop"));
        let specs: Vec<String> = markers.iter().map(|(n, h)| format!("{n}={h}")).collect();
        let mut args =
            vec![script.to_str().expect("utf-8 path"), "--stop-file", stop_file.to_str().unwrap()];
        for s in &specs {
            args.extend(["--marker", s.as_str()]);
        }
        let mut proc =
            lab.spawn(Some(host), &format!("{host}-capture"), &lab::python(), &args, &[]);
        proc.expect_line("CAPTURE READY", Some(Stream::Out), READY, |l| l == "CAPTURE READY");
        Capture { proc, stop_file }
    }

    /// Stops the capture and returns what it saw.
    #[track_caller]
    pub fn stop(mut self) -> CaptureStats {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        self.proc.finish(Duration::from_secs(30));
        let out = self.proc.text(Some(Stream::Out));
        let json = out.lines().rev().find(|l| l.starts_with('{')).expect("capture report");
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad capture report {json:?}: {e}"))
    }
}
