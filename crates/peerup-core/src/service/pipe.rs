//! Byte-exact forwarding between a libp2p stream (or a bulk connection) and a TCP socket.
//!
//! Both directions run at once; when one side finishes sending, the other side's write half is
//! shut down (TCP `shutdown(SHUT_WR)`, a yamux/QUIC half-close), and the pipe ends only when both
//! directions are done, so no tail of data is lost at close.
//!
//! Each direction's buffer starts small and doubles whenever a read fills it, up to
//! [`MAX_BUFFER`]: bulk transfers get large writes (and so large yamux frames and TLS records),
//! while a thousand interactive connections cost a few KiB each. Growth beyond the first buffer
//! draws on one budget per process ([`GROWTH_BUDGET`]), so that a thousand busy connections
//! don't each hold 256 KiB: the first ones to need it get large buffers, the rest stay small.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::AsyncReadExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::compat::{FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};
use tokio_util::task::AbortOnDropHandle;

/// The first buffer of each direction.
pub const MIN_BUFFER: usize = 8 * 1024;
/// The largest buffer of each direction.
pub const MAX_BUFFER: usize = 256 * 1024;
/// Bytes all pipes of the process may hold beyond their first buffers.
pub const GROWTH_BUDGET: usize = 32 * 1024 * 1024;

static GROWN: AtomicUsize = AtomicUsize::new(0);

/// Buffer growth drawn from a pool of `budget` bytes, given back on drop.
struct Growth<'a> {
    pool: &'a AtomicUsize,
    budget: usize,
    held: usize,
}

impl<'a> Growth<'a> {
    fn new(pool: &'a AtomicUsize, budget: usize) -> Self {
        Self { pool, budget, held: 0 }
    }

    /// Takes `n` more bytes from the pool, if they are there.
    fn take(&mut self, n: usize) -> bool {
        let budget = self.budget;
        let ok = self
            .pool
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= budget).then_some(used + n)
            })
            .is_ok();
        if ok {
            self.held += n;
        }
        ok
    }
}

impl Drop for Growth<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Copies `r` to `w` until `r` ends, then shuts `w` down. Returns the bytes copied.
///
/// Reading and writing run in two tasks with two buffers handed back and forth, so that the next
/// read (a socket copy) overlaps the current write (TLS encryption and a socket copy) on another
/// core, as yamux's connection task did for streams.
async fn one_way<R, W>(mut r: R, w: W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (full_tx, full_rx) = mpsc::channel::<(Vec<u8>, usize, bool)>(1);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(2);
    let writer = AbortOnDropHandle::new(tokio::spawn(write_all_of(w, full_rx, empty_tx)));
    let mut spare = vec![vec![0u8; MIN_BUFFER], vec![0u8; MIN_BUFFER]];
    let mut growth = Growth::new(&GROWN, GROWTH_BUDGET);
    let mut total = 0u64;
    loop {
        let mut buf = match spare.pop() {
            Some(b) => b,
            None => match empty_rx.recv().await {
                Some(b) => b,
                None => break, // the writer stopped: its result says why
            },
        };
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let grow = n == buf.len() && buf.len() < MAX_BUFFER && growth.take(buf.len());
        if full_tx.send((buf, n, grow)).await.is_err() {
            break;
        }
    }
    drop(full_tx);
    match writer.await {
        Ok(Ok(())) => Ok(total),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// The writing half of [`one_way`]: writes each filled buffer, grows it if asked, hands it back;
/// shuts `w` down when the reader is done.
async fn write_all_of<W>(
    mut w: W,
    mut full: mpsc::Receiver<(Vec<u8>, usize, bool)>,
    empty: mpsc::Sender<Vec<u8>>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some((mut buf, n, grow)) = full.recv().await {
        w.write_all(&buf[..n]).await?;
        if grow {
            buf.resize(buf.len() * 2, 0);
        }
        let _ = empty.send(buf).await;
    }
    w.shutdown().await
}

/// Forwards until both directions are closed. Returns (bytes stream→tcp, bytes tcp→stream).
pub async fn pipe<S>(stream: S, tcp: TcpStream) -> std::io::Result<(u64, u64)>
where
    S: futures::AsyncRead + futures::AsyncWrite + Send + 'static,
{
    // Small writes (keystrokes, request/response protocols) go out at once, as ssh does.
    let _ = tcp.set_nodelay(true);
    let (stream_r, stream_w) = stream.split();
    let (tcp_r, tcp_w) = tcp.into_split();
    tokio::try_join!(one_way(stream_r.compat(), tcp_w), one_way(tcp_r, stream_w.compat_write()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_way_copies_exactly_and_grows_its_buffer() {
        let payload: Vec<u8> = (0..(3 * MAX_BUFFER + 5)).map(|i| (i % 253) as u8).collect();
        let (mut a, b) = tokio::io::duplex(MAX_BUFFER);
        let (c, mut d) = tokio::io::duplex(MAX_BUFFER);
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
        });
        let copier = tokio::spawn(one_way(b, c));
        let mut got = Vec::new();
        d.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(copier.await.unwrap().unwrap(), payload.len() as u64);
        assert_eq!(got, payload);
    }

    #[test]
    fn growth_stays_within_the_budget_and_is_returned() {
        let pool = AtomicUsize::new(0);
        let mut a = Growth::new(&pool, 3 * MIN_BUFFER);
        assert!(a.take(MIN_BUFFER) && a.take(2 * MIN_BUFFER));
        let mut b = Growth::new(&pool, 3 * MIN_BUFFER);
        assert!(!b.take(MIN_BUFFER), "the budget is spent");
        drop(a);
        assert_eq!(pool.load(Ordering::Acquire), 0);
        assert!(b.take(MIN_BUFFER), "and given back on drop");
    }
}
