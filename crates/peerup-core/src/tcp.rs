//! The TCP transport of the swarm, with a hold on each connection's socket.
//!
//! A connection the node drops because it went silent (`node/event_loop/network.rs`) is usually
//! dead on the wire: its peer moved, or a NAT forgot it. Closing it the normal way leaves the
//! kernel's socket behind, retransmitting whatever was still queued, for minutes, until a reset
//! from the other side reaches it. While it lives it holds its address pair, and that is exactly
//! the pair a TCP hole punch to the same peer needs (both ends reuse their listening ports):
//! such a dial fails, libp2p falls back to a fresh port that the peer's NAT drops, and waits out
//! its connection timeout. So every socket is registered here by its peer's address, and the
//! node marks a silent connection's socket for reset before it closes it: closed with a zero
//! linger time, the kernel sends RST and frees the pair at once.
//!
//! libp2p's TCP transport gives no access to its sockets once upgraded, and the swarm builder's
//! `with_tcp` takes no wrapper, so the transport is put together here the way `with_tcp` does
//! it: TCP, multistream-select, TLS or Noise ([`Security`]), then the muxer. The upgrades are
//! applied here too ([`secured`]) rather than by libp2p's upgrade builder, which gives an upgrade
//! no way to learn the address of the connection it secures: the bulk path counts its
//! connections by source IP (`bulk/admission.rs`), and a relay its legs (`legs/relay.rs`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::{BoxFuture, Either};
use futures::{AsyncRead, AsyncWrite, FutureExt, TryFutureExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Transport, noise};
use multistream_select::{NegotiationError, Version, dialer_select_proto, listener_select_proto};

use crate::tls::{self, TlsError};

/// Registered sockets by peer address: a second descriptor of each (`dup`), so that the
/// registry can reach a socket without sharing the tokio stream its connection reads through.
type Peers = HashMap<SocketAddr, Vec<Weak<socket2::Socket>>>;

/// The live TCP sockets of a swarm, by peer address.
#[derive(Clone, Default)]
pub(crate) struct Sockets(Arc<Mutex<Peers>>);

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Peers> {
        // The map stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every open socket to `peer` send a reset instead of a FIN when it is closed.
    /// Returns how many were marked. (Two sockets to one peer address are possible but rare;
    /// marking an innocent one costs it only a graceful close.)
    pub(crate) fn reset_on_close(&self, peer: SocketAddr) -> usize {
        let sockets: Vec<_> = match self.lock().get(&peer) {
            Some(list) => list.iter().filter_map(Weak::upgrade).collect(),
            None => return 0,
        };
        let mut marked = 0;
        for s in sockets {
            // SO_LINGER belongs to the socket, not the descriptor: it applies when the last
            // descriptor (the connection's own, or this one) is closed.
            match s.set_linger(Some(Duration::ZERO)) {
                Ok(()) => marked += 1,
                Err(e) => tracing::debug!(%peer, error = %e, "cannot mark a socket for reset"),
            }
        }
        marked
    }

    fn register(&self, stream: tokio::net::TcpStream) -> Socket {
        let peer = stream.peer_addr().ok();
        // The registry holds a duplicate descriptor: the connection keeps the tokio stream to
        // itself and reads through its `AsyncRead`, which skips the extra read that
        // `try_read` costs after every short read.
        let handle = peer.and_then(|peer| match socket2::SockRef::from(&stream).try_clone() {
            Ok(dup) => {
                let dup = Arc::new(dup);
                self.lock().entry(peer).or_default().push(Arc::downgrade(&dup));
                Some((peer, dup))
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot register a socket for reset");
                None
            }
        });
        Socket { stream, handle, sockets: self.clone() }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// A connection's TCP socket, registered with [`Sockets`] while it is open.
pub(crate) struct Socket {
    stream: tokio::net::TcpStream,
    /// The peer's address and the registry's descriptor of this socket.
    handle: Option<(SocketAddr, Arc<socket2::Socket>)>,
    sockets: Sockets,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let Some((peer, handle)) = &self.handle else { return };
        let mut map = self.sockets.lock();
        if let Some(list) = map.get_mut(peer) {
            let own = Arc::as_ptr(handle);
            list.retain(|w| w.as_ptr() != own);
            if list.is_empty() {
                map.remove(peer);
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        ready!(tokio::io::AsyncRead::poll_read(
            Pin::new(&mut self.get_mut().stream),
            cx,
            &mut buf
        ))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().stream), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut self.get_mut().stream), cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().stream), cx)
    }
}

/// The IP address and TCP port of a direct TCP connection's multiaddr; `None` for anything else
/// (QUIC, relayed circuits, DNS names).
pub(crate) fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else { return None };
    parts.all(|p| matches!(p, Protocol::P2p(_))).then_some(SocketAddr::new(ip, port))
}

/// TLS (with the bulk path, when given) or Noise, whichever the other side picks; TLS first.
#[derive(Clone)]
pub(crate) struct Security {
    tls: tls::Config,
    noise: noise::Config,
}

