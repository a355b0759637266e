//! What every swarm transport (TCP, relayed circuits) runs on a new connection: multistream-select,
//! then TLS or Noise ([`Security`]), then peerup's yamux.
//!
//! libp2p's upgrade builder gives an upgrade no way to learn the address of the connection it
//! secures, so the upgrades are applied here ([`secured`]), the way
//! `upgrade(Version::V1Lazy).authenticate(..).multiplex(..)` does it.
//!
//! A listener also offers, beside the security protocols, the protocols registered in its
//! [`Handoffs`]: a connection that names one of them in multistream-select is not the swarm's. It
//! goes, still raw, with the address it came from, to the bounded queue of whoever registered the
//! name (the tunnel layer: its bulk connections and relay legs run their own handshakes). The
//! swarm's upgrade then ends with [`UpgradeError::HandedOff`]: libp2p's transports have no other
//! way to say "this connection is not yours", and the node ignores that outcome.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use futures::future::{BoxFuture, Either};
use futures::{AsyncRead, AsyncWrite, FutureExt, TryFutureExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use libp2p::{PeerId, Transport, noise};
use multistream_select::{NegotiationError, Version, dialer_select_proto, listener_select_proto};
use tokio::sync::mpsc;

use super::tcp::socket_addr;
use super::tls::{self, TlsError};
use super::{BoxedIo, mux};

/// Which transport a connection came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// A direct TCP connection.
    Tcp,
    /// A relayed circuit.
    Circuit,
}

/// A connection handed off: raw, right after multistream-select named the protocol.
pub(crate) struct HandedOff {
    /// The connection.
    pub(crate) socket: BoxedIo,
    /// Its source IP, on a direct TCP connection.
    pub(crate) ip: Option<IpAddr>,
    /// How it came.
    pub(crate) via: Via,
}

#[derive(Clone)]
struct Entry {
    protocol: &'static str,
    /// Offered on relayed circuits too, or on direct TCP connections only.
    on_circuits: bool,
    queue: mpsc::Sender<HandedOff>,
}

/// The protocols a listener hands off instead of securing for the swarm, each with the queue its
/// connections go to. Filled before the transports are built, then shared read-only.
#[derive(Clone, Default)]
pub(crate) struct Handoffs(Arc<Vec<Entry>>);

impl Handoffs {
    /// Hands connections that name `protocol` to the returned queue (of `capacity`; connections
    /// that find it full are closed). `on_circuits`: over relayed circuits too, not only TCP.
    pub(crate) fn register(
        &mut self,
        protocol: &'static str,
        on_circuits: bool,
        capacity: usize,
    ) -> mpsc::Receiver<HandedOff> {
        let (queue, rx) = mpsc::channel(capacity);
        Arc::make_mut(&mut self.0).push(Entry { protocol, on_circuits, queue });
        rx
    }

    fn offered(&self, via: Via) -> impl Iterator<Item = &Entry> {
        self.0.iter().filter(move |e| via == Via::Tcp || e.on_circuits)
    }
}

/// TLS or Noise, whichever the other side picks; TLS first.
#[derive(Clone)]
pub(crate) struct Security {
    tls: tls::Config,
    noise: noise::Config,
}

/// The security handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecurityError {
    /// TLS failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Noise failed.
    #[error("Noise: {0}")]
    Noise(#[from] noise::Error),
}

impl UpgradeInfo for Security {
    type Info = &'static str;
    type InfoIter = std::iter::Chain<
        <tls::Config as UpgradeInfo>::InfoIter,
        <noise::Config as UpgradeInfo>::InfoIter,
    >;

    fn protocol_info(&self) -> Self::InfoIter {
        self.tls.protocol_info().chain(self.noise.protocol_info())
    }
}

type Secured<C> = (PeerId, Either<futures_rustls::TlsStream<C>, noise::Output<C>>);

impl Security {
    /// `tls`, with Noise for peers that don't speak TLS.
    pub(crate) fn new(key: &Keypair, tls: tls::Config) -> Result<Self, noise::Error> {
        Ok(Self { tls, noise: noise::Config::new(key)? })
    }

