//! The bulk path: a proxied connection on its own TLS connection, beside yamux.
//!
//! Every proxied TCP connection normally rides a yamux stream on the peer's libp2p connection, so
//! each byte also crosses yamux framing and the swarm's connection task. When a direct TCP
//! connection to the peer exists, the client instead opens a fresh TCP connection to the same
//! address and negotiates [`PROTOCOL`] as the *security* protocol in place of `/tls/1.0.0`. The
//! listener runs the same TLS 1.3 handshake (libp2p certificates, so both ends are authenticated
//! by peer ID, AES-GCM preferred), and hands the secured socket to the bulk acceptor instead of
//! the swarm. The handshake names its own ALPN ([`PROTOCOL`] itself, where libp2p's name
//! `libp2p`), so it commits to the bulk path: neither end takes a bulk handshake for a swarm
//! connection's, or the other way round. (The protocol became 1.2.0 with it: a peer before the
//! change offers or asks 1.1.0, and the other answers `na`, so the two fall back to yamux
//! instead of failing the handshake.) One small request names the service; the answer says whether it is served; then
//! the socket is a plain byte pipe under TLS, one connection per proxied connection.
//!
//! A peer reached only through a relay gets the same over two TCP legs that a peerup relay joins
//! ([`crate::tunnel::legs`]), or else over a circuit of its own through that relay (`bulk/client.rs`):
//! the relay forwards the TLS records, and the bytes skip the relayed connection's TLS and yamux
//! layers.
//!
//! Authorization is the same as for service streams: the peer must be authorized and allowed to
//! use the service. A bulk connection never reaches the swarm's gate, so it has its own
//! (`bulk/admission.rs`): a per-IP cap, a deadline on the handshake, and a peer that may not use
//! services is dropped as soon as the handshake names it, before it can send a request (a probe
//! included). Each route to a peer is probed in the background before any connection relies on
//! it ([`Probes`]); until then, and at peers that don't speak the protocol (older peerup, Go
//! peer-up, which answer `na` in multistream-select), connections use yamux streams. A route
//! that fails is probed again after [`RETRY_AFTER`].

mod admission;
mod client;
mod handshake;
mod records;
mod revocations;

pub(crate) use admission::Admission;
pub use admission::MAX_PER_IP;
pub(crate) use client::{CircuitBudget, Client, Probes, try_connect};
pub use client::{MAX_RELAYED_BULK, RELAYED_PER_WINDOW, RELAYED_WINDOW, dial};
pub(crate) use revocations::{Held, Revocations};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::AccessList;
use crate::metrics::Metrics;
use crate::streams::PeerFilter;
use crate::transport::{HandedOff, Via};

/// The security protocol name that asks for the bulk path.
pub const PROTOCOL: &str = crate::protocols::BULK;
/// The ALPN of the bulk path's TLS handshakes: the protocol name, where libp2p's handshakes name
/// `libp2p`.
pub(crate) const ALPN: &[u8] = PROTOCOL.as_bytes();
/// Version byte of the request.
const VERSION: u8 = 1;
/// Connect, handshake and request must fit in this.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
/// The answer to a request sent must come within this: the peer may be connecting to the
/// service meanwhile (for up to [`crate::service::LOCAL_DIAL_TIMEOUT`]), and a client that gave
/// up sooner and fell back to a stream would reach the service twice.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an address that failed is left alone before it is probed again.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);
/// Secured sockets waiting for the acceptor.
pub(crate) const QUEUE: usize = 1024;
/// Bulk connections served at once.
const MAX_ACTIVE: usize = 1024;
/// Inbound bulk handshakes under way at once; connections beyond are closed (their clients fall
/// back to yamux streams).
const MAX_ADMITTING: usize = 256;
/// Bulk connections a node opens at once; beyond that, connections use yamux streams. Each bulk
/// connection has its own TLS state and buffers, so a thousand small connections are cheaper
/// multiplexed, while the first few dozen (the ones that move bulk data) get the fast path.
pub const MAX_CLIENT_BULK: usize = 64;

