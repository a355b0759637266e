//! Byte-exact forwarding between a libp2p stream (or a bulk connection) and a TCP socket.
//!
//! Both directions run at once; when one side finishes sending, the other side's write half is
//! shut down (TCP `shutdown(SHUT_WR)`, a yamux/QUIC half-close), and the pipe ends only when both
//! directions are done, so no tail of data is lost at close. A direction that fails instead
//! (an error on either side) resets the TCP socket (RST), so that a cut connection never reaches
//! the application as a clean end of file. Whenever a direction has nothing more to read right
//! away, it flushes its writer, so that bytes a writer keeps (a bulk connection's sealed records
//! that the socket could not take yet) never wait for a next write.
//!
//! Each direction's buffer starts small and doubles whenever a read fills it, up to
//! [`MAX_BUFFER`]: bulk transfers get large writes (and so large yamux frames and TLS records),
//! while a thousand interactive connections cost a few KiB each (4 KiB each way to start). Growth beyond the first buffer
//! draws on one budget per process ([`GROWTH_BUDGET`]), so that a thousand busy connections
//! don't each hold 256 KiB: the first ones to need it get large buffers, the rest stay small.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, ready};

use futures::AsyncReadExt as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// Reads from `r` into `buf`. While nothing can be read, `w` is flushed if `unflushed`: a
/// writer may keep bytes it has taken (a bulk connection keeps sealed records the socket could
/// not take yet), and they must not wait for a next write that may never come (the last answer
/// of a request/response protocol). The read is polled too meanwhile, so a slow flush does not
/// hold the reading back.
async fn read_or_flush<R, W>(
    r: &mut R,
    w: &mut W,
    buf: &mut [u8],
    unflushed: &mut bool,
) -> std::io::Result<usize>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(buf);
        if let Poll::Ready(res) = Pin::new(&mut *r).poll_read(cx, &mut rb) {
            return Poll::Ready(res.map(|()| rb.filled().len()));
        }
        if *unflushed {
            ready!(Pin::new(&mut *w).poll_flush(cx))?;
            *unflushed = false;
        }
        Poll::Pending
    })
    .await
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
    let mut unflushed = false;
    loop {
        let n = read_or_flush(&mut r, &mut w, &mut buf, &mut unflushed).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        unflushed = true;
        total += n as u64;
        if n == buf.len() && buf.len() < MAX_BUFFER && growth.take(buf.len()) {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// The local socket of a pipe. Unless both directions ended cleanly, it is reset (RST) when
/// dropped, however the pipe ended: an error, or the pipe's task cancelled.
struct Local {
    tcp: TcpStream,
    clean: bool,
}

impl Drop for Local {
    fn drop(&mut self) {
        if !self.clean {
            // SO_LINGER 0: close() sends RST (and drops unsent bytes) instead of FIN.
            let _ = self.tcp.set_zero_linger();
        }
    }
}

/// Forwards until both directions are closed. Returns (bytes stream→tcp, bytes tcp→stream).
///
/// A direction that ends cleanly is half-closed on the other side (FIN on the TCP socket). If
/// either direction fails (a read or write error on either side: a reset stream, a bulk
/// connection closed without `close_notify`, a relay leg cut), or the pipe is dropped before
/// both are done, the TCP socket is reset instead, so that the application sees an error
/// (ECONNRESET) rather than a clean end of a truncated stream.
pub async fn pipe<S>(stream: S, tcp: TcpStream) -> std::io::Result<(u64, u64)>
where
    S: futures::AsyncRead + futures::AsyncWrite,
{
    // Small writes (keystrokes, request/response protocols) go out at once, as ssh does.
    let _ = tcp.set_nodelay(true);
    let mut local = Local { tcp, clean: false };
    let (stream_r, stream_w) = stream.split();
    let (tcp_r, tcp_w) = local.tcp.split();
    let result = tokio::try_join!(
        one_way(stream_r.compat(), tcp_w),
        one_way(tcp_r, stream_w.compat_write())
    );
    // Both write halves are shut down already when both directions ended cleanly.
    local.clean = result.is_ok();
    result
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

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

    /// A peer's side of a pipe: yields `data`, then ends as `end` says. Takes whatever is
    /// written to it, or fails every write.
    struct Scripted {
        data: Vec<u8>,
        at: usize,
        end: End,
        write_fails: bool,
    }

    #[derive(Clone, Copy)]
    enum End {
        Clean,
        Fails(io::ErrorKind),
        Never,
    }

    impl futures::AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = &mut *self;
            if this.at < this.data.len() {
                let n = buf.len().min(this.data.len() - this.at);
                buf[..n].copy_from_slice(&this.data[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(n));
            }
            match this.end {
                End::Clean => Poll::Ready(Ok(0)),
                End::Fails(kind) => Poll::Ready(Err(kind.into())),
                End::Never => Poll::Pending,
            }
        }
    }

    impl futures::AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match self.write_fails {
                true => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                false => Poll::Ready(Ok(buf.len())),
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Both ends of a loopback TCP connection: (the application's, the pipe's).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (app, piped) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (app.unwrap(), piped.unwrap().0)
    }

    /// Reads until the end: what arrived, and how it ended (Ok: FIN; Err: an error, such as RST).
    async fn read_until_end(app: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match app.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("the local socket was neither closed nor reset");
        (got, end)
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_clean_end_both_ways_closes_the_local_socket_with_fin() {
        let (mut app, piped) = tcp_pair().await;
        let data = payload(300_000);
        let peer = Scripted { data: data.clone(), at: 0, end: End::Clean, write_fails: false };
        let piping = tokio::spawn(pipe(peer, piped));
        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        let (got, end) = read_until_end(&mut app).await;
        assert!(end.is_ok(), "a clean end is a clean end of file: {end:?}");
        assert!(got == data);
        assert_eq!(piping.await.unwrap().unwrap(), (data.len() as u64, 7));
    }

    #[tokio::test]
    async fn a_failed_read_from_the_peer_resets_the_local_socket() {
        for kind in [
            io::ErrorKind::UnexpectedEof, // a bulk connection closed without close_notify
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::InvalidData, // a record that failed authentication
        ] {
            let (mut app, piped) = tcp_pair().await;
            let data = payload(100_000);
            let peer =
                Scripted { data: data.clone(), at: 0, end: End::Fails(kind), write_fails: false };
            let piping = tokio::spawn(pipe(peer, piped));
            let (got, end) = read_until_end(&mut app).await;
            let err = end.expect_err("a cut must not look like the end of the data");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{kind:?}: {err}");
            assert!(data.starts_with(&got), "what arrived is a prefix of what was sent");
            assert_eq!(piping.await.unwrap().unwrap_err().kind(), kind);
        }
    }

    #[tokio::test]
    async fn a_failed_write_to_the_peer_resets_the_local_socket() {
        let (mut app, piped) = tcp_pair().await;
        let peer = Scripted { data: Vec::new(), at: 0, end: End::Never, write_fails: true };
        let piping = tokio::spawn(pipe(peer, piped));
        app.write_all(b"upload").await.unwrap();
        let (_, end) = read_until_end(&mut app).await;
        let err = end.expect_err("a cut must not look like the end of the data");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(piping.await.unwrap().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn a_pipe_dropped_midway_resets_the_local_socket() {
        let (mut app, piped) = tcp_pair().await;
        let peer = Scripted { data: payload(10_000), at: 0, end: End::Never, write_fails: false };
        let piping = tokio::spawn(pipe(peer, piped));
        let mut first = [0u8; 100];
        app.read_exact(&mut first).await.unwrap();
        piping.abort(); // what shutting the daemon down does to a serving task
        let (_, end) = read_until_end(&mut app).await;
        let err = end.expect_err("a pipe cut by shutdown must not look like the end of the data");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
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
