//! Byte-exact forwarding between a libp2p stream and a TCP socket.
//!
//! Both directions run at once; when one side finishes sending, the other side's write half is
//! shut down (TCP `shutdown(SHUT_WR)`, a yamux/QUIC half-close), and the pipe ends only when both
//! directions are done, so no tail of data is lost at close.

use libp2p::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// Read/write buffer of each direction.
pub const PIPE_BUFFER: usize = 256 * 1024;

/// Forwards until both directions are closed. Returns (bytes stream→tcp, bytes tcp→stream).
pub async fn pipe(stream: Stream, mut tcp: TcpStream) -> std::io::Result<(u64, u64)> {
    let mut stream = stream.compat();
    let result =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut tcp, PIPE_BUFFER, PIPE_BUFFER)
            .await;
    let _ = tcp.shutdown().await;
    let _ = stream.shutdown().await;
    result
}
