//! The relay's side: minting tokens for authorized pairs, joining the two legs that present them,
//! and copying between them within the relay's circuit limits.
//!
//! What one peer, or one address, can make the relay hold is bounded:
//! - A leg that has not sent its token yet is anyone's TCP connection, so these are bounded in
//!   total and per source address ([`RelayLimits::max_connections_per_ip`]).
//! - A pair waiting for its legs counts against the peer that asked for it (its *source*), in
//!   total and per peer, from the request on; against the *target* only once the two legs are
//!   joined. A dialer that asks for tokens and never uses them spends its own quota, not the
//!   target's.
//! - Each side gets a token of its own, so the pair is joined only by the target's leg and the
//!   dialer's: a dialer cannot present both, join itself and so hold the target's quota.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod requests;

pub(crate) use requests::serve;

use super::PAIRING_TIMEOUT;
use super::wire::{self, Status, TOKEN_LEN, Token};
use crate::metrics::Metrics;
use crate::relay::RelayLimits;
use crate::tunnel::bulk::ServiceIo;

/// Each direction of a joined pair copies through a buffer this large.
const BUFFER: usize = 64 * 1024;
/// Legs that may be reading their token at once, per pair the limits allow.
const UNNAMED_PER_PAIR: usize = 2;

/// The relay's leg pairs: those waiting for their legs, and how many each peer holds.
#[derive(Clone)]
pub(crate) struct Legs(Arc<Shared>);

struct Shared {
    limits: RelayLimits,
    /// Legs still sending their token, by source address (`None`: not known).
    unnamed: Mutex<Counts<Option<IpAddr>>>,
    pending: Mutex<Pending>,
    /// Pairs held (waiting or joined) in total, and per peer: a pair counts for its source from
    /// the request on, for its target once joined.
    held: Mutex<Counts<PeerId>>,
    metrics: Metrics,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// How many are held in total, and per key.
struct Counts<K> {
    total: usize,
    per: HashMap<K, usize>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self { total: 0, per: HashMap::new() }
    }
}

impl<K: Hash + Eq> Counts<K> {
    fn of(&self, key: &K) -> usize {
        self.per.get(key).copied().unwrap_or(0)
    }

    fn add(&mut self, key: K) {
        *self.per.entry(key).or_default() += 1;
    }

    fn remove(&mut self, key: &K) {
        if let Some(n) = self.per.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.per.remove(key);
            }
        }
    }
}

/// The pairs waiting for their legs.
#[derive(Default)]
struct Pending {
    /// By the dialer's token.
    pairs: HashMap<Token, Pair>,
    /// The target's token of each pair, to the dialer's.
    targets: HashMap<Token, Token>,
}

impl Pending {
    /// Removes a pair (by the dialer's token) and its target's token.
    fn remove(&mut self, dialer: &Token) -> Option<Pair> {
        let pair = self.pairs.remove(dialer)?;
        self.targets.remove(&pair.target_token);
        Some(pair)
    }
}

struct Pair {
    claim: Claim,
    target: PeerId,
    target_token: Token,
    /// The leg that came first, and whose it is.
    waiting: Option<(Side, ServiceIo)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Dialer,
    Target,
}

/// A pair's place within the limits, given back on drop.
struct Claim {
    shared: Arc<Shared>,
    source: PeerId,
    /// Set once the pair is joined.
    target: Option<PeerId>,
}

impl Claim {
    /// Counts the pair against `target` too, unless it holds as many as it may.
    fn join(&mut self, target: PeerId) -> bool {
        let mut held = lock(&self.shared.held);
        if held.of(&target) >= self.shared.limits.max_circuits_per_peer {
            return false;
        }
        held.add(target);
        self.target = Some(target);
        true
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = lock(&self.shared.held);
        held.total = held.total.saturating_sub(1);
        held.remove(&self.source);
        if let Some(target) = &self.target {
            held.remove(target);
        }
    }
}

/// A leg's place among those still sending their token, given back on drop.
struct Unnamed {
    shared: Arc<Shared>,
    from: Option<IpAddr>,
}

impl Drop for Unnamed {
    fn drop(&mut self) {
        let mut unnamed = lock(&self.shared.unnamed);
        unnamed.total = unnamed.total.saturating_sub(1);
        unnamed.remove(&self.from);
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
        Self(Arc::new(Shared {
            limits,
            unnamed: Mutex::default(),
            pending: Mutex::default(),
            held: Mutex::default(),
            metrics,
            tracker,
            cancel,
        }))
    }

