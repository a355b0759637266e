//! Byte-exact forwarding between a libp2p stream (or a bulk connection) and a TCP socket.
//!
//! Both directions run at once; when one side finishes sending, the other side's write half is
//! shut down (TCP `shutdown(SHUT_WR)`, a yamux/QUIC half-close), and the pipe ends only when both
//! directions are done, so no tail of data is lost at close.
//!
//! Each direction's buffer starts small and doubles whenever a read fills it, up to
//! [`MAX_BUFFER`]: bulk transfers get large writes (and so large yamux frames and TLS records),
//! while a thousand interactive connections cost a few KiB each (4 KiB each way to start). Growth beyond the first buffer
//! draws on one budget per process ([`GROWTH_BUDGET`]), so that a thousand busy connections
//! don't each hold 256 KiB: the first ones to need it get large buffers, the rest stay small.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::AsyncReadExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::{FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};

/// The first buffer of each direction.
pub const MIN_BUFFER: usize = 4 * 1024;
/// The largest buffer of each direction.
pub const MAX_BUFFER: usize = 256 * 1024;
/// Bytes all pipes of the process may hold beyond their first buffers.
pub const GROWTH_BUDGET: usize = 16 * 1024 * 1024;

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
async fn one_way<R, W>(mut r: R, mut w: W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MIN_BUFFER];
    let mut growth = Growth::new(&GROWN, GROWTH_BUDGET);
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        if n == buf.len() && buf.len() < MAX_BUFFER && growth.take(buf.len()) {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Forwards until both directions are closed. Returns (bytes stream→tcp, bytes tcp→stream).
pub async fn pipe<S>(stream: S, mut tcp: TcpStream) -> std::io::Result<(u64, u64)>
where
    S: futures::AsyncRead + futures::AsyncWrite,
{
    // Small writes (keystrokes, request/response protocols) go out at once, as ssh does.
    let _ = tcp.set_nodelay(true);
    let (stream_r, stream_w) = stream.split();
    let (tcp_r, tcp_w) = tcp.split();
    let result = tokio::try_join!(
        one_way(stream_r.compat(), tcp_w),
        one_way(tcp_r, stream_w.compat_write())
    );
    let _ = tcp.shutdown().await;
    result
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
