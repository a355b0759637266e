//! The relay's side: minting tokens for authorized pairs, joining the two legs that present one,
//! and copying between them within the relay's circuit limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{self, Status, TOKEN_LEN, Token};
use super::{INCOMING, LegError, OPEN, PAIRING_TIMEOUT};
use crate::bulk::ServiceIo;
use crate::gate::AccessList;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::relay::RelayLimits;
use crate::streams::IncomingStream;

/// Each direction of a joined pair copies through a buffer this large.
const BUFFER: usize = 64 * 1024;
/// Legs that may be reading their token at once, per pair the limits allow.
const UNNAMED_PER_PAIR: usize = 2;
/// Requests for leg pairs handled at once; more wait in the stream queue.
const CONCURRENT_REQUESTS: usize = 64;

/// The relay's leg pairs: those waiting for their legs, and how many each peer holds.
#[derive(Clone)]
pub(crate) struct Legs(Arc<Shared>);

struct Shared {
    limits: RelayLimits,
    /// Legs still sending their token: a leg holds no claim until its token names a pair, so
    /// these are bounded on their own.
    unnamed: Arc<Semaphore>,
    pending: Mutex<HashMap<Token, Pending>>,
    /// Pairs held (waiting or joined), in total and per peer (each pair counts for both peers).
    held: Mutex<(usize, HashMap<PeerId, usize>)>,
    metrics: Metrics,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

struct Pending {
    claim: Claim,
    /// The leg that came first.
    waiting: Option<ServiceIo>,
}

/// A pair's place within the limits, given back on drop.
struct Claim {
    shared: Arc<Shared>,
    peers: [PeerId; 2],
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = lock(&self.shared.held);
        held.0 = held.0.saturating_sub(1);
        for p in &self.peers {
            if let Some(n) = held.1.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    held.1.remove(p);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Legs {
    pub(crate) fn new(
        limits: RelayLimits,
        metrics: Metrics,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let unnamed = Arc::new(Semaphore::new(UNNAMED_PER_PAIR * limits.max_circuits.max(1)));
        Self(Arc::new(Shared {
            unnamed,
            limits,
            pending: Mutex::default(),
            held: Mutex::default(),
            metrics,
            tracker,
            cancel,
        }))
    }

    /// A place for a pair of `a` and `b`, if the limits allow one more.
    fn claim(&self, a: PeerId, b: PeerId) -> Option<Claim> {
        let limits = &self.0.limits;
        let mut held = lock(&self.0.held);
        let per = |p: &PeerId| held.1.get(p).copied().unwrap_or(0);
        if held.0 >= limits.max_circuits
            || per(&a) >= limits.max_circuits_per_peer
            || per(&b) >= limits.max_circuits_per_peer
        {
            return None;
        }
        held.0 += 1;
        *held.1.entry(a).or_default() += 1;
        *held.1.entry(b).or_default() += 1;
        Some(Claim { shared: self.0.clone(), peers: [a, b] })
    }

    /// Mints a token for a pair from `source` to `target`; it is forgotten after
    /// [`PAIRING_TIMEOUT`] unless both legs came.
    pub(crate) fn expect(&self, source: PeerId, target: PeerId) -> Result<Token, Status> {
        let claim = self.claim(source, target).ok_or(Status::Busy)?;
        let token = wire::token().map_err(|_| Status::Busy)?;
        lock(&self.0.pending).insert(token, Pending { claim, waiting: None });
        let (legs, cancel) = (self.clone(), self.0.cancel.clone());
        self.0.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(PAIRING_TIMEOUT) => {}
            }
            legs.forget(&token);
        });
        Ok(token)
    }

    /// Forgets a token (closing a leg that waited on it).
    pub(crate) fn forget(&self, token: &Token) {
        let gone = lock(&self.0.pending).remove(token);
        drop(gone);
    }

