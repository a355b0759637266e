//! Exposing a local TCP service to peers, and reaching a peer's service.
//!
//! The stream protocol is `/peerup/<name>/1.0.0` with no header: the stream is a transparent,
//! byte-exact pipe to the service's TCP socket, with half-close carried both ways (as in Go
//! peer-up). Every inbound stream is checked against the access list and the service's
//! `allowed_peers`, whatever connection it arrives on, including connections we dialled.

pub mod pipe;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bulk::ServiceIo;
use crate::gate::AccessList;
use crate::metrics::{ActiveProxy, Role};
use crate::node::{Node, NodeError};
use crate::streams::{IncomingStream, PathInfo};
use crate::{label, protocols};

/// How long connecting to the local service may take.
pub const LOCAL_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one service serves at once; more wait.
pub const MAX_STREAMS_PER_SERVICE: usize = 1024;

/// A service to expose.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Its name (a DNS label).
    pub name: String,
    /// Where it listens locally, `host:port`.
    pub local_address: String,
    /// Peers allowed to use it; `None` = every authorized peer.
    pub allowed_peers: Option<HashSet<PeerId>>,
}

/// The stream protocol of a service name, after checking the name.
pub fn protocol_for(name: &str) -> Result<StreamProtocol, label::InvalidLabel> {
    label::validate(name)?;
    // A valid label makes a protocol starting with '/'.
    StreamProtocol::try_from_owned(protocols::service(name))
        .map_err(|_| label::InvalidLabel(name.into()))
}

/// Starts serving `spec` on `node`: accepted streams are forwarded to the local address. Runs
/// until `cancel` fires.
pub fn expose(
    node: &Node,
    spec: ServiceSpec,
    access: AccessList,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), label::InvalidLabel> {
    let protocol = protocol_for(&spec.name)?;
    let spec = Arc::new(spec);
    // Peers that may not use the service are told at negotiation that it is not offered, so they
    // get a clear error before any data flows; each stream is checked again on arrival.
    let filter = {
        let (access, spec) = (access.clone(), spec.clone());
        Arc::new(move |peer: &PeerId| may_use(&access, &spec, peer))
    };
    let mut incoming = node.accept_from(protocol, filter);
    let offered = node.bulk_registry().insert((*spec).clone(), access.clone());
    let registry = node.bulk_registry().clone();
    let limit = Arc::new(Semaphore::new(MAX_STREAMS_PER_SERVICE));
    let tasks = tracker.clone();
    let metrics = node.metrics().clone();
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                next = incoming.recv() => next,
            };
            let Some(stream) = next else { break };
            if !may_use(&access, &spec, &stream.peer) {
                metrics.auth_denials.inc();
                tracing::warn!(target: "audit", peer = %stream.peer, service = %spec.name, "auth_decision: stream refused (peer not allowed)");
                continue; // dropping the stream resets it
            }
            let Ok(permit) = limit.clone().acquire_owned().await else { break };
            let (spec, cancel, metrics) = (spec.clone(), cancel.clone(), metrics.clone());
            tasks.spawn(async move {
                let active = metrics.proxy(&spec.name, Role::Server);
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = serve_stream(stream, &spec, &active) => {}
                }
                drop(permit);
            });
        }
        registry.remove_if(&offered);
    });
    Ok(())
}

/// Whether `peer` may use the service `spec`.
pub(crate) fn may_use(access: &AccessList, spec: &ServiceSpec, peer: &PeerId) -> bool {
    access.is_authorized(peer) && spec.allowed_peers.as_ref().is_none_or(|set| set.contains(peer))
}

/// Connects to the service's local address.
pub(crate) async fn dial_local(spec: &ServiceSpec) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(LOCAL_DIAL_TIMEOUT, TcpStream::connect(&spec.local_address)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Pipes a peer's connection to the local service until both sides are done.
pub(crate) async fn carry_local<S>(
    io: S,
    tcp: TcpStream,
    peer: &PeerId,
    name: &str,
    active: &ActiveProxy,
) where
    S: futures::AsyncRead + futures::AsyncWrite + Send + 'static,
{
    match pipe::pipe(io, tcp).await {
        Ok((to_local, to_peer)) => {
            tracing::info!(%peer, service = %name, to_local, to_peer, "stream finished");
            active.bytes(to_local, to_peer);
        }
        Err(e) => tracing::info!(%peer, service = %name, error = %e, "stream ended with error"),
    }
}

async fn serve_stream(incoming: IncomingStream, spec: &ServiceSpec, active: &ActiveProxy) {
    let peer = incoming.peer;
    let tcp = match dial_local(spec).await {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(%peer, service = %spec.name, addr = %spec.local_address, error = %e, "local service unreachable; stream reset");
            return;
        }
    };
    tracing::info!(%peer, service = %spec.name, path = incoming.path.kind(), via = %incoming.path.remote_addr, "serving stream");
    carry_local(incoming.stream, tcp, &peer, &spec.name, active).await;
}

/// Opens a connection to a peer's service: on the bulk path when the peer offers it along a path
/// already probed (see [`crate::bulk`]), else as a yamux stream (connecting first if needed).
pub async fn connect(
    node: &Node,
    peer: PeerId,
    service: &str,
) -> Result<(ServiceIo, PathInfo), NodeError> {
    let protocol = protocol_for(service).map_err(|e| NodeError::Transport(e.to_string()))?;
    let miss = match node.open_bulk(peer, Some(service)).await {
        Ok(found) => return Ok(found),
        Err(miss) => miss,
    };
    let (stream, path) = node.open_stream(peer, protocol).await?;
    if miss == crate::bulk::Miss::NotConnected {
        // Connected just now: probe the bulk path for the next connection.
        let _ = node.open_bulk(peer, None).await;
    }
    Ok((Box::new(stream), path))
}
