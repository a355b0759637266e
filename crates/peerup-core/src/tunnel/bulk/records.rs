//! The bulk path's record layer: TLS 1.3 application-data records, sealed and opened by peerup
//! itself with the traffic keys the rustls handshake agreed (`handshake.rs`).
//!
//! rustls' own record layer reads the socket 4 KiB at a time, copies every record into a fresh
//! buffer on the way out, and on the way in into a plaintext queue and then out again. Here each
//! direction has one buffer: reads take as much as the socket holds (up to [`MAX_IN`]), records
//! are opened in place, and a write seals up to [`MAX_OUT`] bytes of records into one buffer that
//! goes out in one call. The wire format is TLS 1.3's (RFC 8446 §5.2): AES-GCM or
//! ChaCha20-Poly1305, the per-record nonce from the sequence number, the record header as
//! associated data, the content type inside, a `close_notify` alert to end a direction. An
//! error ends a direction for good: every later read (or write) returns it again.
//!
//! One thing differs from TLS: there is no KeyUpdate message. Both ends instead derive the next
//! key from the current one after [`REKEY_EVERY`] records in a direction (well inside AES-GCM's
//! limit of about 2^24.5 records per key), which is why the protocol name changed with it.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

mod keys;

use aws_lc_rs::aead::Aad;
use futures::{AsyncRead, AsyncWrite};
use keys::Keys;

/// Bytes of a record header.
const HEADER: usize = 5;
/// Bytes of an AEAD tag (all three suites).
const TAG: usize = 16;
/// The most plaintext in one record.
pub(crate) const MAX_PLAIN: usize = 16 * 1024;
/// The longest record body TLS 1.3 allows (plaintext, content type, padding, tag).
const MAX_BODY: usize = MAX_PLAIN + 256;
/// The receive buffer starts at one record and doubles, up to this, while reads fill it.
pub(crate) const MAX_IN: usize = 128 * 1024;
/// At most this much plaintext is taken in one write.
pub(crate) const MAX_OUT: usize = 128 * 1024;
/// Records per key and direction before both ends move to the next key.
pub(crate) const REKEY_EVERY: u64 = 1 << 23;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
/// TLS 1.3 post-handshake message: a resumption ticket (ignored).
const NEW_SESSION_TICKET: u8 = 4;

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The first error of a direction, returned again by every later call: after an error the
/// records that follow are not trusted (a record that failed authentication is not skipped), and
/// nothing more is sent after a record that may have gone out in part.
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn of(e: &io::Error) -> Self {
        Self { kind: e.kind(), message: e.to_string() }
    }

    fn error(&self) -> io::Error {
        io::Error::new(self.kind, self.message.clone())
    }
}

/// Passes `result` on, keeping its error in `failed` if it is the first.
fn kept<T>(failed: &mut Option<Failure>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
    if let Poll::Ready(Err(e)) = &result {
        failed.get_or_insert_with(|| Failure::of(e));
    }
    result
}

/// A connection carrying TLS 1.3 records with keys taken over from a finished handshake.
///
/// Like a buffered writer, a write takes the bytes once they are sealed, and what the socket
/// cannot take at once waits in `out` for the next write or a flush: whoever writes must flush
/// before waiting for something else (the pipe does when it has nothing more to read).
pub(crate) struct Sealed<C> {
    io: C,
    tx: Keys,
    rx: Keys,
    /// Sealed records not written yet: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Received bytes not yet opened: `inb[start..end]`; opened plaintext not yet read: `plain`.
    inb: Vec<u8>,
    start: usize,
    end: usize,
    plain: Range<usize>,
    /// The last read filled `inb`: it grows before the next.
    grow: bool,
    /// The peer sent `close_notify`.
    read_closed: bool,
    /// We queued `close_notify`.
    write_closed: bool,
    /// Each direction's first error ([`Failure`]).
    read_failed: Option<Failure>,
    write_failed: Option<Failure>,
}

impl<C> Sealed<C> {
    /// Takes over `io` after a handshake, with its secrets and sequence numbers.
    /// `plain` is plaintext already opened and `raw` records already received, in that order.
    pub(crate) fn resume(
        io: C,
        secrets: rustls::ExtractedSecrets,
        plain: Vec<u8>,
        raw: Vec<u8>,
    ) -> io::Result<Self> {
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let opened = plain.len();
        let mut inb = plain;
        inb.extend_from_slice(&raw);
        Ok(Self {
            io,
            tx: Keys::new(tx_seq, tx, REKEY_EVERY)?,
            rx: Keys::new(rx_seq, rx, REKEY_EVERY)?,
            out: Vec::new(),
            sent: 0,
            end: inb.len(),
            inb,
            start: opened,
            plain: 0..opened,
            grow: false,
            read_closed: false,
            write_closed: false,
            read_failed: None,
            write_failed: None,
        })
    }