    /// Takes a leg that negotiated [`super::SECURITY`] on the relay's TCP listener: reads its
    /// token, then joins it to the other leg or waits for it.
    pub(crate) fn accept<C>(&self, mut leg: C)
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Ok(permit) = self.0.unnamed.clone().try_acquire_owned() else {
            return tracing::debug!("too many relay legs without a token; one closed");
        };
        let legs = self.clone();
        self.0.tracker.spawn(async move {
            let mut token = [0u8; TOKEN_LEN];
            let read = tokio::time::timeout(PAIRING_TIMEOUT, leg.read_exact(&mut token)).await;
            drop(permit);
            match read {
                Ok(Ok(())) => legs.arrive(token, Box::new(leg)),
                _ => tracing::debug!("relay leg sent no token"),
            }
        });
    }

    fn arrive(&self, token: Token, leg: ServiceIo) {
        let mut pending = lock(&self.0.pending);
        let Some(pair) = pending.get_mut(&token) else {
            return tracing::debug!("relay leg with an unknown token; closed");
        };
        let Some(first) = pair.waiting.take() else {
            pair.waiting = Some(leg);
            return;
        };
        let Some(pair) = pending.remove(&token) else { return };
        drop(pending);
        self.0.metrics.relay_legs.inc();
        let shared = self.0.clone();
        self.0.tracker.spawn(async move {
            let [a, b] = pair.claim.peers;
            let budget = AtomicU64::new(shared.limits.circuit_bytes);
            let join = join(first, leg, &budget);
            let result = tokio::select! {
                () = shared.cancel.cancelled() => Ok(()),
                r = tokio::time::timeout(shared.limits.circuit_duration, join) => {
                    r.unwrap_or_else(|_| Err(std::io::Error::other("the duration limit was reached")))
                }
            };
            tracing::debug!(%a, %b, ?result, "relay legs parted");
            drop(pair.claim);
        });
    }
}

/// Copies both ways between two legs until both directions end (or one fails, or together they
/// carried `budget` bytes).
async fn join(a: ServiceIo, b: ServiceIo, budget: &AtomicU64) -> std::io::Result<()> {
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    futures::future::try_join(forward(ar, bw, budget), forward(br, aw, budget)).await?;
    Ok(())
}

async fn forward<R, W>(mut r: R, mut w: W, budget: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.close().await;
        }
        let spend = n as u64;
        if budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(spend))
            .is_err()
        {
            return Err(std::io::Error::other("the data limit was reached"));
        }
        w.write_all(&buf[..n]).await?;
    }
}

/// Serves [`OPEN`] requests from the peers `access` allows, on the relay `node`.
pub(crate) fn serve(node: Node, legs: Legs, access: AccessList) {
    let filter_access = access.clone();
    let requests = node.accept_from(
        StreamProtocol::new(OPEN),
        Arc::new(move |peer: &PeerId| filter_access.is_allowed(peer)),
    );
    let (tracker, cancel) = (legs.0.tracker.clone(), legs.0.cancel.clone());
    let what = "relay leg request";
    crate::streams::serve_each(
        requests,
        CONCURRENT_REQUESTS,
        PAIRING_TIMEOUT,
        what,
        &tracker,
        cancel,
        move |request| {
            let (node, legs, access) = (node.clone(), legs.clone(), access.clone());
            async move { answer(&node, &legs, &access, request).await }
        },
    );
}

async fn answer(
    node: &Node,
    legs: &Legs,
    access: &AccessList,
    request: IncomingStream,
) -> Result<(), LegError> {
    let (source, mut stream) = (request.peer, request.stream);
    let result = async {
        let (target, _) = wire::read_hello(&mut stream, false).await?;
        let outcome = pair(node, legs, access, source, target).await;
        let (status, token) = match outcome {
            Ok(token) => (Status::Ok, Some(token)),
            Err(status) => (status, None),
        };
        tracing::debug!(%source, %target, ?status, "relay leg request");
        wire::write_answer(&mut stream, status, token.as_ref()).await?;
        Ok::<_, LegError>(())
    }
    .await;
    let _ = stream.close().await;
    result
}

