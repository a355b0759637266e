//! Byte counting on every libp2p connection of a relay server (`peerup_relay_bytes_total`): what
//! its circuits carry, beside its own small protocols. Nodes do not pay for it; the relay's legs
//! (plain TCP outside libp2p, [`crate::tunnel::legs`]) are not counted here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use libp2p::core::transport::Boxed;
use libp2p::{PeerId, Transport};
use prometheus_client::metrics::counter::Counter;

/// Bytes received and sent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bytes {
    pub(crate) rx: Counter,
    pub(crate) tx: Counter,
}

/// `transport`, with every substream of every connection counted into `bytes`.
pub(crate) fn counted(
    transport: Boxed<(PeerId, StreamMuxerBox)>,
    bytes: Bytes,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    transport
        .map(move |(peer, muxer), _| {
            (peer, StreamMuxerBox::new(Muxer { inner: muxer, bytes: bytes.clone() }))
        })
        .boxed()
}

struct Muxer {
    inner: StreamMuxerBox,
    bytes: Bytes,
}

impl StreamMuxer for Muxer {
    type Substream = Counted;
    type Error = io::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let bytes = self.bytes.clone();
        Pin::new(&mut self.inner).poll_inbound(cx).map_ok(|inner| Counted { inner, bytes })
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let bytes = self.bytes.clone();
        Pin::new(&mut self.inner).poll_outbound(cx).map_ok(|inner| Counted { inner, bytes })
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// A substream whose reads and writes are counted.
struct Counted {
    inner: SubstreamBox,
    bytes: Bytes,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.bytes.rx.inc_by(n as u64);
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.bytes.tx.inc_by(n as u64);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
