//! A test connection that breaks: every read and write fails after so many bytes, as a path
//! that goes away mid-transfer.

use std::pin::Pin;
use std::task::{Context, Poll};

/// Fails every read and write after `left` bytes.
pub(crate) struct Cut<T> {
    inner: T,
    left: usize,
}

impl<T> Cut<T> {
    pub(crate) fn new(inner: T, left: usize) -> Self {
        Self { inner, left }
    }
}

fn gone() -> std::io::Error {
    std::io::ErrorKind::ConnectionReset.into()
}

impl<T: futures::AsyncRead + Unpin> futures::AsyncRead for Cut<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.left == 0 {
            return Poll::Ready(Err(gone()));
        }
        let max = buf.len().min(self.left);
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut buf[..max]);
        if let Poll::Ready(Ok(n)) = r {
            self.left -= n;
        }
        r
    }
}

impl<T: futures::AsyncWrite + Unpin> futures::AsyncWrite for Cut<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.left == 0 {
            return Poll::Ready(Err(gone()));
        }
        let max = buf.len().min(self.left);
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..max]);
        if let Poll::Ready(Ok(n)) = r {
            self.left -= n;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
