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
//! `with_tcp` takes no wrapper, so the transport is put together here ([`transport`]) the way
//! `with_tcp` does it, with the upgrades of `transport/upgrade.rs`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Transport, noise};

use super::tls;
use super::upgrade::{Handoffs, Via, secured};

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

/// The swarm's TCP transport: `tls` or Noise, then peerup's yamux, each socket in `sockets`;
/// listeners hand off the protocols in `handoffs`.
pub(crate) fn transport(
    key: &Keypair,
    tls: tls::Config,
    sockets: Sockets,
    handoffs: Handoffs,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true));
    secured(tcp.map(move |stream, _| sockets.register(stream.0)), key, tls, handoffs, Via::Tcp)
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