    /// Moves both directions to a new key every `records` records from now (tests).
    #[cfg(test)]
    pub(crate) fn rekey_after(&mut self, records: u64) {
        for keys in [&mut self.tx, &mut self.rx] {
            keys.rekey_every = keys.seq + records;
        }
    }

    /// Opens `wire` as if it had just been received (tests).
    #[cfg(test)]
    pub(crate) fn open_raw(&mut self, wire: &[u8]) -> io::Result<bool> {
        self.inb = wire.to_vec();
        (self.start, self.end) = (0, wire.len());
        self.open_next()
    }

    /// Appends one sealed record of `kind` holding `data` (at most [`MAX_PLAIN`] bytes).
    fn seal(&mut self, kind: u8, data: &[u8]) -> io::Result<()> {
        let len = data.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        self.out.extend_from_slice(&header);
        let body = self.out.len();
        self.out.extend_from_slice(data);
        self.out.push(kind);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(self.tx.nonce(), Aad::from(header), &mut self.out[body..])
            .map_err(|_| bad("sealing failed"))?;
        self.out.extend_from_slice(tag.as_ref());
        self.tx.advance()
    }

    /// Opens the next whole record in `inb`, if there is one; false when more bytes are needed.
    fn open_next(&mut self) -> io::Result<bool> {
        let avail = &self.inb[self.start..self.end];
        let Some(header) = avail.get(..HEADER) else { return Ok(false) };
        let header: [u8; HEADER] = [header[0], header[1], header[2], header[3], header[4]];
        if header[0] != APPLICATION_DATA || header[1..3] != [3, 3] {
            return Err(bad("not a TLS 1.3 record"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if !(TAG + 1..=MAX_BODY).contains(&len) {
            return Err(bad("bad record length"));
        }
        if avail.len() < HEADER + len {
            return Ok(false);
        }
        let body = self.start + HEADER;
        self.start = body + len;
        let nonce = self.rx.nonce();
        let opened = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), &mut self.inb[body..body + len])
            .map_err(|_| bad("record failed authentication"))?;
        // TLSInnerPlaintext (content, type, padding) is at most 2^14 + 1 bytes (RFC 8446 §5.4).
        if opened.len() > MAX_PLAIN + 1 {
            return Err(bad("record overflow: more than 2^14 bytes of plaintext"));
        }
        // Strip the padding; the last non-zero byte is the content type.
        let kind_at = opened.iter().rposition(|&b| b != 0).ok_or(bad("record has no type"))?;
        let (kind, data) = (opened[kind_at], &opened[..kind_at]);
        self.rx.advance()?;
        match kind {
            APPLICATION_DATA => self.plain = body..body + kind_at,
            ALERT if data.len() == 2 && data[1] == 0 => self.read_closed = true,
            ALERT => return Err(bad("the peer sent a TLS alert")),
            HANDSHAKE if data.first() == Some(&NEW_SESSION_TICKET) => {}
            _ => return Err(bad("unexpected TLS record")),
        }
        Ok(true)
    }

    /// Makes room at the end of `inb` for the next read: grows the buffer after a read that
    /// filled it, and moves a partial record to the front when the space after it is short.
    /// Called only when no plaintext is waiting in `inb`.
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let want = match self.inb.len() {
            n if self.grow => (n * 2).min(MAX_IN),
            n => n,
        }
        .max(HEADER + MAX_BODY);
        if want > self.inb.len() {
            self.inb.resize(want, 0);
        }
        if self.start > 0 && self.inb.len() - self.end < HEADER + MAX_BODY {
            self.inb.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
    }

    /// Copies waiting plaintext into `buf`, opening the records already received as it goes. A
    /// record that fails after some plaintext was copied fails the next read instead.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            if self.plain.is_empty() {
                if self.read_closed {
                    break;
                }
                match self.open_next() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) if done > 0 => {
                        self.read_failed = Some(Failure::of(&e));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let n = self.plain.len().min(buf.len() - done);
            let from = self.plain.start;
            buf[done..done + n].copy_from_slice(&self.inb[from..from + n]);
            self.plain.start += n;
            done += n;
        }
        Ok(done)
    }
}