pub use crate::transport::Io;

/// A connection to a service, whichever way it goes.
pub type ServiceIo = crate::transport::BoxedIo;

/// The path of a bulk connection over a direct TCP connection, as logged.
pub(crate) const DIRECT: &str = "DIRECT/bulk";
/// ... over a circuit of its own through a relay.
pub(crate) const RELAYED: &str = "RELAYED/bulk";
/// ... over two legs a relay joined ([`crate::tunnel::legs`]).
pub(crate) const LEGS: &str = "RELAYED/legs";
/// ... over a TCP connection of its own punched through both NATs ([`crate::tunnel::punch`]).
pub(crate) const PUNCHED: &str = "DIRECT/punched";

/// A secured inbound bulk connection of an authorized peer, from its admission
/// (`bulk/admission.rs`) to the acceptor.
pub(crate) struct Admitted {
    peer: PeerId,
    io: ServiceIo,
    /// The way it came, for the logs: [`DIRECT`], [`RELAYED`] (a circuit of its own),
    /// [`LEGS`] (two legs a relay joined) or [`PUNCHED`].
    path: &'static str,
    /// Its place among its IP address's bulk connections, held while it lives.
    held: Option<admission::IpTicket>,
}

/// Answers to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Answer {
    Ok = 0,
    Refused = 1,
    Unavailable = 2,
}

/// Why no bulk connection was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The peer was not connected: nothing to probe yet.
    NotConnected,
    /// Not offered, not probed yet, or out of slots.
    Unavailable,
}

/// The bulk path could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// Connecting or negotiating failed.
    #[error("bulk connection failed: {0}")]
    Connect(String),
    /// The handshake named someone else (the peer ID that answered).
    #[error("bulk connection reached another peer ({0})")]
    WrongPeer(String),
    /// The peer answered but will not serve this.
    #[error("the peer does not serve this over the bulk path")]
    Refused,
    /// A malformed message.
    #[error("malformed bulk message: {0}")]
    Malformed(&'static str),
    /// Timed out.
    #[error("bulk setup timed out")]
    Timeout,
}

/// Encodes a request for `service` (the empty name is a probe): version byte, name length, name.
pub fn encode_request(service: &str) -> Result<Vec<u8>, BulkError> {
    let len =
        u8::try_from(service.len()).map_err(|_| BulkError::Malformed("service name too long"))?;
    let mut out = vec![VERSION, len];
    out.extend_from_slice(service.as_bytes());
    Ok(out)
}

/// Decodes a whole request, exactly as [`encode_request`] made it; returns the service name.
pub fn decode_request(bytes: &[u8]) -> Result<String, BulkError> {
    let [version, len, rest @ ..] = bytes else {
        return Err(BulkError::Malformed("truncated request"));
    };
    if *version != VERSION {
        return Err(BulkError::Malformed("unknown request version"));
    }
    let name =
        rest.get(..usize::from(*len)).ok_or(BulkError::Malformed("truncated service name"))?;
    if rest.len() > name.len() {
        return Err(BulkError::Malformed("trailing bytes after the request"));
    }
    String::from_utf8(name.to_vec()).map_err(|_| BulkError::Malformed("service name is not UTF-8"))
}

/// Reads a request from the stream; returns the service name. An unknown version is refused before
/// anything more is read.
async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<String, BulkError> {
    let mut buf = vec![0u8; 2];
    r.read_exact(&mut buf).await.map_err(|_| BulkError::Malformed("truncated request"))?;
    if buf[0] != VERSION {
        return Err(BulkError::Malformed("unknown request version"));
    }
    buf.resize(2 + usize::from(buf[1]), 0);
    r.read_exact(&mut buf[2..])
        .await
        .map_err(|_| BulkError::Malformed("truncated service name"))?;
    decode_request(&buf)
}

