//! Admitting inbound bulk connections, between the security protocol's negotiation (which named
//! [`super::PROTOCOL`]) and the acceptor ([`super::spawn_acceptor`]).
//!
//! A bulk connection is not a libp2p connection, so the swarm's gate (`crate::gate`) never sees
//! it: this is its gate. On a direct TCP connection, one source IP may have at most so many bulk
//! connections at once, handshaking or open ([`PerIp`], a [`PerKey`]: the node's `max_inbound_per_ip`, else
//! [`MAX_PER_IP`]). Circuits, legs and punched connections are not counted by IP: the IP of a
//! circuit or leg is the relay's, shared by every peer behind it (the relay caps those per peer),
//! and a punched connection is only made for a peer that asked over an authorized connection.
//! The TLS handshake must finish within [`super::SETUP_TIMEOUT`]. Once it has named the peer, a
//! peer that may not use services (not in authorized_keys, or expired; relays and other
//! infrastructure peers included) is dropped there and then: no request is read, the acceptor
//! sees nothing, and nothing about the peer is kept. Denials are counted (`auth_denials`) and
//! logged for audit.

use std::net::IpAddr;

use futures::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{Admitted, SETUP_TIMEOUT, handshake};
use crate::gate::{AccessList, GateError};
use crate::metrics::Metrics;
use crate::per_key::{PerKey, Place};
use crate::transport::tls::{AlpnConfig, TlsError};

/// Why an inbound bulk connection was not admitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Denied {
    /// The peer may not use services, or its address has too many bulk connections.
    #[error("bulk connection refused: {0}")]
    Refused(#[from] GateError),
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] TlsError),
    /// The handshake took longer than [`SETUP_TIMEOUT`].
    #[error("bulk handshake timed out")]
    Timeout,
}

/// Bulk connections one IP address may have at once on direct TCP (handshaking or open), unless
/// the node caps inbound connections per IP itself. A node opens at most
/// [`super::MAX_CLIENT_BULK`] at once, plus its probes; this leaves room for two such nodes
/// behind one address. Beyond it, their connections ride yamux streams.
pub const MAX_PER_IP: usize = 2 * super::MAX_CLIENT_BULK;

/// Bulk connections by source IP.
pub(crate) type PerIp = PerKey<IpAddr>;

/// One connection's place in [`PerIp`], given back when dropped.
pub(crate) type IpTicket = Place<IpAddr>;

/// What inbound bulk connections pass before the acceptor gets them.
#[derive(Clone)]
pub(crate) struct Admission {
    tls: AlpnConfig,
    queue: mpsc::Sender<Admitted>,
    access: AccessList,
    metrics: Metrics,
    per_ip: PerIp,
}

impl Admission {
    /// Admits to `queue` (the acceptor's) the connections of peers `access` lets use services,
    /// at most `max_per_ip` at once from one IP on direct TCP; `tls` is the bulk path's.
    pub(crate) fn new(
        tls: AlpnConfig,
        queue: mpsc::Sender<Admitted>,
        access: AccessList,
        metrics: Metrics,
        max_per_ip: usize,
    ) -> Self {
        Self { tls, queue, access, metrics, per_ip: PerIp::new(max_per_ip) }
    }

