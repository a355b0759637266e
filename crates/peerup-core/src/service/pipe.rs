//! Byte-exact forwarding between a libp2p stream and a TCP socket.
//!
//! Both directions run at once; when one side finishes sending, the other side's write half is
//! shut down (TCP `shutdown(SHUT_WR)`, a yamux/QUIC half-close), and the pipe ends only when both
//! directions are done, so no tail of data is lost at close.
//!
//! Each direction's buffer starts small and doubles whenever a read fills it, up to
//! [`MAX_BUFFER`]: bulk transfers get large writes (and so large yamux frames and TLS records),
//! while a thousand interactive connections cost a few KiB each.

use futures::AsyncReadExt as _;
use libp2p::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::{FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};

/// The first buffer of each direction.
pub const MIN_BUFFER: usize = 16 * 1024;
/// The largest buffer of each direction.
pub const MAX_BUFFER: usize = 256 * 1024;

/// Copies `r` to `w` until `r` ends, then shuts `w` down. Returns the bytes copied.
async fn one_way<R, W>(mut r: R, mut w: W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MIN_BUFFER];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        if n == buf.len() && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Forwards until both directions are closed. Returns (bytes stream→tcp, bytes tcp→stream).
pub async fn pipe(stream: Stream, mut tcp: TcpStream) -> std::io::Result<(u64, u64)> {
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
}
