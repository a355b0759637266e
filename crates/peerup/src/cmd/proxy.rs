//! `peerup proxy <peer> <service> <local-port>`: listen on 127.0.0.1 and carry every accepted
//! connection to a peer's service on its own stream (the serving is [`crate::proxy`]'s; this
//! command prints each connection's path or error).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use peerup_core::label;
use peerup_core::node::NodeEvent;
use peerup_core::tunnel::Tunnel;

use super::Ctx;
use crate::config;
use crate::core_config;
use crate::outln;
use crate::peers;
use crate::proxy::{self, ProxyEvent, Report};
use crate::runtime;

pub(super) fn run(target: &str, svc: &str, port: u16, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let (peer, _) = peers::resolve_peer(&loaded.config, target)?;
    label::validate(svc).context("service name")?;
    runtime::block_on(async move {
        let listener = proxy::listen(SocketAddr::from(([127, 0, 0, 1], port)))
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} (is the port in use?)"))?;
        let local = listener.local_addr()?;
        let (cancel, tracker) = runtime::shutdown_on_signals()?;
        let core = core_config::node_config(&loaded, false)?;
        let (tunnel, mut events) = Tunnel::spawn(core, cancel.clone(), &tracker)?;
        outln!("Listening on {local} -> {target}/{svc}")?;

        let svc = svc.to_string();
        proxy::serve(listener, tunnel, peer, svc, printed(), cancel.clone(), &tracker);
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

/// Prints what happens to each of a proxy's connections on stdout:
/// `Connection <n>: [DIRECT|RELAYED] via <address> (<ms> ms)`, or `Connection <n>: Error: …`
/// (scripts, the netlab tests and the benchmarks read these lines).
pub(super) fn printed() -> Report {
    Arc::new(|event| {
        let _ = match event {
            ProxyEvent::Opened { n, path, took } => outln!(
                "Connection {n}: [{}] via {} ({} ms)",
                path.kind(),
                path.remote_addr,
                took.as_millis()
            ),
            ProxyEvent::Failed { n, error } => outln!("Connection {n}: Error: {error}"),
            ProxyEvent::Broke { n, error } => {
                outln!("Connection {n}: Error: the tunnel broke: {error}")
            }
        };
    })
}
