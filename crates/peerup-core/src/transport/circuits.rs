//! The relay client's transport, shared by the swarm and the layers above it.
//!
//! libp2p's relay client is a transport (circuits are dialled and accepted through it) driven by
//! a behaviour in the swarm (which opens the circuits on the connection to the relay). The swarm
//! builder's `with_relay_client` keeps the transport to itself; here it is assembled the same way
//! (circuit, multistream-select, TLS or Noise, yamux) around a handle ([`Circuits`]) that others
//! can dial bare circuits through too (the tunnel's relayed bulk connections).
//!
//! Inbound circuits reach the swarm's listener either way; protocols registered for hand-off on
//! circuits go to their queues (`transport/upgrade.rs`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use libp2p::core::Endpoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, PortUse, TransportError, TransportEvent,
};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::relay::client::{self, transport::Error};
use libp2p::{Multiaddr, PeerId, Transport};

/// The relay client transport, shared.
#[derive(Clone)]
pub(crate) struct Circuits(Arc<Mutex<client::Transport>>);

impl Circuits {
    pub(crate) fn new(transport: client::Transport) -> Self {
        Self(Arc::new(Mutex::new(transport)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, client::Transport> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a circuit to `peer` through the relay in `path` (a relayed connection's address,
    /// `<relay address>/p2p/<relay>/p2p-circuit[/p2p/<peer>]`). The circuit is a bare byte
    /// stream to the peer's relay client; the relay forwards it.
    pub(crate) async fn dial(
        &self,
        path: &Multiaddr,
        peer: PeerId,
    ) -> Result<client::Connection, TransportError<Error>> {
        let addr =
            circuit_to(path, peer).ok_or(TransportError::Other(Error::MalformedMultiaddr))?;
        let opts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::New };
        let dial = self.lock().dial(addr, opts)?;
        Ok(dial.await?)
    }
}

/// The circuit address to `peer` through the relay that `path` goes through: `path` up to its
/// `/p2p-circuit`, then `/p2p/<peer>`. `None` if `path` is not a circuit through a known relay.
pub(crate) fn circuit_to(path: &Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    let parts: Vec<_> = path.iter().collect();
    let at = parts.iter().position(|p| matches!(p, Protocol::P2pCircuit))?;
    let relay_named = matches!(parts[..at].last(), Some(Protocol::P2p(_)));
    (relay_named && at > 1).then(|| {
        let mut addr: Multiaddr = parts[..=at].iter().cloned().collect();
        addr.push(Protocol::P2p(peer));
        addr
    })
}

/// The relay server a circuit address goes through.
pub(crate) fn relay_of(path: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in path.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

impl Transport for Circuits {
    type Output = client::Connection;
    type Error = Error;
    type ListenerUpgrade = <client::Transport as Transport>::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<client::Connection, Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.lock().listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.lock().remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.lock().dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut *self.lock()).poll(cx)
    }
}

/// The swarm's relayed transport: circuits through `circuits`, secured by `tls` or Noise, then
/// peerup's yamux; listeners hand off the protocols in `handoffs` offered on circuits.
pub(crate) fn transport(
    key: &Keypair,
    tls: super::tls::Config,
    circuits: Circuits,
    handoffs: super::Handoffs,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, libp2p::noise::Error> {
    super::upgrade::secured(circuits, key, tls, handoffs, super::Via::Circuit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_addresses_name_the_relay_and_the_peer() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let other = PeerId::random();
        let base = format!("/ip4/198.18.0.1/tcp/7777/p2p/{relay}/p2p-circuit");
        let want: Multiaddr = format!("{base}/p2p/{peer}").parse().unwrap();
        for path in [base.clone(), format!("{base}/p2p/{peer}"), format!("{base}/p2p/{other}")] {
            let path: Multiaddr = path.parse().unwrap();
            assert_eq!(circuit_to(&path, peer), Some(want.clone()), "{path}");
            assert_eq!(relay_of(&path), Some(relay), "{path}");
        }
        for bad in [
            "/ip4/198.18.0.1/tcp/7777".to_string(),
            format!("/ip4/198.18.0.1/tcp/7777/p2p/{relay}"),
            "/ip4/198.18.0.1/tcp/7777/p2p-circuit".to_string(),
            format!("/p2p/{relay}/p2p-circuit"),
        ] {
            let path: Multiaddr = bad.parse().unwrap();
            assert_eq!(circuit_to(&path, peer), None, "{bad}");
        }
        assert_eq!(relay_of(&"/ip4/198.18.0.1/tcp/7777".parse().unwrap()), None);
    }
}
