//! `peerup proxy <peer> <service> <local-port>`: listen on 127.0.0.1 and carry every accepted
//! connection to a peer's service on its own stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use peerup_core::node::{Node, NodeEvent};
use peerup_core::service::{self, pipe};
use peerup_core::{PeerId, label};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Ctx;
use crate::config;
use crate::core_config;
use crate::outln;
use crate::peers;
use crate::runtime;

/// Client connections carried at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;
/// Connections the kernel may queue on the proxy's port before they are accepted (it caps this at
/// `net.core.somaxconn`, 4096 by default). With tokio's default of 1024, a client opening 1,000
/// connections at once overflowed the queue: SYN cookies took over, and connections whose cookie
/// then failed were reset before the proxy ever saw them.
const LISTEN_BACKLOG: u32 = 4096;

pub(super) fn run(target: &str, svc: &str, port: u16, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let (peer, _) = peers::resolve_peer(&loaded.config, target)?;
    label::validate(svc).context("service name")?;
    runtime::block_on(async move {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], port)))
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} (is the port in use?)"))?;
        let local = listener.local_addr()?;
        let (cancel, tracker) = runtime::shutdown_on_signals()?;
        let core = core_config::node_config(&loaded, false)?;
        let (node, mut events) = Node::spawn(core, cancel.clone(), &tracker)?;
        outln!("Listening on {local} -> {target}/{svc}")?;

        serve_listener(listener, node, peer, svc.to_string(), cancel.clone(), &tracker);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                e = events.recv() => {
                    if let Ok(NodeEvent::HolePunched { peer: p }) = e && p == peer {
                        outln!("Path to {target}: [DIRECT] (hole punched)")?;
                    }
                }
            }
        }
        runtime::shutdown(&cancel, &tracker).await;
        Ok(())
    })
}

/// Carries every connection accepted on `listener` to `peer`'s `service`, each on its own stream,
/// until `cancel` fires. Used by `peerup proxy`, the daemon's `/v1/connect` and the demo.
pub(crate) fn serve_listener(
    listener: TcpListener,
    node: Node,
    peer: PeerId,
    service: String,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let tasks = tracker.clone();
    tracker.spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut n = 0;
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = limit.clone().acquire_owned().await else { break };
            n += 1;
            tracing::debug!(%from, n, "accepted");
            let (node, service, cancel) = (node.clone(), service.clone(), cancel.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = carry(&node, peer, &service, tcp, n) => {}
                }
                drop(permit);
            });
        }
    });
}

/// A proxy's listener on `addr` with a [`LISTEN_BACKLOG`] queue (`peerup proxy`, and proxies the
/// daemon's API starts).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub(crate) async fn carry(node: &Node, peer: PeerId, svc: &str, tcp: TcpStream, n: u64) {
    let start = Instant::now();
    let active = node.metrics().proxy(svc, peerup_core::metrics::Role::Client);
    let (stream, path) = match service::connect(node, peer, svc).await {
        Ok(s) => s,
        Err(e) => {
            let _ = outln!("Connection {n}: Error: {e}");
            return;
        }
    };
    let _ = outln!(
        "Connection {n}: [{}] via {} ({} ms)",
        path.kind(),
        path.remote_addr,
        start.elapsed().as_millis()
    );
    match pipe::pipe(stream, tcp).await {
        Ok((down, up)) => {
            active.bytes(down, up);
            tracing::info!(n, received = down, sent = up, "connection closed");
        }
        Err(e) => {
            let _ = outln!("Connection {n}: Error: the tunnel broke: {e}");
        }
    }
}
