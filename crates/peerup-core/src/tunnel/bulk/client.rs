//! The client side: which routes take bulk connections, and opening them.
//!
//! A bulk connection goes one of four ways:
//! - over a direct TCP path: a fresh TCP connection to the address of the peer's connection;
//! - over a direct path where that fails (the peer's NAT filters new flows: a hole-punched
//!   path), a TCP connection punched through both NATs for it ([`crate::tunnel::punch`]);
//! - through a relay, when the peer is reachable no other way: two TCP legs that the relay joins
//!   ([`crate::tunnel::legs`]), when the relay is reached over TCP and offers them;
//! - otherwise a circuit of its own through the relay of the peer's relayed connection
//!   ([`crate::transport::circuits`]).
//!
//! Either way the relay forwards TLS records it cannot read, and the proxied bytes skip the
//! relayed connection's own TLS and yamux layers (and, on legs, the relay's).
//!
//! Relayed bulk connections use a relay's scarce resources (a relay caps the circuits, or leg
//! pairs, per peer, counting both ends, and libp2p's relay how fast a peer opens circuits), so a
//! node keeps few relayed bulk connections open ([`MAX_RELAYED_BULK`]) and opens few circuits
//! per [`RELAYED_WINDOW`] ([`RELAYED_PER_WINDOW`]; leg pairs are not circuits and don't count);
//! beyond that, connections ride yamux streams on the relayed connection as before.

mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use multistream_select::{Version, dialer_select_proto};
use tokio::sync::Semaphore;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    ANSWER_TIMEOUT, Answer, BulkError, PROTOCOL, Revocations, SETUP_TIMEOUT, ServiceIo,
    encode_request, handshake,
};
use crate::streams::PathInfo;
use crate::transport::circuits::Circuits;
use crate::transport::tls::AlpnConfig;
pub(crate) use state::{CircuitBudget, Probes};
pub use state::{MAX_RELAYED_BULK, RELAYED_PER_WINDOW, RELAYED_WINDOW};
use state::{Place, Probe};

/// Where a bulk connection to a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Route {
    /// A TCP connection to this address of the peer's.
    Tcp(SocketAddr),
    /// A TCP connection punched to the peer at this address's host, when [`Route::Tcp`] to it
    /// failed or is not known to work yet while this is ([`route_of`]).
    Punch(SocketAddr),
    /// Two legs joined by this relay.
    Leg(PeerId),
    /// A circuit through this relay.
    Relay(PeerId),
}

/// Negotiates [`PROTOCOL`] on a fresh connection to `peer` (a TCP connection or a circuit), runs
/// the handshake and sends the request; the answer is read next ([`read_answer`]).
async fn send_request<C>(
    tls: &AlpnConfig,
    peer: PeerId,
    conn: C,
    service: &str,
) -> Result<ServiceIo, BulkError>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // multistream-select names the bulk path where a libp2p dial names `/tls/1.0.0`; the TLS
    // handshake that follows is the same.
    let (_, negotiated) = dialer_select_proto(conn, [PROTOCOL], Version::V1Lazy)
        .await
        .map_err(|e| BulkError::Connect(e.to_string()))?;
    let (found, mut io) = handshake::client(tls.client.clone(), negotiated)
        .await
        .map_err(|e| BulkError::Connect(e.to_string()))?;
    if found != peer {
        return Err(BulkError::WrongPeer(found.to_string()));
    }
    io.write_all(&encode_request(service)?).await.map_err(|e| BulkError::Connect(e.to_string()))?;
    io.flush().await.map_err(|e| BulkError::Connect(e.to_string()))?;
    Ok(Box::new(io))
}

/// Reads the answer to a request [`send_request`] sent.
async fn read_answer(mut io: ServiceIo) -> Result<ServiceIo, BulkError> {
    let mut answer = [0u8; 1];
    io.read_exact(&mut answer).await.map_err(|e| BulkError::Connect(e.to_string()))?;
    if answer[0] != Answer::Ok as u8 {
        return Err(BulkError::Refused);
    }
    Ok(io)
}

/// Opens a bulk connection to `service` on `peer` at `addr` (a TCP listen address of the peer).
pub async fn dial(
    tls: crate::transport::tls::Config,
    peer: PeerId,
    addr: SocketAddr,
    service: &str,
) -> Result<ServiceIo, BulkError> {
    read_answer(dial_tcp(tls.for_alpn(super::ALPN), peer, addr, service).await?).await
}

/// Connects to `addr` and sends the request for `service` on `peer`.
async fn dial_tcp(
    tls: AlpnConfig,
    peer: PeerId,
    addr: SocketAddr,
    service: &str,
) -> Result<ServiceIo, BulkError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| BulkError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    send_request(&tls, peer, tcp.compat(), service).await
}

/// Punches a connection to `peer` at `ip` ([`crate::tunnel::punch`]) and sends the request for `service`.
async fn dial_punched(
    tls: AlpnConfig,
    node: crate::node::Node,
    peer: PeerId,
    ip: std::net::IpAddr,
    service: &str,
) -> Result<ServiceIo, BulkError> {
    let tcp = crate::tunnel::punch::open(&node, peer, ip)
        .await
        .map_err(|e| BulkError::Connect(e.to_string()))?;
    send_request(&tls, peer, tcp.compat(), service).await
}