/// The security handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecurityError {
    /// TLS failed, or handed the connection to the bulk path.
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

    /// The same, for one connection from `ip` (`None`: not a direct TCP connection).
    fn for_ip(self, ip: Option<IpAddr>) -> Self {
        Self { tls: self.tls.for_ip(ip), ..self }
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

/// The swarm's TCP transport: `tls` or Noise, then peerup's yamux, each socket in `sockets`.
pub(crate) fn transport(
    key: &Keypair,
    tls: tls::Config,
    sockets: Sockets,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true));
    secured(tcp.map(move |stream, _| sockets.register(stream.0)), key, tls)
}

/// Upgrading a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// multistream-select found no protocol in common, or failed.
    #[error("protocol negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// The security handshake failed, or handed the connection to the bulk path.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The muxer could not start.
    #[error("muxer: {0}")]
    Muxer(#[source] io::Error),
}

/// `base` with the upgrades of every swarm transport: multistream-select, [`Security`] (`tls`
/// or Noise), peerup's yamux.
pub(crate) fn secured<T>(
    base: T,
    key: &Keypair,
    tls: tls::Config,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let security = Security::new(key, tls)?;
    Ok(base.and_then(move |conn, endpoint| upgrade(conn, endpoint, security)).boxed())
}

/// What libp2p's `upgrade(Version::V1Lazy).authenticate(..).multiplex(..)` does with a
/// connection, except that the security upgrade learns the connection's IP address when it is a
/// direct TCP connection.
fn upgrade<C>(
    conn: C,
    endpoint: ConnectedPoint,
    security: Security,
) -> BoxFuture<'static, Result<(PeerId, StreamMuxerBox), UpgradeError>>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let security = security.for_ip(socket_addr(endpoint.get_remote_address()).map(|a| a.ip()));
    // As in libp2p: a dialled connection may take the listener's role (a hole punch's
    // simultaneous open), and then negotiates as one.
    let outbound = match endpoint {
        ConnectedPoint::Dialer { role_override, .. } => role_override.is_dialer(),
        ConnectedPoint::Listener { .. } => false,
    };
    let mux = crate::mux::Config::new();
    async move {
        let (peer, secured) = if outbound {
            // (Collected: the compiler cannot tell that the dialer's future over the iterator
            // itself is `Send`.)
            let protocols: Vec<_> = security.protocol_info().collect();
            let (info, io) = dialer_select_proto(conn, protocols, Version::V1Lazy).await?;
            security.upgrade_outbound(io, info).await?
        } else {
            let (info, io) = listener_select_proto(conn, security.protocol_info()).await?;
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
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(sockets: &Sockets) -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (sockets.register(client.unwrap()), server.unwrap().0)
    }

    #[test]
    fn only_direct_tcp_addresses_name_a_socket() {
        let peer = "/p2p/12D3KooWLRPJAA5o6Z6Yq7RJ6NjvAHR3Gt7jmZ8ZN8o1PCuWzhn6";
        let cases = [
            ("/ip4/198.18.0.11/tcp/4001".to_string(), Some("198.18.0.11:4001")),
            (format!("/ip4/198.18.0.11/tcp/4001{peer}"), Some("198.18.0.11:4001")),
            ("/ip6/::1/tcp/7".to_string(), Some("[::1]:7")),
            ("/ip4/198.18.0.11/udp/4001/quic-v1".to_string(), None),
            (format!("/ip4/198.18.0.1/tcp/7777{peer}/p2p-circuit{peer}"), None),
            ("/dns4/example.com/tcp/4001".to_string(), None),
        ];
        for (addr, want) in cases {
            let got = socket_addr(&addr.parse().unwrap());
            assert_eq!(got, want.map(|w| w.parse().unwrap()), "{addr}");
        }
    }

    #[tokio::test]
    async fn a_socket_carries_bytes_and_leaves_the_registry_when_dropped() {
        let sockets = Sockets::default();
        let (mut ours, mut theirs) = pair(&sockets).await;
        assert_eq!(sockets.len(), 1);
        ours.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut theirs, &mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        tokio::io::AsyncWriteExt::write_all(&mut theirs, b"pong").await.unwrap();
        ours.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        ours.close().await.unwrap();
        let n = tokio::io::AsyncReadExt::read(&mut theirs, &mut buf).await.unwrap();
        assert_eq!(n, 0, "close sends a FIN");
        drop(ours);
        assert_eq!(sockets.len(), 0);
    }

    #[tokio::test]
    async fn a_socket_marked_for_reset_is_reset_when_closed() {
        let sockets = Sockets::default();
        let (ours, mut theirs) = pair(&sockets).await;
        let (plain, mut plain_theirs) = pair(&Sockets::default()).await;
        let peer = theirs.local_addr().unwrap();
        assert_eq!(sockets.reset_on_close(peer), 1);
        assert_eq!(sockets.reset_on_close("127.0.0.1:9".parse().unwrap()), 0);
        drop(ours);
        drop(plain);
        let mut buf = [0u8; 4];
        let err = tokio::io::AsyncReadExt::read(&mut theirs, &mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let n = tokio::io::AsyncReadExt::read(&mut plain_theirs, &mut buf).await.unwrap();
        assert_eq!(n, 0, "an unmarked socket closes with a FIN");
    }
}
