//! A proxy: a TCP listener on this machine whose every accepted connection is carried to a peer's
//! service, each on a stream of its own. `peerup proxy` and `peerup demo` (`cmd/`) run one, and so
//! does the daemon for each `POST /v1/connect` (`daemon/api/runtime.rs`).
//!
//! It prints nothing: what happens to each connection goes to the caller's [`Report`] as a
//! [`ProxyEvent`] (the CLI prints it on stdout, the daemon logs it), besides this module's own
//! `tracing` lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerup_core::PeerId;
use peerup_core::serve::{self, Limits};
use peerup_core::service::{self, pipe};
use peerup_core::streams::PathInfo;
use peerup_core::tunnel::Tunnel;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Client connections carried at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections the kernel may queue on the proxy's port before they are accepted (it caps this at
/// `net.core.somaxconn`, 4096 by default). With tokio's default of 1024, a client opening 1,000
/// connections at once overflowed the queue: SYN cookies took over, and connections whose cookie
/// then failed were reset before the proxy ever saw them.
const LISTEN_BACKLOG: u32 = 4096;

/// What happened to one accepted connection. `n` numbers a proxy's connections from 1, in the
/// order they were accepted.
#[derive(Debug)]
pub enum ProxyEvent {
    /// The peer's service answered: the connection is carried over `path`, which took `took` to
    /// open.
    Opened { n: u64, path: PathInfo, took: Duration },
    /// The peer's service could not be reached; the client's connection was closed.
    Failed { n: u64, error: String },
    /// The tunnel broke while it carried the connection.
    Broke { n: u64, error: String },
}

/// Where a proxy's events go. It is called from the connections' tasks, so it must not block.
pub type Report = Arc<dyn Fn(ProxyEvent) + Send + Sync>;

/// A proxy's listener on `addr`, with a [`LISTEN_BACKLOG`] queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Carries every connection accepted on `listener` to `peer`'s `service`, each on its own stream
/// and at most [`MAX_CONNECTIONS`] at once (more wait), until `cancel` fires. Each connection's
/// fate goes to `report`.
pub fn serve(
    listener: TcpListener,
    tunnel: Tunnel,
    peer: PeerId,
    service: String,
    report: Report,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let mut n = 0;
    let limits = Limits::waiting(MAX_CONNECTIONS);
    serve::each(listener, limits, "proxy connection", tracker, cancel, move |(tcp, from)| {
        n += 1;
        tracing::debug!(%from, n, "accepted");
        let (tunnel, service, report) = (tunnel.clone(), service.clone(), report.clone());
        Some(async move { carry(&tunnel, peer, &service, tcp, n, &*report).await })
    });
}

/// Opens a stream to `peer`'s `svc` and copies between it and `tcp` until both sides are done.
async fn carry(
    tunnel: &Tunnel,
    peer: PeerId,
    svc: &str,
    tcp: TcpStream,
    n: u64,
    report: &(dyn Fn(ProxyEvent) + Send + Sync),
) {
    let start = Instant::now();
    let active = tunnel.node().metrics().proxy(svc, peerup_core::metrics::Role::Client);
    let (stream, path) = match service::connect(tunnel, peer, svc).await {
        Ok(s) => s,
        Err(e) => {
            report(ProxyEvent::Failed { n, error: e.to_string() });
            return;
        }
    };
    report(ProxyEvent::Opened { n, path, took: start.elapsed() });
    match pipe::pipe(stream, tcp).await {
        Ok((down, up)) => {
            active.bytes(down, up);
            tracing::info!(n, received = down, sent = up, "connection closed");
        }
        Err(e) => report(ProxyEvent::Broke { n, error: e.to_string() }),
    }
}