/// Mints a token for `source` → `target` and tells `target`.
async fn pair(
    node: &Node,
    legs: &Legs,
    access: &AccessList,
    source: PeerId,
    target: PeerId,
) -> Result<Token, Status> {
    if target == source || !access.is_allowed(&target) {
        return Err(Status::Refused);
    }
    let paths = node.paths(target).await.unwrap_or_default();
    if !paths.iter().any(|p| !p.relayed && !p.is_quic()) {
        return Err(Status::Unreachable);
    }
    let token = legs.expect(source, target)?;
    let told = async {
        let (mut s, _) = node
            .open_stream(target, StreamProtocol::new(INCOMING))
            .await
            .map_err(|e| LegError::Io(e.to_string()))?;
        s.write_all(&wire::encode_hello(&source, Some(&token))).await?;
        s.flush().await?;
        let answer = wire::read_answer(&mut s, false).await;
        let _ = s.close().await;
        answer
    };
    match told.await {
        Ok(_) => Ok(token),
        Err(e) => {
            tracing::debug!(%target, error = %e, "the target took no relay leg");
            legs.forget(&token);
            Err(match e {
                LegError::Refused(_) => Status::Refused,
                _ => Status::Unreachable,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    fn legs(max_circuits: usize, per_peer: usize, bytes: u64) -> Legs {
        let limits = RelayLimits {
            max_circuits,
            max_circuits_per_peer: per_peer,
            circuit_bytes: bytes,
            ..RelayLimits::default()
        };
        Legs::new(limits, Metrics::default(), TaskTracker::new(), CancellationToken::new())
    }

    /// A leg as the relay sees it, and its peer's end.
    fn leg() -> (tokio_util::compat::Compat<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (relay_end, peer_end) = tokio::io::duplex(256 * 1024);
        (relay_end.compat(), peer_end)
    }

    #[tokio::test]
    async fn two_legs_with_one_token_are_joined_both_ways() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = legs(8, 8, u64::MAX);
        let token = l.expect(PeerId::random(), PeerId::random()).unwrap();
        let (a, mut a_peer) = leg();
        let (b, mut b_peer) = leg();
        // A stranger's token is dropped: its leg is closed.
        let (c, mut c_peer) = leg();
        l.accept(a);
        a_peer.write_all(&token).await.unwrap();
        a_peer.write_all(b"early bytes wait for the other leg ").await.unwrap();
        l.accept(c);
        c_peer.write_all(&[0u8; TOKEN_LEN]).await.unwrap();
        let mut buf = Vec::new();
        c_peer.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "an unknown token's leg is closed");
        l.accept(b);
        b_peer.write_all(&token).await.unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (sent, back) = (payload.clone(), payload.clone());
        let writer = tokio::spawn(async move {
            a_peer.write_all(&sent).await.unwrap();
            a_peer.shutdown().await.unwrap();
            let mut got = Vec::new();
            a_peer.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        let mut want = b"early bytes wait for the other leg ".to_vec();
        want.extend_from_slice(&payload);
        assert!(got == want, "b got {} bytes, want {}", got.len(), want.len());
        b_peer.write_all(&back).await.unwrap();
        b_peer.shutdown().await.unwrap();
        assert!(writer.await.unwrap() == payload, "the other way, after a half-close");
        assert_eq!(l.0.metrics.relay_legs.get(), 1);
        l.0.tracker.close();
        l.0.tracker.wait().await;
        assert_eq!(lock(&l.0.held).0, 0, "the pair's place is given back");
    }

    #[tokio::test]
    async fn limits_in_total_and_per_peer() {
        let l = legs(3, 2, u64::MAX);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t1 = l.expect(a, b).unwrap();
        l.expect(a, c).unwrap();
        assert_eq!(l.expect(a, b), Err(Status::Busy), "a holds two");
        l.expect(b, c).unwrap();
        assert_eq!(l.expect(c, PeerId::random()), Err(Status::Busy), "three in total");
        l.forget(&t1);
        l.expect(PeerId::random(), PeerId::random()).unwrap();
    }

    #[tokio::test]
    async fn legs_that_name_no_pair_are_bounded() {
        let l = legs(1, 1, u64::MAX);
        let silent: Vec<_> = (0..UNNAMED_PER_PAIR + 1).map(|_| leg()).collect();
        let mut ends = Vec::new();
        for (relay_end, peer_end) in silent {
            l.accept(relay_end);
            ends.push(peer_end);
        }
        assert_eq!(l.0.unnamed.available_permits(), 0);
        use tokio::io::AsyncReadExt as _;
        let mut buf = Vec::new();
        let last = ends.last_mut().unwrap();
        last.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "the leg beyond the bound is closed at once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unclaimed_token_expires_and_a_waiting_leg_is_closed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = legs(8, 8, u64::MAX);
        let token = l.expect(PeerId::random(), PeerId::random()).unwrap();
        let (a, mut a_peer) = leg();
        l.accept(a);
        a_peer.write_all(&token).await.unwrap();
        let mut buf = Vec::new();
        a_peer.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty() && lock(&l.0.pending).is_empty());
        assert_eq!(lock(&l.0.held).0, 0);
    }

    #[tokio::test]
    async fn the_data_limit_ends_a_pair() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = legs(8, 8, 1000);
        let token = l.expect(PeerId::random(), PeerId::random()).unwrap();
        let ((a, mut a_peer), (b, mut b_peer)) = (leg(), leg());
        l.accept(a);
        l.accept(b);
        a_peer.write_all(&token).await.unwrap();
        b_peer.write_all(&token).await.unwrap();
        let _ = a_peer.write_all(&[7u8; 5000]).await;
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert!(got.len() <= 1000, "{} bytes went through a 1000-byte limit", got.len());
    }
}
