//! A peer's side: asking a relay for a leg pair (the dialer), taking one (the target), and
//! connecting a leg.

use std::sync::Arc;

use futures::AsyncWriteExt;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use multistream_select::{Version, dialer_select_proto, listener_select_proto};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{self, Status, Token};
use super::{INCOMING, LegError, OPEN, PAIRING_TIMEOUT, SECURITY};
use crate::gate::AccessList;
use crate::node::Node;
use crate::streams::IncomingStream;
use crate::tunnel::bulk::ServiceIo;

/// Leg pairs a peer takes at once; further offers wait in the stream queue.
const CONCURRENT: usize = 16;

/// The host and TCP port of the relay that `addr` starts with (a relay connection's address or
/// a relayed path through it); `None` unless that is plain TCP.
pub(crate) fn tcp_addr(addr: &Multiaddr) -> Option<(String, u16)> {
    let mut parts = addr.iter();
    let host = match parts.next()? {
        Protocol::Ip4(ip) => ip.to_string(),
        Protocol::Ip6(ip) => ip.to_string(),
        Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => h.to_string(),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else { return None };
    parts.all(|p| matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit)).then_some((host, port))
}

/// Asks `relay` (reached over TCP along `path`, a relayed path through it) for a leg pair to
/// `peer` and connects this side's leg. The result is a byte pipe to `peer` once it connects its
/// leg; the bulk handshake runs over it next.
pub(crate) async fn open(
    node: &Node,
    relay: PeerId,
    path: &Multiaddr,
    peer: PeerId,
) -> Result<ServiceIo, LegError> {
    let addr = tcp_addr(path).ok_or(LegError::Refused("the relay is not reached over TCP"))?;
    let (mut stream, _) = node
        .open_stream(relay, StreamProtocol::new(OPEN))
        .await
        .map_err(|e| LegError::Io(e.to_string()))?;
    stream.write_all(&wire::encode_hello(&peer, None)).await?;
    stream.flush().await?;
    let token = wire::read_answer(&mut stream, true).await?;
    let _ = stream.close().await;
    connect(addr, token.ok_or(LegError::Malformed("no token"))?).await
}

/// Connects a leg to the relay at `addr` and presents `token`.
async fn connect((host, port): (String, u16), token: Token) -> Result<ServiceIo, LegError> {
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let (_, mut leg) = dialer_select_proto(tcp.compat(), [SECURITY], Version::V1Lazy)
        .await
        .map_err(|e| LegError::Io(e.to_string()))?;
    leg.write_all(&token).await?;
    leg.flush().await?;
    Ok(Box::new(leg))
}

/// Takes the leg pairs that this node's relays offer (on [`INCOMING`]) for peers `access`
/// authorizes: connects the leg and runs the bulk path's server side on it, as for an inbound
/// circuit.
///
/// A leg goes to the address the offer came from, so an offer from any other connected peer
/// would have this node open TCP connections wherever that peer sits and run the bulk handshake
/// there. Offers from peers that are not configured relays are refused at negotiation; from a
/// configured relay this node holds no reservation on (one it cannot be reached through), with
/// a refusal.
pub(crate) fn spawn_answerer(
    node: &Node,
    admission: crate::tunnel::bulk::Admission,
    access: AccessList,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let relays = access.clone();
    let offers = node.accept_from(
        StreamProtocol::new(INCOMING),
        Arc::new(move |peer: &PeerId| relays.is_infrastructure(peer)),
    );
    let what = "relay leg offer";
    let node = node.clone();
    crate::serve::each(
        offers,
        crate::serve::Limits::waiting(CONCURRENT).within(PAIRING_TIMEOUT),
        what,
        tracker,
        cancel,
        move |offer| {
            let (node, admission, access) = (node.clone(), admission.clone(), access.clone());
            Some(async move { take(&node, &admission, &access, offer).await })
        },
    );
}

async fn take(
    node: &Node,
    admission: &crate::tunnel::bulk::Admission,
    access: &AccessList,
    offer: IncomingStream,
) -> Result<(), LegError> {
    let (relay, mut stream) = (offer.peer, offer.stream);
    if !node.holds_reservation(relay).await.unwrap_or(false) {
        wire::write_answer(&mut stream, Status::Refused, None).await?;
        let _ = stream.close().await;
        return Err(LegError::Refused("no reservation on that relay"));
    }
    let (source, token) = wire::read_hello(&mut stream, true).await?;
    let token = token.ok_or(LegError::Malformed("no token"))?;
    // The leg goes to the relay's own address: the one this offer's connection reached.
    let addr = tcp_addr(&offer.path.remote_addr).filter(|_| !offer.path.relayed);
    // A dialer this node does not authorize would be refused by the bulk handshake anyway.
    let status = if !access.is_authorized(&source) {
        Status::Refused
    } else if addr.is_some() {
        Status::Ok
    } else {
        Status::Unreachable
    };
    wire::write_answer(&mut stream, status, None).await?;
    let _ = stream.close().await;
    let addr = addr.filter(|_| status == Status::Ok).ok_or(status.error())?;
    let leg = connect(addr, token).await?;
    // From here on the leg is the dialer's: the bulk handshake, with this side as the server.
    let (_, negotiated) = listener_select_proto(leg, [crate::tunnel::bulk::PROTOCOL])
        .await
        .map_err(|e| LegError::Io(e.to_string()))?;
    tracing::debug!(%source, %relay, "relay leg taken");
    admission
        .admit(negotiated, crate::tunnel::bulk::LEGS, None)
        .await
        .map_err(|e| LegError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_tcp_relay_addresses_take_legs() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        for (addr, want) in [
            (
                format!("/ip4/198.18.0.1/tcp/7777/p2p/{relay}/p2p-circuit/p2p/{peer}"),
                Some(("198.18.0.1", 7777)),
            ),
            ("/ip4/198.18.0.1/tcp/7777".into(), Some(("198.18.0.1", 7777))),
            (format!("/ip6/::1/tcp/4001/p2p/{relay}"), Some(("::1", 4001))),
            (
                format!("/dns4/relay.example/tcp/443/p2p/{relay}/p2p-circuit"),
                Some(("relay.example", 443)),
            ),
            (format!("/ip4/198.18.0.1/udp/7777/quic-v1/p2p/{relay}/p2p-circuit"), None),
            (format!("/ip4/198.18.0.1/tcp/443/ws/p2p/{relay}/p2p-circuit"), None),
            (format!("/p2p/{relay}/p2p-circuit"), None),
        ] {
            let got = tcp_addr(&addr.parse().unwrap());
            assert_eq!(got, want.map(|(h, p)| (h.to_string(), p)), "{addr}");
        }
    }
}