/// Opens a circuit to `peer` through the relay of `path` (a relayed connection's address) and
/// sends the request for `service`.
async fn dial_relayed(
    tls: AlpnConfig,
    circuits: Circuits,
    peer: PeerId,
    path: libp2p::Multiaddr,
    service: &str,
) -> Result<ServiceIo, BulkError> {
    let circuit =
        circuits.dial(&path, peer).await.map_err(|e| BulkError::Connect(e.to_string()))?;
    send_request(&tls, peer, circuit, service).await
}

/// Opens legs to `peer` joined by `relay` (the relay of `path`, a relayed connection's address)
/// and sends the request for `service`.
async fn dial_legs(
    tls: AlpnConfig,
    node: crate::node::Node,
    relay: PeerId,
    peer: PeerId,
    path: libp2p::Multiaddr,
    service: &str,
) -> Result<ServiceIo, BulkError> {
    let leg = crate::tunnel::legs::open(&node, relay, &path, peer)
        .await
        .map_err(|e| BulkError::Connect(e.to_string()))?;
    send_request(&tls, peer, leg, service).await
}

/// What [`try_connect`] needs from the node.
pub(crate) struct Client<'a> {
    /// For streams to relays (legs).
    pub(crate) node: &'a crate::node::Node,
    pub(crate) tls: &'a AlpnConfig,
    pub(crate) slots: &'a Arc<Semaphore>,
    pub(crate) budget: &'a CircuitBudget,
    pub(crate) probes: &'a Probes,
    pub(crate) revocations: &'a Revocations,
    pub(crate) tracker: &'a TaskTracker,
    pub(crate) cancel: &'a CancellationToken,
}

impl Client<'_> {
    /// The place a connection along `route` takes in the relayed budget; `None` when it is
    /// relayed and the budget is spent.
    fn place(&self, route: Route) -> Option<Place> {
        match route {
            Route::Tcp(_) | Route::Punch(_) => Some(Place::Direct),
            Route::Leg(_) => self.budget.take(false).map(Place::Relayed),
            Route::Relay(_) => self.budget.take(true).map(Place::Relayed),
        }
    }

    /// Probes `route` in the background, unless it is known or being probed already.
    fn probe(&self, peer: PeerId, route: Route, path: &PathInfo) {
        let key = (peer, route);
        if !self.probes.start(key) {
            return;
        }
        // With no relayed place to spare, the route is not known to fail: a later connection
        // probes it, once the budget allows.
        let Some(place) = self.place(route) else {
            self.probes.forget(&key);
            return;
        };
        let (probes, cancel) = (self.probes.clone(), self.cancel.clone());
        let probe = self.open(peer, route, path, "");
        self.tracker.spawn(async move {
            let state = tokio::select! {
                () = cancel.cancelled() => return,
                r = probe => match r {
                    Ok(_) => Probe::Works,
                    Err(e) => {
                        tracing::debug!(%peer, ?route, error = %e, "no bulk path this way");
                        Probe::Failed(Instant::now())
                    }
                },
            };
            drop(place);
            tracing::debug!(%peer, ?route, ?state, "bulk path probed");
            probes.set(key, state);
        });
    }

    /// Opens a bulk connection along `route`.
    fn open(
        &self,
        peer: PeerId,
        route: Route,
        path: &PathInfo,
        service: &str,
    ) -> impl Future<Output = Result<ServiceIo, BulkError>> + Send + 'static {
        let (tls, node) = (self.tls.clone(), self.node.clone());
        let circuits = node.circuits().clone();
        let (addr, service) = (path.remote_addr.clone(), service.to_string());
        async move {
            let dial = async {
                match route {
                    Route::Tcp(socket) => dial_tcp(tls, peer, socket, &service).await,
                    Route::Punch(socket) => {
                        dial_punched(tls, node, peer, socket.ip(), &service).await
                    }
                    Route::Leg(relay) => dial_legs(tls, node, relay, peer, addr, &service).await,
                    Route::Relay(_) => dial_relayed(tls, circuits, peer, addr, &service).await,
                }
            };
            let sent = tokio::time::timeout(SETUP_TIMEOUT, dial)
                .await
                .unwrap_or(Err(BulkError::Timeout))?;
            // Once the request is out the peer may have connected to the service: falling back
            // to a stream now would reach it a second time, so the answer gets longer to come.
            let answer = read_answer(sent);
            tokio::time::timeout(ANSWER_TIMEOUT, answer).await.unwrap_or(Err(BulkError::Timeout))
        }
    }
}