    fn is_noise(&self, info: &str) -> bool {
        self.noise.protocol_info().any(|p| p == info)
    }
}

impl<C> InboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Secured<C>;
    type Error = SecurityError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, info: Self::Info) -> Self::Future {
        if self.is_noise(info) {
            self.noise
                .upgrade_inbound(socket, info)
                .map_ok(|(p, s)| (p, Either::Right(s)))
                .err_into()
                .boxed()
        } else {
            self.tls
                .upgrade_inbound(socket, info)
                .map_ok(|(p, s)| (p, Either::Left(s)))
                .err_into()
                .boxed()
        }
    }
}

impl<C> OutboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Secured<C>;
    type Error = SecurityError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, info: Self::Info) -> Self::Future {
        if self.is_noise(info) {
            self.noise
                .upgrade_outbound(socket, info)
                .map_ok(|(p, s)| (p, Either::Right(s)))
                .err_into()
                .boxed()
        } else {
            self.tls
                .upgrade_outbound(socket, info)
                .map_ok(|(p, s)| (p, Either::Left(s)))
                .err_into()
                .boxed()
        }
    }
}

/// Upgrading a connection failed, or it was handed off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// multistream-select found no protocol in common, or failed.
    #[error("protocol negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// The security handshake failed.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The muxer could not start.
    #[error("muxer: {0}")]
    Muxer(#[source] io::Error),
    /// Not a failure: the connection named this protocol and went to its [`Handoffs`] queue.
    #[error("handed off to {0}")]
    HandedOff(&'static str),
}

/// `base` with the upgrades of every swarm transport: multistream-select, [`Security`] (`tls`
/// or Noise), peerup's yamux. Inbound connections that name a protocol in `handoffs` (offered
/// over `via`) go there instead.
pub(crate) fn secured<T>(
    base: T,
    key: &Keypair,
    tls: tls::Config,
    handoffs: Handoffs,
    via: Via,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let security = Security::new(key, tls)?;
    Ok(base
        .and_then(move |conn, endpoint| upgrade(conn, endpoint, security, handoffs.clone(), via))
        .boxed())
}

fn upgrade<C>(
    conn: C,
    endpoint: ConnectedPoint,
    security: Security,
    handoffs: Handoffs,
    via: Via,
) -> BoxFuture<'static, Result<(PeerId, StreamMuxerBox), UpgradeError>>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ip = socket_addr(endpoint.get_remote_address()).map(|a| a.ip());
    // As in libp2p: a dialled connection may take the listener's role (a hole punch's
    // simultaneous open), and then negotiates as one.
    let outbound = match endpoint {
        ConnectedPoint::Dialer { role_override, .. } => role_override.is_dialer(),
        ConnectedPoint::Listener { .. } => false,
    };
    let mux = mux::Config::new();
    async move {
        let (peer, secured) = if outbound {
            // (Collected: the compiler cannot tell that the dialer's future over the iterator
            // itself is `Send`.)
            let protocols: Vec<_> = security.protocol_info().collect();
            let (info, io) = dialer_select_proto(conn, protocols, Version::V1Lazy).await?;
            security.upgrade_outbound(io, info).await?
        } else {
            let handed = handoffs.offered(via).map(|e| e.protocol);
            let offered: Vec<_> = security.protocol_info().chain(handed).collect();
            let (info, io) = listener_select_proto(conn, offered).await?;
            if let Some(entry) = handoffs.offered(via).find(|e| e.protocol == info) {
                let handed = HandedOff { socket: Box::new(io), ip, via };
                if entry.queue.try_send(handed).is_err() {
                    tracing::debug!(protocol = info, ?ip, "handoff queue full; connection closed");
                }
                return Err(UpgradeError::HandedOff(entry.protocol));
            }
            security.upgrade_inbound(io, info).await?
        };
        let muxer = if outbound {
            let protocols = mux.protocol_info();
            let (info, io) = dialer_select_proto(secured, protocols, Version::V1Lazy).await?;
            mux.upgrade_outbound(io, info).await
        } else {
            let (info, io) = listener_select_proto(secured, mux.protocol_info()).await?;
            mux.upgrade_inbound(io, info).await
        };
        Ok((peer, StreamMuxerBox::new(muxer.map_err(UpgradeError::Muxer)?)))
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::Multiaddr;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    const MINE: &str = "/mine/1.0.0";

    fn listener_at(addr: &str) -> ConnectedPoint {
        let addr: Multiaddr = addr.parse().unwrap();
        ConnectedPoint::Listener { local_addr: addr.clone(), send_back_addr: addr }
    }

    /// A dialer naming `protocol` against a listener over `via` whose hand-offs hold [`MINE`]
    /// (TCP only). Returns the listener's outcome, the dialer's negotiation, and the queue.
    async fn knock(
        protocol: &'static str,
        via: Via,
    ) -> (Result<(PeerId, StreamMuxerBox), UpgradeError>, bool, mpsc::Receiver<HandedOff>) {
        let key = Keypair::generate_ed25519();
        let security = Security::new(&key, tls::Config::new(&key).unwrap()).unwrap();
        let mut handoffs = Handoffs::default();
        let queue = handoffs.register(MINE, false, 1);
        let (a, b) = tokio::io::duplex(4096);
        let endpoint = listener_at("/ip4/198.18.0.7/tcp/4001");
        let listener = upgrade(b.compat(), endpoint, security, handoffs, via);
        let dialer = async {
            match dialer_select_proto(a.compat(), [protocol], Version::V1).await {
                Ok((_, mut io)) => {
                    io.write_all(b"hello").await.unwrap();
                    io.flush().await.unwrap();
                    true
                }
                Err(_) => false,
            }
        };
        let (outcome, negotiated) = tokio::join!(listener, dialer);
        (outcome, negotiated, queue)
    }

    #[tokio::test]
    async fn a_registered_protocol_is_handed_off_raw_with_its_address() {
        let (outcome, negotiated, mut queue) = knock(MINE, Via::Tcp).await;
        assert!(negotiated);
        assert!(matches!(outcome, Err(UpgradeError::HandedOff(MINE))), "{:?}", outcome.err());
        let mut handed = queue.try_recv().expect("the connection is in the queue");
        assert_eq!(handed.ip, Some("198.18.0.7".parse().unwrap()));
        assert_eq!(handed.via, Via::Tcp);
        let mut buf = [0u8; 5];
        handed.socket.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello", "untouched after negotiation");
    }

    #[tokio::test]
    async fn a_protocol_for_tcp_only_is_not_offered_on_circuits() {
        let (outcome, negotiated, mut queue) = knock(MINE, Via::Circuit).await;
        assert!(!negotiated, "not offered");
        assert!(matches!(outcome, Err(UpgradeError::Negotiation(_))));
        assert!(queue.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_connection() {
        let key = Keypair::generate_ed25519();
        let security = Security::new(&key, tls::Config::new(&key).unwrap()).unwrap();
        let mut handoffs = Handoffs::default();
        let _queue = handoffs.register(MINE, true, 1);
        // Someone else's connection fills the queue.
        let (x, _y) = tokio::io::duplex(16);
        let waiting = HandedOff { socket: Box::new(x.compat()), ip: None, via: Via::Tcp };
        handoffs.0[0].queue.try_send(waiting).unwrap();
        let (a, b) = tokio::io::duplex(4096);
        let endpoint = listener_at("/ip4/198.18.0.7/tcp/4001");
        let listener = upgrade(b.compat(), endpoint, security, handoffs, Via::Circuit);
        let dialer = dialer_select_proto(a.compat(), [MINE], Version::V1);
        let (outcome, dialed) = tokio::join!(listener, dialer);
        assert!(matches!(outcome, Err(UpgradeError::HandedOff(MINE))));
        let (_, mut io) = dialed.unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), io.read_to_end(&mut rest));
        assert!(read.await.expect("closed, not left hanging").is_ok() && rest.is_empty());
    }
}