/// A service offered on the bulk path: who may use it, and where its connections go.
pub(crate) struct Offered {
    filter: PeerFilter,
    queue: mpsc::Sender<super::Inbound>,
}

/// An entry of the [`Registry`].
pub(crate) type Offer = Arc<Offered>;

/// The services offered on the bulk path, by name. Filled by `Tunnel::accept`.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    services: Arc<Mutex<HashMap<String, Offer>>>,
}

impl Registry {
    /// Offers `name` to the peers `filter` approves; their connections go to `queue`. Returns
    /// the entry, for [`Registry::remove_if`].
    pub(crate) fn insert(
        &self,
        name: &str,
        filter: PeerFilter,
        queue: mpsc::Sender<super::Inbound>,
    ) -> Offer {
        let entry = Arc::new(Offered { filter, queue });
        self.lock().insert(name.to_string(), entry.clone());
        entry
    }

    /// Withdraws `name`.
    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Withdraws `entry` if it is still the one offered (a later offer of the same name stays).
    pub(crate) fn remove_if(&self, entry: &Offer) {
        self.lock().retain(|_, e| !Arc::ptr_eq(e, entry));
    }

    fn get(&self, name: &str) -> Option<Offer> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Offer>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Admits the bulk connections the transport hands off (`crate::transport::Handoffs`) until
/// `cancel` fires: at most [`MAX_ADMITTING`] handshakes at once.
pub(crate) fn spawn_admission(
    handed: mpsc::Receiver<HandedOff>,
    admission: Admission,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let limits = crate::serve::Limits::dropping(MAX_ADMITTING);
    crate::serve::each(handed, limits, "bulk admission", tracker, cancel, move |h: HandedOff| {
        let admission = admission.clone();
        let path = match h.via {
            Via::Tcp => DIRECT,
            Via::Circuit => RELAYED,
        };
        Some(async move { admission.admit(h.socket, path, h.ip).await })
    });
}

/// Takes admitted bulk connections, reads each one's request, and hands those for an offered
/// service that their peer may use to the service ([`super::Inbound`]).
pub(crate) struct Acceptor {
    pub(crate) registry: Registry,
    pub(crate) revocations: Revocations,
    pub(crate) access: AccessList,
    pub(crate) metrics: Metrics,
}

impl Acceptor {
    /// Runs until `cancel` fires: at most [`MAX_ACTIVE`] bulk connections at once, from their
    /// request to their end. Their peers were authorized when admitted; one whose access was
    /// revoked since is dropped here.
    pub(crate) fn spawn(
        self,
        admitted: mpsc::Receiver<Admitted>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let active = Arc::new(Semaphore::new(MAX_ACTIVE));
        let me = Arc::new(self);
        let limits = crate::serve::Limits::dropping(MAX_ACTIVE).within(SETUP_TIMEOUT);
        crate::serve::each(
            admitted,
            limits,
            "bulk request",
            tracker,
            cancel,
            move |conn: Admitted| {
                let Ok(place) = active.clone().try_acquire_owned() else {
                    tracing::debug!(peer = %conn.peer, "too many bulk connections; closing one");
                    return None;
                };
                // Tracked before the check: a revocation (access list first, then
                // `Revocations::revoke`) either fails the check or finds the connection.
                let Admitted { peer, io, path, held } = conn;
                let held = std::iter::once(Held::Slot(place)).chain(held.map(Held::Ip)).collect();
                let io = me.revocations.guard(peer, io, held);
                if !me.access.is_authorized(&peer) {
                    tracing::debug!(%peer, "access revoked since admission; bulk connection dropped");
                    return None;
                }
                let me = me.clone();
                Some(async move { me.serve(peer, io, path).await })
            },
        );
    }