impl<C: AsyncWrite + Unpin> Sealed<C> {
    /// Writes out every sealed byte.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncRead + Unpin> Sealed<C> {
    fn poll_read_records(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let n = self.read_plain(buf)?;
            if n > 0 || self.read_closed {
                return Poll::Ready(Ok(n));
            }
            self.make_room();
            let end = self.end;
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.inb[end..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection without close_notify",
                )));
            }
            self.grow = end + n == self.inb.len() && self.inb.len() < MAX_IN;
            self.end += n;
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Sealed<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(failed) = &this.read_failed {
            return Poll::Ready(Err(failed.error()));
        }
        let result = this.poll_read_records(cx, buf);
        kept(&mut this.read_failed, result)
    }
}

impl<C: AsyncWrite + Unpin> Sealed<C> {
    fn poll_write_records(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_OUT);
        for chunk in buf[..n].chunks(MAX_PLAIN) {
            self.seal(APPLICATION_DATA, chunk)?;
        }
        // The bytes are taken; what the socket can't take now goes out on the next call.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            ready!(self.poll_drain(cx))?;
            self.seal(ALERT, &[1, 0])?; // warning, close_notify
            self.write_closed = true;
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Sealed<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(failed) = &this.write_failed {
            return Poll::Ready(Err(failed.error()));
        }
        let result = this.poll_write_records(cx, buf);
        kept(&mut this.write_failed, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(failed) = &this.write_failed {
            return Poll::Ready(Err(failed.error()));
        }
        let result = this.poll_flush_records(cx);
        kept(&mut this.write_failed, result)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(failed) = &this.write_failed {
            return Poll::Ready(Err(failed.error()));
        }
        let result = this.poll_close_records(cx);
        kept(&mut this.write_failed, result)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::identity::Keypair;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::super::handshake;
    use super::*;
    use crate::transport::tls;

    /// Bytes a [`Throttled`] socket takes per write: less than any record.
    const TAKE: usize = 16;

    /// A socket that takes at most [`TAKE`] bytes per write, and finds itself full at every other
    /// write (Pending, and ready again at once): a TCP socket whose send buffer a slow reader
    /// drains, made deterministic.
    struct Throttled {
        io: Compat<DuplexStream>,
        full: bool,
    }

    impl AsyncRead for Throttled {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Throttled {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.full = !this.full;
            if this.full {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(TAKE);
            Pin::new(&mut this.io).poll_write(cx, &buf[..n])
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_close(cx)
        }
    }

    /// A client end on `wrap` of an in-memory pipe and a server end on the other end, handshaken.
    async fn pair_on<C>(wrap: impl FnOnce(Compat<DuplexStream>) -> C) -> (Sealed<C>, End)
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (ca, cb) = (tls::Config::new(&a).unwrap(), tls::Config::new(&b).unwrap());
        let (x, y) = tokio::io::duplex(1 << 20);
        let (c, s) = tokio::join!(
            handshake::client(ca.for_alpn(crate::tunnel::bulk::ALPN).client, wrap(x.compat())),
            handshake::server(cb.for_alpn(crate::tunnel::bulk::ALPN).server, y.compat())
        );
        (c.unwrap().1, s.unwrap().1)
    }

    type End = Sealed<Compat<DuplexStream>>;

    async fn pair() -> (End, End) {
        pair_on(|x| x).await
    }

    async fn throttled_pair() -> (Sealed<Throttled>, End) {
        pair_on(|io| Throttled { io, full: false }).await
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(29).wrapping_add(7)).collect()
    }

    #[tokio::test]
    async fn a_write_can_leave_sealed_bytes_that_only_a_flush_sends() {
        let (mut c, mut s) = throttled_pair().await;
        let data = payload(5_000);
        c.write_all(&data).await.unwrap();
        assert!(c.sent < c.out.len(), "the socket took part of the record; the rest waits");
        c.flush().await.unwrap();
        assert!(c.out.is_empty());
        let mut got = vec![0u8; data.len()];
        s.read_exact(&mut got).await.unwrap();
        assert!(got == data);
    }

