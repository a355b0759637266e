//! The stream multiplexer: yamux (`/yamux/1.0.0`), on the `yamux` crate directly, so that frame
//! size and stream limits can be set. libp2p-yamux fixes data frames at 16 KiB; bulk transfers
//! cost far less CPU with 256 KiB frames (`docs/performance.md`). The frame size is the sender's
//! choice, so this speaks the same protocol as every other yamux peer (receivers take frames up
//! to 1 MiB and never beyond the window they granted).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use futures::future::{Ready, ready};
use futures::io::BufWriter;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

mod budget;

use budget::{Budget, Drain};
pub use budget::{Stream, WRITE_BUDGET};

/// The protocol name, as every yamux implementation announces it.
pub const PROTOCOL: &str = crate::protocols::YAMUX;
/// Largest data frame we send.
pub const SPLIT_SEND_SIZE: usize = 256 * 1024;
/// Most streams at once on one connection (every proxied TCP connection is one stream).
pub const MAX_STREAMS: usize = 2048;
/// Write buffer under yamux: a frame's 12-byte header and a small body leave in one write (one TLS
/// record, one syscall) instead of two. Larger bodies bypass it.
const WRITE_BUFFER: usize = 16 * 1024;
/// Inbound streams the swarm has not picked up yet; more are reset.
const MAX_PENDING_INBOUND: usize = 1024;

/// The multiplexer upgrade.
#[derive(Debug, Clone)]
pub struct Config {
    yamux: yamux::Config,
    write_budget: usize,
}

impl Config {
    /// peerup's settings: 256 KiB frames, up to [`MAX_STREAMS`] streams, at most
    /// [`WRITE_BUDGET`] bytes queued for the socket.
    pub fn new() -> Self {
        let mut c = yamux::Config::default();
        c.set_max_num_streams(MAX_STREAMS).set_split_send_size(SPLIT_SEND_SIZE);
        Self { yamux: c, write_budget: WRITE_BUDGET }
    }

    /// The same with another write budget.
    #[cfg(test)]
    fn with_write_budget(mut self, bytes: usize) -> Self {
        self.write_budget = bytes;
        self
    }

    fn muxer<C>(self, socket: C, mode: yamux::Mode) -> Muxer<Socket<C>>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let budget = Budget::new(self.write_budget);
        let socket = Drain::new(BufWriter::with_capacity(WRITE_BUFFER, socket), &budget);
        Muxer::new(yamux::Connection::new(socket, self.yamux, mode), budget)
    }
}

