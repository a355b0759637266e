//! A bound on the bytes one connection's streams have handed to yamux but yamux has not yet
//! written to the socket.
//!
//! `yamux::Stream::poll_write` copies each write into a data frame and queues it for the
//! connection: up to 10 frames per stream, within the peer's window. When the socket is the
//! bottleneck and a thousand streams are busy, those queues together hold tens of megabytes
//! (`docs/performance.md`, item 14). Here every stream takes permits from one semaphore per
//! connection before writing, one per byte it hands to yamux, and they come back as the frames'
//! bodies pass into the socket writer, so at most [`WRITE_BUDGET`] bytes wait in the queues. A
//! stream that cannot write (its window or its queue is full) gives its permits back at once, so
//! a stalled stream never holds budget another stream could use.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;

/// Bytes of data frames one connection may have queued but not yet written.
pub const WRITE_BUDGET: usize = 4 * 1024 * 1024;

/// The budget of one connection.
#[derive(Debug)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    /// The budget in bytes.
    size: usize,
    /// Bytes taken by frames that have not reached the socket writer yet.
    queued: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(bytes: usize) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(bytes));
        Arc::new(Self { permits, size: bytes, queued: AtomicUsize::new(0) })
    }

    /// Bytes queued in frames, not yet written.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Permits free to take.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// `n` bytes of frame bodies were written: their permits come back (never more than were
    /// taken, should the count ever disagree).
    fn sent(&self, n: usize) {
        let mut back = 0;
        let _ = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            back = q.min(n);
            Some(q - back)
        });
        if back > 0 {
            self.permits.add_permits(back);
        }
    }
}

/// A yamux stream whose writes draw on its connection's [`Budget`].
///
/// A stream the remote reset, or whose connection died, reads as an error
/// ([`io::ErrorKind::ConnectionReset`]) rather than as yamux's clean end of file, so that a cut
/// stream is never taken for a finished one (a proxied connection would otherwise pass a
/// truncated stream on to its application as complete). Only the remote's `FIN` is a clean end.
pub struct Stream {
    inner: yamux::Stream,
    budget: Arc<Budget>,
    permits: PollSemaphore,
    /// We closed our side: the stream then ends in yamux's closed state after the remote's
    /// `FIN` too, which is a clean end.
    closing: bool,
}

impl Stream {
    pub(crate) fn new(inner: yamux::Stream, budget: &Arc<Budget>) -> Self {
        let permits = PollSemaphore::new(budget.permits.clone());
        Self { inner, budget: budget.clone(), permits, closing: false }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        // yamux ends a stream that was reset (or lost with its connection) as it ends one the
        // remote finished: both read 0. Only a reset leaves the stream closed both ways while
        // our side is still open (a `FIN` leaves it open for our writes).
        if n == 0 && !buf.is_empty() && !self.closing && self.inner.is_closed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the stream was reset",
            )));
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        let this = &mut *self;
        // One frame at most: yamux never takes more in one write.
        let want = buf.len().min(super::SPLIT_SEND_SIZE).min(this.budget.size).max(1) as u32;
        let Some(mut permit) = ready!(this.permits.poll_acquire_many(cx, want)) else {
            // The semaphore is never closed; were it, write unbudgeted rather than fail.
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        let result = Pin::new(&mut this.inner).poll_write(cx, &buf[..want as usize]);
        if let Poll::Ready(Ok(n)) = result
            && let Some(taken) = permit.split(n)
        {
            // These permits come back when the frame's body reaches the socket.
            this.budget.queued.fetch_add(n, Ordering::AcqRel);
            taken.forget();
        }
        // Whatever was not written (a full window or queue: Pending) goes back now.
        drop(permit);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.closing = true;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// yamux frame header: version, type, flags (2), stream ID (4), length (4).
const HEADER: usize = 12;
/// The frame type of data frames, the only ones whose length is a body that follows.
const TYPE_DATA: u8 = 0;

/// Where the writer is in the stream of frames yamux writes.
#[derive(Debug)]
enum Frames {
    Header { bytes: [u8; HEADER], have: usize },
    Body { left: usize },
}

impl Frames {
    fn new() -> Self {
        Frames::Header { bytes: [0; HEADER], have: 0 }
    }

    /// Follows `written` bytes of frames; returns how many of them were data-frame bodies.
    fn follow(&mut self, mut written: &[u8]) -> usize {
        let mut body = 0;
        while !written.is_empty() {
            match self {
                Frames::Header { bytes, have } => {
                    let n = (HEADER - *have).min(written.len());
                    bytes[*have..*have + n].copy_from_slice(&written[..n]);
                    *have += n;
                    written = &written[n..];
                    if *have == HEADER {
                        let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                        *self = if bytes[1] == TYPE_DATA && len > 0 {
                            Frames::Body { left: len as usize }
                        } else {
                            Frames::new()
                        };
                    }
                }
                Frames::Body { left } => {
                    let n = (*left).min(written.len());
                    body += n;
                    *left -= n;
                    written = &written[n..];
                    if *left == 0 {
                        *self = Frames::new();
                    }
                }
            }
        }
        body
    }
}

/// The socket under yamux: counts the data-frame bytes written through it back into the budget.
pub struct Drain<C> {
    inner: C,
    budget: Arc<Budget>,
    frames: Frames,
}

impl<C> Drain<C> {
    pub(crate) fn new(inner: C, budget: &Arc<Budget>) -> Self {
        Self { inner, budget: budget.clone(), frames: Frames::new() }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Drain<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Drain<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        let body = this.frames.follow(&buf[..n]);
        if body > 0 {
            this.budget.sent(body);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, len: u32) -> Vec<u8> {
        let mut h = vec![0, kind, 0, 0, 0, 0, 0, 3];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    /// Data bodies are counted however the writes cut the frames; window updates, pings and
    /// go-aways carry a value in their length field, not a body.
    #[test]
    fn frames_count_data_bodies_only() {
        let mut wire = Vec::new();
        wire.extend(header(TYPE_DATA, 5));
        wire.extend([7; 5]);
        wire.extend(header(1, 262_144)); // window update
        wire.extend(header(2, 99)); // ping
        wire.extend(header(TYPE_DATA, 0)); // SYN/FIN with no body
        wire.extend(header(TYPE_DATA, 300));
        wire.extend([1; 300]);
        wire.extend(header(3, 0)); // go away
        for cut in [1, 5, 11, 12, 13, 64, wire.len()] {
            let mut f = Frames::new();
            let counted: usize = wire.chunks(cut).map(|c| f.follow(c)).sum();
            assert_eq!(counted, 305, "writes of {cut} bytes");
            assert!(matches!(f, Frames::Header { have: 0, .. }), "ends between frames");
        }
    }

    #[test]
    fn sent_never_returns_more_than_was_taken() {
        let b = Budget::new(100);
        let p = b.permits.clone().try_acquire_many_owned(40).unwrap();
        p.forget();
        b.queued.fetch_add(40, Ordering::AcqRel);
        b.sent(25);
        assert_eq!((b.available(), b.queued()), (85, 15));
        b.sent(1_000);
        assert_eq!((b.available(), b.queued()), (100, 0));
    }
}
