//! The peer address of an inbound TCP connection, at hand while its handshake runs.
//!
//! libp2p's upgrade traits hand a security upgrade the socket (inside multistream-select's
//! `Negotiated`) and nothing about where it came from. What takes a connection over during its
//! handshake, rather than letting it reach the swarm (relay legs, [`crate::legs`]), still has to
//! bound what one address may hold, before any peer ID is known. So the TCP transport
//! ([`super::transport`]) runs each inbound connection's upgrades inside a task-local scope
//! holding the peer's address, and [`handshake_peer`] reads it there.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::future::Either;
use libp2p::Multiaddr;
use libp2p::Transport;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static PEER: SocketAddr;
}

/// The peer address of the inbound TCP connection whose handshake is running on this task;
/// `None` outside one (a dial, a relayed circuit, another task).
pub(crate) fn handshake_peer() -> Option<SocketAddr> {
    PEER.try_with(|a| *a).ok()
}

/// `T`, with each inbound connection's upgrade run where [`handshake_peer`] names its peer.
pub(super) struct KnowsPeer<T>(pub(super) T);

impl<T> Transport for KnowsPeer<T>
where
    T: Transport + Unpin,
{
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade =
        Either<TaskLocalFuture<SocketAddr, T::ListenerUpgrade>, T::ListenerUpgrade>;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let event = ready!(Pin::new(&mut self.0).poll(cx));
        let peer = match &event {
            TransportEvent::Incoming { send_back_addr, .. } => super::socket_addr(send_back_addr),
            _ => None,
        };
        Poll::Ready(event.map_upgrade(|upgrade| match peer {
            Some(peer) => Either::Left(PEER.scope(peer, upgrade)),
            None => Either::Right(upgrade),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::future::BoxFuture;
    use libp2p::core::transport::Boxed;

    /// An inbound connection's upgrade sees its peer's address; the code around it does not.
    #[tokio::test]
    async fn an_inbound_upgrade_knows_its_peer() {
        let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default()).and_then(
            |_, _| -> BoxFuture<'static, std::io::Result<_>> {
                Box::pin(async { Ok(handshake_peer()) })
            },
        );
        let mut transport: Boxed<Option<SocketAddr>> = KnowsPeer(tcp.boxed()).boxed();
        transport.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let listening = loop {
            if let TransportEvent::NewAddress { listen_addr, .. } =
                transport.select_next_some().await
            {
                break super::super::socket_addr(&listen_addr).unwrap();
            }
        };
        let client = tokio::net::TcpStream::connect(listening).await.unwrap();
        let upgrade = loop {
            if let TransportEvent::Incoming { upgrade, .. } = transport.select_next_some().await {
                break upgrade;
            }
        };
        assert_eq!(upgrade.await.unwrap(), Some(client.local_addr().unwrap()));
        assert_eq!(handshake_peer(), None);
    }
}