    /// Reads the request and hands the connection to its service, or answers it.
    async fn serve(&self, peer: PeerId, mut io: ServiceIo, path: &'static str) {
        let name = match read_request(&mut io).await {
            Ok(name) => name,
            Err(e) => return tracing::debug!(%peer, error = %e, "bad bulk request"),
        };
        if name.is_empty() {
            // A probe: the client (authorized, as admitted) is checking that this address
            // takes bulk connections.
            return last_answer(io, Answer::Ok).await;
        }
        // The name is the peer's choice: none that a config could not hold goes further (it
        // would not be offered anyway), and what is logged of it is escaped (Debug), so that no
        // name can forge a log line.
        if crate::label::validate(&name).is_err() {
            tracing::debug!(%peer, service = ?name, "bulk request for an invalid service name; refused");
            return last_answer(io, Answer::Refused).await;
        }
        let entry = self.registry.get(&name);
        let Some(entry) = entry.filter(|e| (e.filter)(&peer)) else {
            self.metrics.auth_denials.inc();
            tracing::warn!(target: "audit", %peer, service = ?name, "auth_decision: bulk connection refused (peer not allowed or no such service)");
            return last_answer(io, Answer::Refused).await;
        };
        let inbound = super::Inbound::bulk(peer, path, io, self.metrics.clone());
        if let Err(e) = entry.queue.try_send(inbound) {
            tracing::debug!(%peer, service = %name, "service queue full; bulk connection refused");
            e.into_inner().unavailable().await;
        }
    }
}

/// Sends a last answer (a refusal, or a probe's `Ok`) and closes the connection.
pub(crate) async fn last_answer(mut io: ServiceIo, answer: Answer) {
    if io.write_all(&[answer as u8]).await.is_ok() {
        let _ = io.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    /// Log output, kept.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Serves one request for `service` from an authorized peer; returns the answer and what
    /// was logged.
    async fn request(service: &str, metrics: &Metrics) -> (Option<u8>, String) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let (ours, theirs) = tokio::io::duplex(1024);
        let acceptor = Acceptor {
            registry: Registry::default(),
            revocations: Revocations::default(),
            access: AccessList::open(),
            metrics: metrics.clone(),
        };
        let mut ours = ours.compat();
        ours.write_all(&encode_request(service).unwrap()).await.unwrap();
        acceptor.serve(PeerId::random(), Box::new(theirs.compat()), DIRECT).await;
        let mut answer = Vec::new();
        let _ = ours.read_to_end(&mut answer).await;
        let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        (answer.first().copied(), logs)
    }

    #[tokio::test]
    async fn a_service_name_cannot_forge_log_lines() {
        let metrics = Metrics::default();
        let forged = "ssh\n2025-01-01T00:00:00Z  WARN audit: auth_decision: forged";
        let (answer, logs) = request(forged, &metrics).await;
        assert_eq!(answer, Some(Answer::Refused as u8));
        assert!(logs.lines().all(|l| !l.starts_with("2025-01-01")), "a forged line: {logs}");
        assert!(logs.contains(r"ssh\n2025"), "logged, escaped: {logs}");
        assert_eq!(metrics.auth_denials.get(), 0, "malformed, not an authorization decision");
        // A well-formed name that is not offered is refused for audit, quoted.
        let (answer, logs) = request("nope", &metrics).await;
        assert_eq!(answer, Some(Answer::Refused as u8));
        assert!(logs.contains("service=\"nope\""), "{logs}");
        assert_eq!(metrics.auth_denials.get(), 1);
    }

    #[tokio::test]
    async fn requests_round_trip_and_garbage_is_an_error() {
        let bytes = encode_request("ssh").unwrap();
        assert_eq!(read_request(&mut bytes.as_slice()).await.unwrap(), "ssh");
        for bad in [&[][..], &[1][..], &[2, 0][..], &[1, 5, b'a'][..], &[1, 2, 0xff, 0xfe][..]] {
            let mut r = bad;
            assert!(read_request(&mut r).await.is_err(), "{bad:?}");
        }
        assert!(encode_request(&"x".repeat(300)).is_err());
        assert_eq!(decode_request(&bytes).unwrap(), "ssh");
        let err = decode_request(&[1, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("trailing"), "{err}");
    }
}
