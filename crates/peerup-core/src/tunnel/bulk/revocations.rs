//! Cutting a peer's bulk connections when its access is revoked ([`Revocations`]), as closing its
//! libp2p connection cuts its yamux streams.
//!
//! Bulk connections have no parent connection to close, so each one, inbound ([`super`]'s
//! acceptor) or outbound (`bulk/client.rs`), is wrapped in a [`Revocable`] and tracked by peer.
//! A peer's entry lives only while it has bulk connections open: the last one to end removes it,
//! so the table holds no more entries than there are bulk connections, and inbound ones are
//! tracked only once the peer is known to be authorized.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::ServiceIo;

/// A place in a limit that a bulk connection holds while it lives (and gives back when dropped).
#[expect(dead_code, reason = "held only to be dropped with the connection")]
pub(crate) enum Held {
    /// A bulk slot, the relayed budget or the acceptor's.
    Slot(OwnedSemaphorePermit),
    /// Its source address's place (`bulk/admission.rs`).
    Ip(super::admission::IpTicket),
}

/// A peer with bulk connections open.
struct Tracked {
    token: CancellationToken,
    /// Its bulk connections open.
    open: usize,
    /// Tells this entry from one made for the same peer after a revocation removed this one.
    generation: u64,
}

#[derive(Default)]
struct Table {
    peers: HashMap<PeerId, Tracked>,
    next: u64,
}

/// Cuts a peer's bulk connections when its access is revoked (`Node::disconnect`).
#[derive(Clone, Default)]
pub(crate) struct Revocations(Arc<Mutex<Table>>);

impl Revocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wraps a bulk connection with `peer` so that [`Revocations::revoke`] ends it. `held` is
    /// kept while it lives.
    pub(crate) fn guard(&self, peer: PeerId, io: ServiceIo, held: Vec<Held>) -> ServiceIo {
        let (token, generation) = {
            let mut table = self.lock();
            let Table { peers, next } = &mut *table;
            let tracked = peers.entry(peer).or_insert_with(|| {
                *next += 1;
                Tracked { token: CancellationToken::new(), open: 0, generation: *next }
            });
            tracked.open += 1;
            (tracked.token.child_token(), tracked.generation)
        };
        Box::new(Revocable {
            io,
            read_revoked: Box::pin(token.clone().cancelled_owned()),
            write_revoked: Box::pin(token.cancelled_owned()),
            _held: held,
            _entry: Entry { table: self.clone(), peer, generation },
        })
    }

    /// Ends every bulk connection with `peer`.
    pub(crate) fn revoke(&self, peer: &PeerId) {
        let tracked = self.lock().peers.remove(peer);
        if let Some(t) = tracked {
            t.token.cancel();
        }
    }

    /// How many peers have bulk connections open.
    pub(crate) fn peers(&self) -> usize {
        self.lock().peers.len()
    }
}

/// A bulk connection's place in [`Revocations`]: its peer's entry goes with the last one.
struct Entry {
    table: Revocations,
    peer: PeerId,
    generation: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        let Some(tracked) = table.peers.get_mut(&self.peer) else { return };
        // A revoked peer's entry is gone, and one made since belongs to newer connections.
        if tracked.generation != self.generation {
            return;
        }
        tracked.open = tracked.open.saturating_sub(1);
        if tracked.open == 0 {
            table.peers.remove(&self.peer);
        }
    }
}

/// A bulk connection that fails once its peer's access is revoked. Reading and writing may run in
/// different tasks, so each side waits on its own future (each keeps one waker).
struct Revocable {
    io: ServiceIo,
    read_revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    write_revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Its places in limits, given back when it ends.
    _held: Vec<Held>,
    _entry: Entry,
}

fn check(
    revoked: &mut Pin<Box<WaitForCancellationFutureOwned>>,
    cx: &mut Context<'_>,
) -> std::io::Result<()> {
    match revoked.as_mut().poll(cx) {
        Poll::Ready(()) => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the peer's access was revoked",
        )),
        Poll::Pending => Ok(()),
    }
}

impl AsyncRead for Revocable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        check(&mut this.read_revoked, cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Revocable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        check(&mut this.write_revoked, cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        check(&mut this.write_revoked, cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pipe() -> ServiceIo {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        Box::new(tokio::io::duplex(64).0.compat())
    }

    #[test]
    fn a_peer_is_tracked_while_it_has_connections_open() {
        let r = Revocations::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let first = r.guard(a, pipe(), Vec::new());
        let second = r.guard(a, pipe(), Vec::new());
        let other = r.guard(b, pipe(), Vec::new());
        assert_eq!(r.peers(), 2);
        drop(first);
        assert_eq!(r.peers(), 2, "a still has a connection open");
        drop(second);
        assert_eq!(r.peers(), 1, "a's last connection ended");
        drop(other);
        assert_eq!(r.peers(), 0);
    }

    #[tokio::test]
    async fn revoking_ends_the_connections_and_spares_later_ones() {
        let r = Revocations::default();
        let peer = PeerId::random();
        let mut old = r.guard(peer, pipe(), Vec::new());
        r.revoke(&peer);
        assert_eq!(r.peers(), 0);
        let mut buf = [0u8; 1];
        let err = old.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(old.write_all(b"x").await.is_err());
        // The peer is authorized again and connects anew: the revoked connection ending later
        // must not take the new one's entry with it.
        let new = r.guard(peer, pipe(), Vec::new());
        drop(old);
        assert_eq!(r.peers(), 1, "the new connection is still tracked");
        r.revoke(&peer);
        let mut new = new;
        assert!(new.read(&mut buf).await.is_err(), "and still revocable");
    }
}
