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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::AccessList;
use crate::metrics::{ActiveProxy, Role};
use crate::node::NodeError;
use crate::streams::PathInfo;
use crate::transport::BoxedIo;
use crate::tunnel::{Inbound, Tunnel};
use crate::{label, protocols, serve};

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

/// Starts serving `spec` through `tunnel`: every connection to it, whichever way it comes, is
/// forwarded to the local address. Runs until `cancel` fires.
pub fn expose(
    tunnel: &Tunnel,
    spec: ServiceSpec,
    access: AccessList,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), label::InvalidLabel> {
    let protocol = protocol_for(&spec.name)?;
    let spec = Arc::new(spec);
    // Peers that may not use the service are told at negotiation (or in the bulk path's answer)
    // that it is not offered, so they get a clear error before any data flows; each connection
    // is checked again on arrival.
    let filter = {
        let (access, spec) = (access.clone(), spec.clone());
        Arc::new(move |peer: &PeerId| may_use(&access, &spec, peer))
    };
    let incoming = tunnel.accept(&spec.name, protocol, filter);
    let metrics = tunnel.node().metrics().clone();
    let limits = serve::Limits::waiting(MAX_STREAMS_PER_SERVICE);
    serve::each(incoming, limits, "service connection", tracker, cancel, move |c: Inbound| {
        if !may_use(&access, &spec, &c.peer()) {
            metrics.auth_denials.inc();
            tracing::warn!(target: "audit", peer = %c.peer(), service = %spec.name, "auth_decision: stream refused (peer not allowed)");
            return None; // dropped: a stream is reset, a bulk connection closed
        }
        let (spec, metrics) = (spec.clone(), metrics.clone());
        Some(async move { serve_one(c, &spec, &metrics).await })
    });
    Ok(())
}

/// Whether `peer` may use the service `spec`.
fn may_use(access: &AccessList, spec: &ServiceSpec, peer: &PeerId) -> bool {
    access.is_authorized(peer) && spec.allowed_peers.as_ref().is_none_or(|set| set.contains(peer))
}

/// Connects to the service's local address.
async fn dial_local(spec: &ServiceSpec) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(LOCAL_DIAL_TIMEOUT, TcpStream::connect(&spec.local_address)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Pipes a peer's connection to the local service until both sides are done.
async fn carry_local<S>(io: S, tcp: TcpStream, peer: &PeerId, name: &str, active: &ActiveProxy)
where
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

async fn serve_one(incoming: Inbound, spec: &ServiceSpec, metrics: &crate::metrics::Metrics) {
    let (peer, path) = (incoming.peer(), incoming.path());
    let tcp = match dial_local(spec).await {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(%peer, service = %spec.name, addr = %spec.local_address, error = %e, "local service unreachable; connection refused");
            return incoming.unavailable().await;
        }
    };
    match incoming.via() {
        Some(via) => tracing::info!(%peer, service = %spec.name, path, %via, "serving stream"),
        None => tracing::info!(%peer, service = %spec.name, path, "serving stream"),
    }
    let io = match incoming.accept().await {
        Ok(io) => io,
        Err(e) => {
            return tracing::debug!(%peer, service = %spec.name, error = %e, "connection lost before it was served");
        }
    };
    let active = metrics.proxy(&spec.name, Role::Server);
    carry_local(io, tcp, &peer, &spec.name, &active).await;
}

/// Reaching a peer's service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The service name is not a valid name (a DNS label).
    #[error(transparent)]
    BadName(#[from] label::InvalidLabel),
    /// The node could not open the connection.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Opens a connection to a peer's service through `tunnel` (the fastest way it knows: see
/// [`crate::tunnel`]).
pub async fn connect(
    tunnel: &Tunnel,
    peer: PeerId,
    service: &str,
) -> Result<(BoxedIo, PathInfo), ConnectError> {
    let protocol = protocol_for(service)?;
    Ok(tunnel.connect(peer, service, protocol).await?)
}

/// Stops serving `name` (exposed by [`expose`]): connections to it are refused from now on.
pub fn withdraw(tunnel: &Tunnel, name: &str) -> Result<(), label::InvalidLabel> {
    let protocol = protocol_for(name)?;
    tunnel.stop_accepting(name, &protocol);
    Ok(())
}