/// What yamux writes to: a write buffer over the secured connection, counting frames out.
pub type Socket<C> = Drain<BufWriter<C>>;

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<Socket<C>>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Output, std::io::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        ready(Ok(self.muxer(socket, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<Socket<C>>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Output, std::io::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        ready(Ok(self.muxer(socket, yamux::Mode::Client)))
    }
}

/// A yamux connection as libp2p's [`StreamMuxer`].
pub struct Muxer<C> {
    conn: yamux::Connection<C>,
    /// Streams the remote opened while the swarm was driving the connection, not yet taken.
    pending: VecDeque<yamux::Stream>,
    /// The task waiting in `poll_inbound`.
    inbound_waker: Option<Waker>,
    /// Bytes the streams may queue for the socket.
    budget: Arc<Budget>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn new(conn: yamux::Connection<C>, budget: Arc<Budget>) -> Self {
        Self { conn, pending: VecDeque::new(), inbound_waker: None, budget }
    }

    /// Drives the connection (reading frames, flushing writes), queueing the streams the remote
    /// opens. Ready only with the error that ended the connection.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<yamux::ConnectionError> {
        loop {
            match self.conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    if self.pending.len() >= MAX_PENDING_INBOUND {
                        tracing::debug!("too many inbound streams waiting; resetting one");
                        drop(stream);
                        continue;
                    }
                    self.pending.push_back(stream);
                    if let Some(w) = self.inbound_waker.take() {
                        w.wake();
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(e),
                Poll::Ready(None) => return Poll::Ready(yamux::ConnectionError::Closed),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(s) = this.pending.pop_front() {
            return Poll::Ready(Ok(Stream::new(s, &this.budget)));
        }
        this.inbound_waker = Some(cx.waker().clone());
        if let Poll::Ready(e) = this.drive(cx) {
            return Poll::Ready(Err(e));
        }
        match this.pending.pop_front() {
            Some(s) => Poll::Ready(Ok(Stream::new(s, &this.budget))),
            None => Poll::Pending,
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(this.conn.poll_new_outbound(cx))?;
        Poll::Ready(Ok(Stream::new(stream, &this.budget)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().conn.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        match self.get_mut().drive(cx) {
            Poll::Ready(e) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::muxing::StreamMuxerExt;

    use super::*;

    /// Two muxers over an in-memory duplex pipe: a stream opened on one side arrives on the other,
    /// and a payload larger than several frames crosses byte-exact in both directions.
    #[tokio::test]
    async fn streams_cross_a_pipe_byte_exact() {
        use futures::future::poll_fn;
        use tokio_util::compat::TokioAsyncReadCompatExt;

        let (a, b) = tokio::io::duplex(1 << 20);
        let cfg = Config::new();
        let mut client = cfg.clone().upgrade_outbound(a.compat(), PROTOCOL).await.unwrap();
        let mut server = cfg.upgrade_inbound(b.compat(), PROTOCOL).await.unwrap();
        let payload: Vec<u8> = (0..(3 * SPLIT_SEND_SIZE + 17)).map(|i| (i % 251) as u8).collect();

        let mut out = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.unwrap();
        // Once a stream is in hand, the muxer only needs driving.
        let client_driver = tokio::spawn(async move { poll_fn(|cx| client.poll_unpin(cx)).await });
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            out.write_all(&sent).await.unwrap();
            out.close().await.unwrap();
            let mut back = Vec::new();
            out.read_to_end(&mut back).await.unwrap();
            back
        });
        let echo = tokio::spawn(async move {
            let mut s = poll_fn(|cx| server.poll_inbound_unpin(cx)).await.unwrap();
            let driver = tokio::spawn(async move { poll_fn(|cx| server.poll_unpin(cx)).await });
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.close().await.unwrap();
            (got.len(), driver)
        });
        let within = std::time::Duration::from_secs(10);
        let back = tokio::time::timeout(within, writer).await.expect("echo in time").unwrap();
        let (n, server_driver) = echo.await.unwrap();
        assert_eq!(n, payload.len());
        assert_eq!(back, payload);
        client_driver.abort();
        server_driver.abort();
    }

    /// A stream the remote resets (drops without closing) reads as `ConnectionReset` after the
    /// bytes sent before the reset, not as a clean end; one the remote finishes reads to its end,
    /// and so does one that both sides closed.
    #[tokio::test]
    async fn a_reset_stream_reads_as_an_error_and_a_finished_one_as_its_end() {
        use futures::future::poll_fn;
        use tokio_util::compat::TokioAsyncReadCompatExt;

        let (a, b) = tokio::io::duplex(1 << 20);
        let cfg = Config::new();
        let mut client = cfg.clone().upgrade_outbound(a.compat(), PROTOCOL).await.unwrap();
        let mut server = cfg.upgrade_inbound(b.compat(), PROTOCOL).await.unwrap();
        let mut reset = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.unwrap();
        let mut finished = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.unwrap();
        let client_driver = tokio::spawn(async move { poll_fn(|cx| client.poll_unpin(cx)).await });
        reset.write_all(b"partial").await.unwrap();
        reset.flush().await.unwrap();
        finished.write_all(b"whole").await.unwrap();
        finished.close().await.unwrap();
        let mut first = poll_fn(|cx| server.poll_inbound_unpin(cx)).await.unwrap();
        let mut second = poll_fn(|cx| server.poll_inbound_unpin(cx)).await.unwrap();
        let server_driver = tokio::spawn(async move { poll_fn(|cx| server.poll_unpin(cx)).await });
        let within = std::time::Duration::from_secs(10);

        let mut got = [0u8; 7];
        first.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"partial");
        drop(reset);
        let mut rest = Vec::new();
        let end = tokio::time::timeout(within, first.read_to_end(&mut rest)).await.unwrap();
        let err = end.expect_err("a reset stream must not read as a clean end of file");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

        let mut whole = Vec::new();
        tokio::time::timeout(within, second.read_to_end(&mut whole)).await.unwrap().unwrap();
        assert_eq!(whole, b"whole");
        // Our side closed after the remote's FIN: the stream is closed both ways, cleanly.
        second.close().await.unwrap();
        assert_eq!(second.read(&mut [0u8; 8]).await.unwrap(), 0);
        client_driver.abort();
        server_driver.abort();
    }

    /// With the socket stalled, the streams of a connection queue no more than its write budget
    /// (yamux alone would queue up to 10 frames per stream); once the socket drains, every byte
    /// arrives and every permit comes back.
    #[tokio::test(start_paused = true)]
    async fn queued_writes_stay_within_the_budget() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use futures::future::poll_fn;
        use tokio_util::compat::TokioAsyncReadCompatExt;

        const BUDGET: usize = 256 * 1024;
        const STREAMS: usize = 16;
        const EACH: usize = 128 * 1024;
        const WRITE: usize = 8 * 1024;
        let (a, b) = tokio::io::duplex(32 * 1024);
        let cfg = Config::new().with_write_budget(BUDGET);
        let mut client = cfg.clone().upgrade_outbound(a.compat(), PROTOCOL).await.unwrap();
        let mut server = cfg.upgrade_inbound(b.compat(), PROTOCOL).await.unwrap();
        let budget = client.budget.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for i in 0..STREAMS {
            let mut s = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.unwrap();
            let accepted = accepted.clone();
            writers.push(tokio::spawn(async move {
                let chunk = vec![i as u8; WRITE];
                for _ in 0..EACH / WRITE {
                    s.write_all(&chunk).await.unwrap();
                    accepted.fetch_add(WRITE, Ordering::AcqRel);
                }
                s.close().await.unwrap();
            }));
        }
        let client_driver = tokio::spawn(async move { poll_fn(|cx| client.poll_unpin(cx)).await });
        // Paused time advances only when every task is blocked: the socket is full by then.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let held = accepted.load(Ordering::Acquire);
        // What left the queues sits in the pipe (32 KiB), the write buffer (16 KiB) and the one
        // frame yamux is writing.
        assert!(held <= BUDGET + 64 * 1024, "{held} bytes taken with a budget of {BUDGET}");
        assert!(budget.queued() <= BUDGET);

        let readers = tokio::spawn(async move {
            let mut done = Vec::new();
            for _ in 0..STREAMS {
                let mut s = poll_fn(|cx| server.poll_inbound_unpin(cx)).await.unwrap();
                done.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    (got.len(), got.iter().all(|b| *b == got[0]))
                }));
            }
            let driver = tokio::spawn(async move { poll_fn(|cx| server.poll_unpin(cx)).await });
            let mut results = Vec::new();
            for d in done {
                results.push(d.await.unwrap());
            }
            driver.abort();
            results
        });
        for w in writers {
            w.await.unwrap();
        }
        let results = readers.await.unwrap();
        assert_eq!(results, vec![(EACH, true); STREAMS]);
        assert_eq!((budget.queued(), budget.available()), (0, BUDGET));
        client_driver.abort();
    }
}