    /// A place for a pair that `source` asks for, if the limits allow one more. `target` is
    /// not counted yet, only checked: a target that holds as many pairs as it may is not
    /// asked.
    fn claim(&self, source: PeerId, target: PeerId) -> Option<Claim> {
        let limits = &self.0.limits;
        let mut held = lock(&self.0.held);
        if held.total >= limits.max_circuits
            || held.of(&source) >= limits.max_circuits_per_peer
            || held.of(&target) >= limits.max_circuits_per_peer
        {
            return None;
        }
        held.total += 1;
        held.add(source);
        Some(Claim { shared: self.0.clone(), source, target: None })
    }

    /// Mints the tokens of a pair from `source` to `target`: the dialer's, then the target's.
    /// They are forgotten after [`PAIRING_TIMEOUT`] unless both legs came.
    pub(crate) fn expect(&self, source: PeerId, target: PeerId) -> Result<(Token, Token), Status> {
        let claim = self.claim(source, target).ok_or(Status::Busy)?;
        let dialer = wire::token().map_err(|_| Status::Busy)?;
        let target_token = wire::token().map_err(|_| Status::Busy)?;
        let pair = Pair { claim, target, target_token, waiting: None };
        let mut pending = lock(&self.0.pending);
        pending.pairs.insert(dialer, pair);
        pending.targets.insert(target_token, dialer);
        drop(pending);
        let (legs, cancel) = (self.clone(), self.0.cancel.clone());
        self.0.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(PAIRING_TIMEOUT) => {}
            }
            legs.forget(&dialer);
        });
        Ok((dialer, target_token))
    }

    /// Forgets a pair by its dialer's token (closing a leg that waited on it).
    pub(crate) fn forget(&self, dialer: &Token) {
        let gone = lock(&self.0.pending).remove(dialer);
        drop(gone);
    }

    /// A place for a leg from `from` among those still sending their token.
    fn unnamed(&self, from: Option<IpAddr>) -> Option<Unnamed> {
        let limits = &self.0.limits;
        let mut unnamed = lock(&self.0.unnamed);
        if unnamed.total >= UNNAMED_PER_PAIR * limits.max_circuits.max(1)
            || unnamed.of(&from) >= limits.max_connections_per_ip.max(1)
        {
            return None;
        }
        unnamed.total += 1;
        unnamed.add(from);
        Some(Unnamed { shared: self.0.clone(), from })
    }

    /// Takes the legs that the relay's TCP listener hands off (named [`super::SECURITY`]), until
    /// the relay stops.
    pub(crate) fn take_handoffs(&self, mut handed: mpsc::Receiver<crate::transport::HandedOff>) {
        let (legs, cancel) = (self.clone(), self.0.cancel.clone());
        self.0.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    next = handed.recv() => next,
                };
                let Some(h) = next else { break };
                legs.accept(h.socket, h.ip);
            }
        });
    }

    /// Takes a leg that negotiated [`super::SECURITY`] on the relay's TCP listener: reads its
    /// token, then joins it to the other leg or waits for it. `from` is the leg's source address
    /// (`None`: not known), which bounds the legs one address may hold before they name a pair.
    pub(crate) fn accept<C>(&self, mut leg: C, from: Option<IpAddr>)
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(place) = self.unnamed(from.map(crate::per_key::source_key)) else {
            return tracing::debug!(?from, "too many relay legs without a token; one closed");
        };
        let legs = self.clone();
        self.0.tracker.spawn(async move {
            let mut token = [0u8; TOKEN_LEN];
            let read = tokio::time::timeout(PAIRING_TIMEOUT, leg.read_exact(&mut token)).await;
            drop(place);
            match read {
                Ok(Ok(())) => legs.arrive(token, Box::new(leg)),
                _ => tracing::debug!(?from, "relay leg sent no token"),
            }
        });
    }

    fn arrive(&self, token: Token, leg: ServiceIo) {
        let mut pending = lock(&self.0.pending);
        let (side, dialer) = match pending.targets.get(&token) {
            Some(dialer) => (Side::Target, *dialer),
            None => (Side::Dialer, token),
        };
        let Some(pair) = pending.pairs.get_mut(&dialer) else {
            return tracing::debug!("relay leg with an unknown token; closed");
        };
        let first = match pair.waiting.take() {
            None => {
                pair.waiting = Some((side, leg));
                return;
            }
            Some((first_side, first)) if first_side == side => {
                pair.waiting = Some((first_side, first));
                return tracing::debug!(?side, "a second relay leg with the same token; closed");
            }
            Some((_, first)) => first,
        };
        let Some(mut pair) = pending.remove(&dialer) else { return };
        drop(pending);
        let (a, b) = (pair.claim.source, pair.target);
        if !pair.claim.join(b) {
            return tracing::debug!(%a, %b, "the target is at its relay leg limit; pair closed");
        }
        self.0.metrics.relay_legs.inc();
        let shared = self.0.clone();
        self.0.tracker.spawn(async move {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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

    /// A leg that presents `token`: its peer's end.
    async fn leg_with(l: &Legs, token: &Token) -> tokio::io::DuplexStream {
        let (relay_end, mut peer_end) = leg();
        l.accept(relay_end, None);
        peer_end.write_all(token).await.unwrap();
        peer_end
    }

    /// Whether the relay has closed the leg whose peer's end this is (a closed duplex reads
    /// its end at once; an open, silent one is pending).
    fn closed(peer_end: &mut tokio::io::DuplexStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(peer_end.read(&mut byte).now_or_never(), Some(Ok(0) | Err(_)))
    }

    /// A pair `source` → `target`, joined: both legs' peer ends, the dialer's first.
    async fn joined(
        l: &Legs,
        source: PeerId,
        target: PeerId,
    ) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (dialer, theirs) = l.expect(source, target).unwrap();
        let mut a = leg_with(l, &dialer).await;
        let mut b = leg_with(l, &theirs).await;
        a.write_all(b"j").await.unwrap();
        let mut j = [0u8; 1];
        b.read_exact(&mut j).await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn the_dialers_leg_and_the_targets_are_joined_both_ways() {
        let l = legs(8, 8, u64::MAX);
        let (dialer, theirs) = l.expect(PeerId::random(), PeerId::random()).unwrap();
        assert_ne!(dialer, theirs, "each side gets a token of its own");
        let mut a_peer = leg_with(&l, &dialer).await;
        a_peer.write_all(b"early bytes wait for the other leg ").await.unwrap();
        // A stranger's token is dropped: its leg is closed.
        let mut c_peer = leg_with(&l, &[0u8; TOKEN_LEN]).await;
        let mut buf = Vec::new();
        c_peer.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "an unknown token's leg is closed");
        let mut b_peer = leg_with(&l, &theirs).await;
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
        assert_eq!(lock(&l.0.held).total, 0, "the pair's place is given back");
        assert!(lock(&l.0.held).per.is_empty());
    }

    /// A dialer that presents its own token twice is not joined to itself (and so cannot hold
    /// the target's share of the limits without the target).
    #[tokio::test]
    async fn a_dialer_cannot_join_itself() {
        let l = legs(8, 8, u64::MAX);
        let (dialer, theirs) = l.expect(PeerId::random(), PeerId::random()).unwrap();
        let mut first = leg_with(&l, &dialer).await;
        let mut second = leg_with(&l, &dialer).await;
        let mut buf = Vec::new();
        second.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "the second leg with the same token is closed");
        assert!(!closed(&mut first), "the first one still waits");
        let mut target = leg_with(&l, &theirs).await;
        first.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        target.read_exact(&mut one).await.unwrap();
        assert_eq!(l.0.metrics.relay_legs.get(), 1, "joined with the target's leg");
    }

    #[tokio::test]
    async fn limits_in_total_and_per_peer() {
        let l = legs(3, 2, u64::MAX);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (t1, _) = l.expect(a, b).unwrap();
        l.expect(a, c).unwrap();
        assert_eq!(l.expect(a, b), Err(Status::Busy), "a asked for two");
        l.expect(b, c).unwrap();
        assert_eq!(l.expect(c, PeerId::random()), Err(Status::Busy), "three in total");
        l.forget(&t1);
        l.expect(PeerId::random(), PeerId::random()).unwrap();
    }

    /// Tokens a dialer asks for and never uses count against the dialer alone: the target
    /// still takes pairs from others. Joined pairs count against the target too.
    #[tokio::test]
    async fn unused_tokens_do_not_block_the_target() {
        let l = legs(64, 2, u64::MAX);
        let (mallory, target) = (PeerId::random(), PeerId::random());
        l.expect(mallory, target).unwrap();
        l.expect(mallory, target).unwrap();
        assert_eq!(l.expect(mallory, target), Err(Status::Busy), "mallory's own quota");
        let (alice, bob) = (PeerId::random(), PeerId::random());
        let _one = joined(&l, alice, target).await;
        let _two = joined(&l, bob, target).await;
        assert_eq!(l.0.metrics.relay_legs.get(), 2);
        assert_eq!(lock(&l.0.held).of(&target), 2, "joined pairs count for the target");
        assert_eq!(l.expect(PeerId::random(), target), Err(Status::Busy), "the target's quota");
        assert_eq!(l.expect(target, PeerId::random()), Err(Status::Busy), "as either side");
    }

    /// Two dialers each get a token to the same target while it has one place left: only the
    /// first pair to be joined takes it; the other is closed when its legs meet.
    #[tokio::test]
    async fn the_target_is_counted_when_joined() {
        let l = legs(64, 1, u64::MAX);
        let target = PeerId::random();
        let first = l.expect(PeerId::random(), target).unwrap();
        let second = l.expect(PeerId::random(), target).unwrap();
        let mut a = leg_with(&l, &first.0).await;
        let mut b = leg_with(&l, &first.1).await;
        a.write_all(b"j").await.unwrap();
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.unwrap();
        let _c = leg_with(&l, &second.0).await;
        let mut d = leg_with(&l, &second.1).await;
        let mut buf = Vec::new();
        d.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "the second pair is closed: the target holds one");
        assert!(!closed(&mut b), "the first pair stays joined");
        assert_eq!(l.0.metrics.relay_legs.get(), 1);
    }

    #[tokio::test]
    async fn legs_without_a_token_are_bounded_in_total() {
        let l = legs(1, 1, u64::MAX);
        let mut ends = Vec::new();
        for i in 0..=UNNAMED_PER_PAIR {
            let (relay_end, peer_end) = leg();
            l.accept(relay_end, Some(IpAddr::from([10, 0, 0, i as u8])));
            ends.push(peer_end);
        }
        assert_eq!(lock(&l.0.unnamed).total, UNNAMED_PER_PAIR);
        let (last, held) = ends.split_last_mut().unwrap();
        assert!(closed(last), "the leg beyond the bound is closed at once");
        assert!(held.iter_mut().all(|e| !closed(e)));
    }

    /// One address cannot hold every place for legs without a token: beyond its share its
    /// legs are closed at once, while another address still gets in.
    #[tokio::test]
    async fn legs_without_a_token_are_bounded_per_address() {
        let limits =
            RelayLimits { max_circuits: 64, max_connections_per_ip: 3, ..Default::default() };
        let l = Legs::new(limits, Metrics::default(), TaskTracker::new(), CancellationToken::new());
        let (flood, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut ends = Vec::new();
        for _ in 0..4 {
            let (relay_end, peer_end) = leg();
            l.accept(relay_end, Some(flood));
            ends.push(peer_end);
        }
        let (relay_end, mut other_end) = leg();
        l.accept(relay_end, Some(other));
        let (last, held) = ends.split_last_mut().unwrap();
        assert!(closed(last), "the fourth leg from one address is closed at once");
        assert!(held.iter_mut().all(|e| !closed(e)), "the first three wait for their tokens");
        assert!(!closed(&mut other_end), "another address gets in");
        assert_eq!(lock(&l.0.unnamed).of(&Some(flood)), 3);
        assert_eq!(lock(&l.0.unnamed).of(&Some(other)), 1);
        // Legs that close give their places back.
        drop((ends, other_end));
        l.0.tracker.close();
        l.0.tracker.wait().await;
        assert_eq!(lock(&l.0.unnamed).total, 0);
        assert!(lock(&l.0.unnamed).per.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unclaimed_token_expires_and_a_waiting_leg_is_closed() {
        let l = legs(8, 8, u64::MAX);
        let (token, _) = l.expect(PeerId::random(), PeerId::random()).unwrap();
        let mut a_peer = leg_with(&l, &token).await;
        let mut buf = Vec::new();
        a_peer.read_to_end(&mut buf).await.unwrap();
        let pending = lock(&l.0.pending);
        assert!(buf.is_empty() && pending.pairs.is_empty() && pending.targets.is_empty());
        assert_eq!(lock(&l.0.held).total, 0);
        assert!(lock(&l.0.held).per.is_empty());
    }

    #[tokio::test]
    async fn the_data_limit_ends_a_pair() {
        let l = legs(8, 8, 1000);
        let (dialer, theirs) = l.expect(PeerId::random(), PeerId::random()).unwrap();
        let mut a_peer = leg_with(&l, &dialer).await;
        let mut b_peer = leg_with(&l, &theirs).await;
        let _ = a_peer.write_all(&[7u8; 5000]).await;
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert!(got.len() <= 1000, "{} bytes went through a 1000-byte limit", got.len());
    }
}