    #[tokio::test]
    async fn a_piped_response_is_not_stranded_in_the_record_buffer() {
        // A request/response protocol: the local service answers, then waits for the next
        // request. Nothing more is written, so the whole answer must reach the peer anyway.
        let (c, mut s) = throttled_pair().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (service, piped) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut service, piped) = (service.unwrap(), piped.unwrap().0);
        let piping = tokio::spawn(crate::service::pipe::pipe(c, piped));
        let response = payload(50_000);
        service.write_all(&response).await.unwrap();
        let mut got = vec![0u8; response.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("the tail of the response stayed in the record buffer")
            .unwrap();
        assert!(got == response);
        // And the next request still gets through, the other way.
        s.write_all(b"next").await.unwrap();
        s.flush().await.unwrap();
        let mut next = [0u8; 4];
        service.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"next");
        piping.abort();
    }

    /// Appends a record that fails authentication, as one slipped in by someone without the key.
    fn forge(c: &mut End) {
        c.out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 20]);
        c.out.extend_from_slice(&[0x55; 20]);
    }

    #[tokio::test]
    async fn after_an_error_every_read_fails() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"first").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"first");
        // The records after the forged one are genuine, and would open if reading went on.
        forge(&mut c);
        c.seal(APPLICATION_DATA, b"second").unwrap();
        c.seal(APPLICATION_DATA, b"third").unwrap();
        c.flush().await.unwrap();
        for _ in 0..3 {
            let err = s.read(&mut buf).await.expect_err("the bad record, and every read after it");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            assert!(err.to_string().contains("authentication"), "{err}");
        }

        // Plaintext opened before the bad record in the same read is delivered, then the error.
        let (mut c, mut s) = pair().await;
        c.seal(APPLICATION_DATA, b"first").unwrap();
        forge(&mut c);
        c.flush().await.unwrap();
        let n = s.read(&mut buf).await.expect("the record before the bad one");
        assert_eq!(&buf[..n], b"first");
        assert_eq!(s.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    /// A socket whose next write fails once `fail` is set; later writes work again.
    struct FailsOnce {
        io: Compat<DuplexStream>,
        fail: bool,
    }

    impl AsyncRead for FailsOnce {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for FailsOnce {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if std::mem::take(&mut this.fail) {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            Pin::new(&mut this.io).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_close(cx)
        }
    }

    #[tokio::test]
    async fn after_a_failed_write_nothing_more_is_sent() {
        let (mut c, mut s) = pair_on(|io| FailsOnce { io, fail: false }).await;
        c.write_all(b"before").await.unwrap();
        c.flush().await.unwrap();
        c.io.fail = true;
        let err = c.write_all(b"lost").await.expect_err("the socket failed");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        // The socket would take bytes again, but the connection stays failed.
        let after = [
            c.write_all(b"after").await.expect_err("write"),
            c.flush().await.expect_err("flush"),
            c.close().await.expect_err("close"),
        ];
        for e in after {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        drop(c);
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got).await;
        assert_eq!(got, b"before", "nothing after the failure reached the peer");
        assert!(end.is_err(), "and no close_notify either");
    }

    /// Opens one record `c` seals, of content type `kind` holding `data`, at a fresh `s`.
    async fn open_one(kind: u8, data: &[u8]) -> io::Result<Vec<u8>> {
        let (mut c, mut s) = pair().await;
        c.seal(kind, data)?;
        assert!(s.open_raw(&c.out)?, "a whole record");
        Ok(s.inb[s.plain.clone()].to_vec())
    }

    #[tokio::test]
    async fn records_over_2_14_bytes_of_plaintext_are_refused() {
        let most = vec![7u8; MAX_PLAIN];
        let opened = open_one(APPLICATION_DATA, &most).await.expect("2^14 bytes is allowed");
        assert!(opened == most);
        // Padding: zeros after the content type, which is then the last non-zero byte.
        let padded = open_one(0, &[b'h', b'i', APPLICATION_DATA, 0, 0]).await.unwrap();
        assert_eq!(padded, b"hi", "padding is stripped");
        let Err(over) = open_one(APPLICATION_DATA, &[7u8; MAX_PLAIN + 1]).await else {
            panic!("2^14 + 1 bytes of plaintext accepted");
        };
        assert_eq!(over.kind(), io::ErrorKind::InvalidData);
        assert!(over.to_string().contains("overflow"), "{over}");
        // 2^14 bytes with one byte of padding: the inner plaintext is over 2^14 + 1 bytes.
        let mut padded = most.clone();
        padded.push(APPLICATION_DATA);
        let Err(over) = open_one(0, &padded).await else {
            panic!("2^14 bytes and padding accepted");
        };
        assert!(over.to_string().contains("overflow"), "{over}");
    }
}