/// The route a bulk connection would take along `path`: direct TCP paths always, with a plain
/// connection unless that failed lately or a punched one is known to work while the plain one
/// is not; relayed paths only when `only_relayed` (no direct connection exists, which would
/// carry streams better): legs when the relay is reached over TCP and they did not fail lately,
/// else a circuit. `state` tells what is known of each route ([`Probes::state`]).
fn route_of(
    path: &PathInfo,
    only_relayed: bool,
    state: impl Fn(Route) -> Option<Probe>,
) -> Option<Route> {
    match (path.relayed, path.is_quic()) {
        (false, false) => {
            let socket = crate::netinfo::socket_of(&path.remote_addr)?;
            let (tcp, punch) = (Route::Tcp(socket), Route::Punch(socket));
            let plain = match state(tcp) {
                Some(Probe::Works) => true,
                Some(Probe::Failed(_)) => false,
                Some(Probe::Running) | None => state(punch) != Some(Probe::Works),
            };
            Some(if plain { tcp } else { punch })
        }
        (true, _) if only_relayed => {
            let relay = crate::transport::circuits::relay_of(&path.remote_addr)?;
            let failed = matches!(state(Route::Leg(relay)), Some(Probe::Failed(_)));
            let legs = crate::tunnel::legs::tcp_addr(&path.remote_addr).is_some() && !failed;
            Some(if legs { Route::Leg(relay) } else { Route::Relay(relay) })
        }
        _ => None,
    }
}

/// A bulk connection to `service` along a path in `paths` known to take them; `None` otherwise
/// (the caller then uses a yamux stream). Routes not probed yet are probed in the background for
/// the next connection. With no `service`, only that: nothing is opened.
pub(crate) async fn try_connect(
    c: Client<'_>,
    peer: PeerId,
    paths: &[PathInfo],
    service: Option<&str>,
) -> Option<(ServiceIo, PathInfo)> {
    let only_relayed = paths.iter().all(|p| p.relayed);
    for path in paths {
        let state = |route| c.probes.state(&(peer, route));
        let Some(route) = route_of(path, only_relayed, state) else { continue };
        let key = (peer, route);
        let works = c.probes.get(&key) == Some(Probe::Works);
        if let (true, Some(service)) = (works, service) {
            // Every bulk slot (or the relayed ones' budget) taken: a yamux stream it is.
            let slot = c.slots.clone().try_acquire_owned().ok()?;
            let place = c.place(route)?.permit();
            let held = std::iter::once(slot).chain(place).map(super::Held::Slot).collect();
            match c.open(peer, route, path, service).await {
                Ok(io) => return Some((c.revocations.guard(peer, io, held), path.clone())),
                Err(e) => tracing::debug!(%peer, ?route, error = %e, "bulk connection failed"),
            }
            c.probes.set(key, Probe::Failed(Instant::now()));
        } else if !works {
            // A direct path is probed both ways at once: a plain connection, and a punched one
            // for when the peer's NAT drops the plain one (which then takes a timeout to tell).
            let punch = match route {
                Route::Tcp(socket) => Some(Route::Punch(socket)),
                _ => None,
            };
            for route in std::iter::once(route).chain(punch) {
                c.probe(peer, route, path);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_routes_only_when_nothing_direct_exists() {
        let relay = PeerId::random();
        let circuit = PathInfo {
            remote_addr: format!("/ip4/198.18.0.1/tcp/7777/p2p/{relay}/p2p-circuit")
                .parse()
                .unwrap(),
            relayed: true,
        };
        let tcp =
            PathInfo { remote_addr: "/ip4/198.18.0.2/tcp/4001".parse().unwrap(), relayed: false };
        let quic = PathInfo {
            remote_addr: "/ip4/198.18.0.2/udp/4001/quic-v1".parse().unwrap(),
            relayed: false,
        };
        let quic_relay = PathInfo {
            remote_addr: format!("/ip4/198.18.0.1/udp/7777/quic-v1/p2p/{relay}/p2p-circuit")
                .parse()
                .unwrap(),
            relayed: true,
        };
        let fine = |_| None;
        let failed = |r| (r == Route::Leg(relay)).then_some(Probe::Failed(Instant::now()));
        assert_eq!(route_of(&circuit, true, fine), Some(Route::Leg(relay)), "legs first");
        assert_eq!(route_of(&circuit, true, failed), Some(Route::Relay(relay)), "then a circuit");
        assert_eq!(route_of(&quic_relay, true, fine), Some(Route::Relay(relay)), "legs need TCP");
        assert_eq!(route_of(&circuit, false, fine), None);
        let socket = "198.18.0.2:4001".parse().unwrap();
        assert_eq!(route_of(&tcp, false, fine), Some(Route::Tcp(socket)));
        let (plain, punched) = (Route::Tcp(socket), Route::Punch(socket));
        let known = |states: [(Route, Probe); 2]| {
            move |r| states.iter().find(|(k, _)| *k == r).map(|(_, p)| *p)
        };
        let failed = Probe::Failed(Instant::now());
        use Probe::{Running, Works};
        for (a, b, want) in [
            (Running, Running, plain),
            (Running, Works, punched),
            (Works, Works, plain),
            (failed, Running, punched),
            (failed, failed, punched),
        ] {
            let got = route_of(&tcp, false, known([(plain, a), (punched, b)]));
            assert_eq!(got, Some(want), "plain {a:?}, punched {b:?}");
        }
        assert_eq!(route_of(&quic, false, fine), None);
    }
}
