//! Ping-pong, as Go peer-up speaks it (`/pingpong/1.0.0` by default): a fresh stream per ping, the
//! client writes `ping\n`, the server answers `pong\n` (or `unknown\n`) and closes.

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::AccessList;
use crate::node::{Node, NodeError};
use crate::streams::{IncomingStream, PathInfo};

/// The longest line a ping-pong server reads.
const MAX_LINE: usize = 64;
/// Pings answered at once; more are dropped.
const MAX_AT_ONCE: usize = 64;
/// How long one exchange may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A ping failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// No stream could be opened.
    #[error("stream: {0}")]
    Stream(#[from] NodeError),
    /// I/O on the stream failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not `pong`.
    #[error("unexpected response: {0:?}")]
    Unexpected(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

/// Answers pings from authorized peers until `cancel` fires.
pub fn serve(
    node: &Node,
    protocol: StreamProtocol,
    access: AccessList,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let incoming = node.accept(protocol);
    let limits = crate::serve::Limits::dropping(MAX_AT_ONCE).within(PING_TIMEOUT);
    crate::serve::each(
        incoming,
        limits,
        "ping answer",
        tracker,
        cancel,
        move |s: IncomingStream| {
            access.is_authorized(&s.peer).then_some(async move {
                let mut stream = s.stream;
                let reply = match read_line(&mut stream).await {
                    Ok(line) if line.trim() == "ping" => "pong\n",
                    Ok(_) => "unknown\n",
                    Err(_) => return,
                };
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.close().await;
            })
        },
    );
}

async fn read_line(stream: &mut libp2p::Stream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        if stream.read(&mut byte).await? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Sends one ping; returns the round-trip time and the path used.
pub async fn ping(
    node: &Node,
    peer: PeerId,
    protocol: StreamProtocol,
) -> Result<(Duration, PathInfo), PingError> {
    let (mut stream, path) = node.open_stream(peer, protocol).await?;
    let exchange = async {
        let start = Instant::now();
        stream.write_all(b"ping\n").await?;
        stream.flush().await?;
        let line = read_line(&mut stream).await?;
        let rtt = start.elapsed();
        let _ = stream.close().await;
        if line.trim() == "pong" { Ok(rtt) } else { Err(PingError::Unexpected(line)) }
    };
    match tokio::time::timeout(PING_TIMEOUT, exchange).await {
        Ok(Ok(rtt)) => Ok((rtt, path)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PingError::Timeout),
    }
}