    /// Runs the server side of the handshake on `socket` and hands the connection to the
    /// acceptor, if it passes (module docs). `path` says how it came and `ip` where from (only
    /// for a direct TCP connection).
    pub(crate) async fn admit<C>(
        &self,
        socket: C,
        path: &'static str,
        ip: Option<IpAddr>,
    ) -> Result<(), Denied>
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let held = match ip {
            Some(ip) => match self.per_ip.take(crate::per_key::source_key(ip)) {
                Some(ticket) => Some(ticket),
                None => {
                    tracing::info!(%ip, path, "bulk connection denied: per-IP limit");
                    return Err(GateError::TooManyFromIp(ip).into());
                }
            },
            None => None,
        };
        let config = self.tls.server.clone();
        let handshake = tokio::time::timeout(SETUP_TIMEOUT, handshake::server(config, socket));
        let (peer, io) = handshake.await.map_err(|_| Denied::Timeout)??;
        if !self.access.is_authorized(&peer) {
            self.metrics.auth_denials.inc();
            tracing::info!(target: "audit", %peer, ?ip, path, "auth_decision: bulk connection denied (not authorized)");
            return Err(GateError::NotAuthorized(peer).into());
        }
        if self.queue.try_send(Admitted { peer, io: Box::new(io), path, held }).is_err() {
            tracing::debug!(%peer, "bulk queue full; connection dropped");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::AsyncWriteExt;
    use libp2p::PeerId;
    use libp2p::identity::Keypair;
    use tokio::io::DuplexStream;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::*;
    use crate::authorized_keys::{AuthorizedKeys, Entry};
    use crate::transport::tls;

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 7)));

    struct Server {
        admission: Admission,
        queue: mpsc::Receiver<Admitted>,
        metrics: Metrics,
    }

    /// A server whose access list holds `friend`, and `relay` as infrastructure.
    fn server(friend: PeerId, relay: PeerId, max_per_ip: usize) -> Server {
        let mut keys = AuthorizedKeys::default();
        keys.add(Entry::new(friend, None)).unwrap();
        let access = AccessList::from_keys(&keys);
        access.allow_always(relay);
        let (tx, queue) = mpsc::channel(4);
        let metrics = Metrics::default();
        let tls = tls::Config::new(&Keypair::generate_ed25519()).unwrap();
        let alpn = tls.for_alpn(super::super::ALPN);
        let admission = Admission::new(alpn, tx, access, metrics.clone(), max_per_ip);
        Server { admission, queue, metrics }
    }

    /// Runs `key`'s client handshake and sends a request, against `server`'s admission.
    async fn knock(server: &Server, key: &Keypair) -> Result<(), Denied> {
        let (x, y) = tokio::io::duplex(1 << 16);
        let client = tls::Config::new(key).unwrap().for_alpn(super::super::ALPN);
        let client = async move {
            let (_, mut io) = handshake::client(client.client, x.compat()).await?;
            io.write_all(&super::super::encode_request("").unwrap()).await?;
            io.flush().await?;
            Ok::<_, TlsError>(io)
        };
        let admit = server.admission.admit(y.compat(), "test", IP);
        let (admitted, _client) = tokio::join!(admit, client);
        admitted
    }

    #[tokio::test]
    async fn only_authorized_peers_get_past_the_handshake() {
        let (friend, relay, stranger) =
            (Keypair::generate_ed25519(), Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let id = |k: &Keypair| k.public().to_peer_id();
        let mut s = server(id(&friend), id(&relay), 8);
        for key in [&stranger, &relay] {
            let err = knock(&s, key).await.unwrap_err();
            assert!(
                matches!(&err, Denied::Refused(GateError::NotAuthorized(p)) if *p == id(key)),
                "{err}"
            );
            // Refused right after the handshake: the acceptor, which reads requests and holds
            // the slots, never sees the connection, and its address's place is given back.
            assert!(s.queue.try_recv().is_err(), "nothing reaches the acceptor");
            assert_eq!(s.admission.per_ip.len(), 0);
        }
        assert_eq!(s.metrics.auth_denials.get(), 2, "each denial counted");
        knock(&s, &friend).await.unwrap();
        let conn = s.queue.try_recv().expect("the friend's connection goes to the acceptor");
        assert_eq!(conn.peer, id(&friend));
        assert_eq!(s.admission.per_ip.len(), 1, "its place is held while it lives");
        drop(conn);
        assert_eq!(s.admission.per_ip.len(), 0);
        assert_eq!(s.metrics.auth_denials.get(), 2);
    }

    /// The server side of a connection whose client never says a word.
    fn silent(server: &Server) -> (impl Future<Output = Result<(), Denied>>, Compat<DuplexStream>) {
        silent_from(server, IP)
    }

    /// The same, from `ip`.
    fn silent_from(
        server: &Server,
        ip: Option<IpAddr>,
    ) -> (impl Future<Output = Result<(), Denied>>, Compat<DuplexStream>) {
        let (x, y) = tokio::io::duplex(1 << 16);
        (server.admission.admit(y.compat(), "test", ip), x.compat())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_handshake_ends_at_the_deadline() {
        let s = server(PeerId::random(), PeerId::random(), 8);
        let (admit, _client) = silent(&s);
        let start = tokio::time::Instant::now();
        let err = admit.await.unwrap_err();
        assert!(matches!(err, Denied::Timeout), "{err}");
        assert_eq!(start.elapsed(), SETUP_TIMEOUT);
        assert_eq!(s.admission.per_ip.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_gets_so_many_connections_at_once() {
        let s = server(PeerId::random(), PeerId::random(), 2);
        let (first, _a) = silent(&s);
        let (second, _b) = silent(&s);
        let (third, _c) = silent(&s);
        let third = async {
            // Once the first two are handshaking.
            tokio::time::sleep(Duration::from_millis(1)).await;
            third.await
        };
        let (first, second, third) = tokio::join!(first, second, third);
        let ip = IP.unwrap();
        assert!(matches!(third, Err(Denied::Refused(GateError::TooManyFromIp(i))) if i == ip));
        assert!(matches!((first, second), (Err(Denied::Timeout), Err(Denied::Timeout))));
        let (fourth, _d) = silent(&s);
        assert!(matches!(fourth.await, Err(Denied::Timeout)), "their places were given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_64_counts_as_one_address() {
        let s = server(PeerId::random(), PeerId::random(), 1);
        let ip = |a: &str| Some(a.parse::<IpAddr>().unwrap());
        let (first, _a) = silent_from(&s, ip("2001:db8:7:7::1"));
        let (same_64, _b) = silent_from(&s, ip("2001:db8:7:7:dead:beef::2"));
        let (other_64, _c) = silent_from(&s, ip("2001:db8:7:8::1"));
        let later = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio::join!(same_64, other_64)
        };
        let (first, (same_64, other_64)) = tokio::join!(first, later);
        assert!(matches!(first, Err(Denied::Timeout)));
        assert!(matches!(same_64, Err(Denied::Refused(GateError::TooManyFromIp(_)))), "one /64");
        assert!(matches!(other_64, Err(Denied::Timeout)), "another /64 has its own place");
    }

    #[test]
    fn an_address_gets_its_places_back() {
        let per_ip = PerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("198.18.0.1".parse().unwrap(), "::1".parse().unwrap());
        let first = per_ip.take(a).unwrap();
        let second = per_ip.take(a).unwrap();
        assert!(per_ip.take(a).is_none(), "two at once from one address");
        let other = per_ip.take(b);
        assert!(other.is_some(), "other addresses are counted apart");
        drop(first);
        let third = per_ip.take(a);
        assert!(third.is_some(), "a place given back is taken again");
        drop((second, third, other));
        assert_eq!(per_ip.len(), 0, "no entry outlives its connections");
    }
}
