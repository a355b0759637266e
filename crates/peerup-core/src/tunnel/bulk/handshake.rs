//! The bulk path's handshake: libp2p's TLS 1.3 handshake run by rustls, after which the traffic
//! keys are taken over by peerup's own record layer ([`Sealed`]).
//!
//! Taking the keys over is only safe when rustls holds no bytes it has read but not processed,
//! so during the handshake the socket is read one TLS record at a time ([`RecordReads`]): rustls
//! never sees a byte past the record that finished the handshake, and whatever the peer sends
//! next (the bulk request, or a service's first bytes) stays in the socket for [`Sealed`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;

use super::records::Sealed;
use crate::transport::tls::TlsError;

/// Reads that hand rustls whole TLS records only: bytes of a record are passed on once all of it
/// has arrived, and whatever arrived after the last whole record stays here. So when the
/// handshake is over, everything rustls has read is processed, and the rest is in `buf`.
pub(crate) struct RecordReads<C> {
    io: C,
    /// Received bytes not yet passed on, starting at a record boundary unless `ready` > 0.
    buf: Vec<u8>,
    /// How many bytes at the front of `buf` belong to whole records and may be passed on.
    ready: usize,
}

/// The length of the whole records at the front of `buf`.
fn whole_records(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = buf.get(at..at + 5) {
        let end = at + 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if end > buf.len() {
            break;
        }
        at = end;
    }
    at
}

impl<C> RecordReads<C> {
    pub(crate) fn new(io: C) -> Self {
        Self { io, buf: Vec::new(), ready: 0 }
    }

    /// The socket back, with the bytes received past the handshake, unless a record was only
    /// partly passed on.
    fn into_inner(self) -> Result<(C, Vec<u8>), TlsError> {
        match self.ready {
            0 => Ok((self.io, self.buf)),
            _ => Err(TlsError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake ended inside a record",
            ))),
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for RecordReads<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        while this.ready == 0 {
            this.ready = whole_records(&this.buf);
            if this.ready > 0 {
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut chunk))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.buf.extend_from_slice(&chunk[..n]);
        }
        let n = this.ready.min(out.len());
        out[..n].copy_from_slice(&this.buf[..n]);
        this.buf.drain(..n);
        this.ready -= n;
        Poll::Ready(Ok(n))
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for RecordReads<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// Hands a finished handshake's keys to [`Sealed`], with what was received past it: plaintext
/// rustls already opened (the peer may send right after its last handshake message), and
/// records not yet passed to rustls.
fn take_over<C>(io: RecordReads<C>, mut conn: rustls::Connection) -> Result<Sealed<C>, TlsError> {
    let unread = conn.process_new_packets()?.plaintext_bytes_to_read();
    if conn.wants_write() {
        return Err(TlsError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "handshake messages left to send",
        )));
    }
    let mut plain = vec![0u8; unread];
    io::Read::read_exact(&mut conn.reader(), &mut plain)?;
    let (io, raw) = io.into_inner()?;
    Ok(Sealed::resume(io, conn.dangerous_extract_secrets()?, plain, raw)?)
}

/// Checks that the handshake agreed on the bulk path's ALPN ([`super::ALPN`]). rustls fails a
/// handshake whose client offers only other protocols, but not one whose client offers none, nor
/// one whose server picks none.
fn check_alpn(state: &rustls::CommonState) -> Result<(), TlsError> {
    match state.alpn_protocol() {
        Some(p) if p == super::ALPN => Ok(()),
        _ => Err(TlsError::Rustls(rustls::Error::NoApplicationProtocol)),
    }
}

/// Runs the handshake as the client; returns the peer's ID and the connection.
pub(crate) async fn client<C>(
    config: Arc<rustls::ClientConfig>,
    socket: C,
) -> Result<(PeerId, Sealed<C>), TlsError>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let stream = futures_rustls::TlsConnector::from(config)
        .connect(crate::transport::tls::no_sni(), RecordReads::new(socket))
        .await?;
    check_alpn(stream.get_ref().1)?;
    let peer = crate::transport::tls::remote_peer(stream.get_ref().1)?;
    let (io, conn) = stream.into_inner();
    Ok((peer, take_over(io, conn.into())?))
}

/// Runs the handshake as the server; returns the peer's ID and the connection.
pub(crate) async fn server<C>(
    config: Arc<rustls::ServerConfig>,
    socket: C,
) -> Result<(PeerId, Sealed<C>), TlsError>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let stream = futures_rustls::TlsAcceptor::from(config).accept(RecordReads::new(socket)).await?;
    check_alpn(stream.get_ref().1)?;
    let peer = crate::transport::tls::remote_peer(stream.get_ref().1)?;
    let (io, conn) = stream.into_inner();
    Ok((peer, take_over(io, conn.into())?))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::identity::Keypair;
    use tokio::io::DuplexStream;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::super::records::MAX_PLAIN;
    use super::*;
    use crate::transport::tls;

    type End = Sealed<Compat<DuplexStream>>;

    fn configs() -> (tls::Config, tls::Config, PeerId, PeerId) {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let ids = (a.public().to_peer_id(), b.public().to_peer_id());
        (tls::Config::new(&a).unwrap(), tls::Config::new(&b).unwrap(), ids.0, ids.1)
    }

    /// A client and a server end, handshaken over an in-memory pipe.
    async fn pair() -> (End, End) {
        let (ca, cb, ida, idb) = configs();
        let (x, y) = tokio::io::duplex(1 << 20);
        let (c, s) = tokio::join!(
            client(ca.for_alpn(crate::tunnel::bulk::ALPN).client, x.compat()),
            server(cb.for_alpn(crate::tunnel::bulk::ALPN).server, y.compat())
        );
        let ((saw_b, c), (saw_a, s)) = (c.unwrap(), s.unwrap());
        assert_eq!((saw_a, saw_b), (ida, idb), "both ends authenticated by peer ID");
        (c, s)
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Writes `data` in uneven chunks, then closes.
    async fn send(mut w: impl AsyncWrite + Unpin, data: Vec<u8>) {
        let mut rest = &data[..];
        let mut size = 1;
        while !rest.is_empty() {
            let n = size.min(rest.len());
            w.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
            size = (size * 7 + 3) % (300 * 1024) + 1;
        }
        w.close().await.unwrap();
    }

    #[tokio::test]
    async fn both_directions_are_byte_exact_and_close_cleanly() {
        let (c, s) = pair().await;
        let (mut cr, cw) = c.split();
        let (mut sr, sw) = s.split();
        let (up, down) = (payload(3 << 20, 1), payload((1 << 20) + 17, 2));
        let (got_up, got_down) = tokio::join!(
            async {
                let mut v = Vec::new();
                sr.read_to_end(&mut v).await.unwrap();
                v
            },
            async {
                let mut v = Vec::new();
                cr.read_to_end(&mut v).await.unwrap();
                v
            },
            send(cw, up.clone()),
            send(sw, down.clone()),
        )
        .into_tuple2();
        assert!(got_up == up, "client to server");
        assert!(got_down == down, "server to client");
    }

    trait Tuple2<A, B> {
        fn into_tuple2(self) -> (A, B);
    }
    impl<A, B, C, D> Tuple2<A, B> for (A, B, C, D) {
        fn into_tuple2(self) -> (A, B) {
            (self.0, self.1)
        }
    }

    #[tokio::test]
    async fn the_records_are_tls_records_that_rustls_reads_and_writes() {
        let (ca, cb, _, _) = configs();
        let (x, y) = tokio::io::duplex(1 << 20);
        let acceptor =
            futures_rustls::TlsAcceptor::from(cb.for_alpn(crate::tunnel::bulk::ALPN).server);
        let (c, s) = tokio::join!(
            client(ca.for_alpn(crate::tunnel::bulk::ALPN).client, x.compat()),
            acceptor.accept(y.compat())
        );
        let (mut ours, mut theirs) = (c.unwrap().1, s.unwrap());
        let data = payload(200_000, 3);
        ours.write_all(&data).await.unwrap();
        ours.flush().await.unwrap();
        let mut got = vec![0; data.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert!(got == data, "rustls read our records");
        theirs.write_all(&data[..70_000]).await.unwrap();
        theirs.close().await.unwrap();
        let mut back = Vec::new();
        ours.read_to_end(&mut back).await.unwrap();
        assert!(back == data[..70_000], "we read rustls' records, and its close_notify");
    }

    #[tokio::test]
    async fn keys_move_on_together_and_a_lone_rekey_fails() {
        let (mut c, mut s) = pair().await;
        c.rekey_after(3);
        s.rekey_after(3);
        let data = payload(40 * MAX_PLAIN + 5, 4);
        let (_, got) = tokio::join!(send(&mut c, data.clone()), async {
            let mut v = Vec::new();
            s.read_to_end(&mut v).await.unwrap();
            v
        });
        assert!(got == data, "40 records across 13 keys");

        let (mut c, mut s) = pair().await;
        c.rekey_after(2);
        c.write_all(&payload(3 * MAX_PLAIN, 5)).await.unwrap();
        c.flush().await.unwrap();
        let mut buf = vec![0; 4 * MAX_PLAIN];
        let mut read = 0;
        let err = loop {
            match s.read(&mut buf).await {
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert_eq!(read, 2 * MAX_PLAIN, "the records before the new key");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    /// Copies `from` to `to`, flipping one bit in the first byte after `flip`'s flag is set.
    async fn tamper(
        mut from: tokio::io::ReadHalf<DuplexStream>,
        mut to: tokio::io::WriteHalf<DuplexStream>,
        flip: Arc<AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if flip.swap(false, Ordering::SeqCst) {
                buf[n - 1] ^= 1;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test]
    async fn a_changed_byte_is_an_error_not_data() {
        let (ca, cb, _, _) = configs();
        let (x, x2) = tokio::io::duplex(1 << 20);
        let (y2, y) = tokio::io::duplex(1 << 20);
        let flip = Arc::new(AtomicBool::new(false));
        let (x2r, x2w) = tokio::io::split(x2);
        let (y2r, y2w) = tokio::io::split(y2);
        tokio::spawn(tamper(x2r, y2w, flip.clone()));
        tokio::spawn(tamper(y2r, x2w, Arc::new(AtomicBool::new(false))));
        let (c, s) = tokio::join!(
            client(ca.for_alpn(crate::tunnel::bulk::ALPN).client, x.compat()),
            server(cb.for_alpn(crate::tunnel::bulk::ALPN).server, y.compat())
        );
        let (mut c, mut s) = (c.unwrap().1, s.unwrap().1);
        flip.store(true, Ordering::SeqCst);
        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 16];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn malformed_records_are_errors() {
        let (_, mut s) = pair().await;
        let cases: [&[u8]; 4] = [
            &[22, 3, 3, 0, 20],      // a handshake record after the handshake
            &[23, 3, 1, 0, 20],      // not TLS 1.3's record version
            &[23, 3, 3, 0x48, 0x01], // longer than TLS allows
            &[23, 3, 3, 0, 4],       // shorter than a tag
        ];
        for bad in cases {
            assert_eq!(s.open_raw(bad).unwrap_err().kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        let (_, mut s) = pair().await;
        assert!(!s.open_raw(&[23, 3, 3, 0, 17]).unwrap(), "a header alone waits for its body");
    }

    /// A handshake between `client` and `server` over an in-memory pipe, as the bulk path runs
    /// it; the two ends' results.
    async fn alpn_handshake(
        client_config: rustls::ClientConfig,
        server_config: rustls::ServerConfig,
    ) -> (Result<(), TlsError>, Result<(), TlsError>) {
        let (x, y) = tokio::io::duplex(1 << 20);
        let (c, s) = tokio::join!(
            client(Arc::new(client_config), x.compat()),
            server(Arc::new(server_config), y.compat())
        );
        (c.map(|_| ()), s.map(|_| ()))
    }

    #[tokio::test]
    async fn the_handshake_commits_to_the_bulk_alpn() {
        let (ca, cb, _, _) = configs();
        let (bulk_client, bulk_server) = (
            (*ca.for_alpn(crate::tunnel::bulk::ALPN).client).clone(),
            (*cb.for_alpn(crate::tunnel::bulk::ALPN).server).clone(),
        );
        let (c, s) = alpn_handshake(bulk_client.clone(), bulk_server.clone()).await;
        assert!(c.is_ok() && s.is_ok(), "the bulk ALPN on both ends: {c:?} {s:?}");

        // A swarm handshake's client (ALPN `libp2p`) is refused by the bulk server, and a bulk
        // client by a swarm server.
        let (swarm_client, swarm_server) =
            ((*ca.client_config()).clone(), (*cb.server_config()).clone());
        assert_eq!(swarm_client.alpn_protocols, [b"libp2p".to_vec()]);
        for (client_config, server_config) in
            [(swarm_client, bulk_server.clone()), (bulk_client.clone(), swarm_server)]
        {
            let (c, s) = alpn_handshake(client_config, server_config).await;
            assert!(c.is_err() && s.is_err(), "{c:?} {s:?}");
        }

        // A client that offers no ALPN at all (which rustls lets through), or a server that
        // picks none: refused by the other end.
        let mut silent_client = bulk_client.clone();
        silent_client.alpn_protocols.clear();
        let (_, s) = alpn_handshake(silent_client, bulk_server).await;
        let err = s.expect_err("the server wants the bulk ALPN offered");
        assert!(matches!(err, TlsError::Rustls(rustls::Error::NoApplicationProtocol)), "{err}");
        let mut silent_server = (*cb.for_alpn(crate::tunnel::bulk::ALPN).server).clone();
        silent_server.alpn_protocols.clear();
        let (c, _) = alpn_handshake(bulk_client, silent_server).await;
        let err = c.expect_err("the client wants the bulk ALPN picked");
        assert!(matches!(err, TlsError::Rustls(rustls::Error::NoApplicationProtocol)), "{err}");
    }

    #[tokio::test]
    async fn handshake_reads_pass_on_whole_records_only() {
        let wire: Vec<u8> =
            [&[22, 3, 3, 0, 3, 1, 2, 3][..], &[23, 3, 3, 0, 1, 9], &[23, 3, 3]].concat();
        let mut r = RecordReads::new(futures::io::Cursor::new(wire));
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).await.unwrap(), 14, "the two whole records");
        assert_eq!(r.read(&mut buf).await.unwrap(), 0, "a partial record is held back");
        let (_, rest) = r.into_inner().unwrap();
        assert_eq!(rest, [23, 3, 3], "and handed over");
    }

    #[tokio::test]
    async fn a_socket_handed_over_mid_record_is_refused() {
        let mut r = RecordReads::new(futures::io::Cursor::new(vec![23, 3, 3, 0, 2, 1, 2]));
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).await.unwrap(), 3, "part of a whole record");
        assert!(r.into_inner().is_err());
    }

    #[tokio::test]
    async fn bytes_sent_right_after_the_handshake_are_kept() {
        // The client speaks first, at once: its bytes may reach the server's rustls before the
        // server has finished its handshake.
        let (ca, cb, _, _) = configs();
        let (x, y) = tokio::io::duplex(1 << 20);
        let client_side = async {
            let (_, mut c) =
                client(ca.for_alpn(crate::tunnel::bulk::ALPN).client, x.compat()).await.unwrap();
            c.write_all(b"first words").await.unwrap();
            c.write_all(&payload(100_000, 6)).await.unwrap();
            c.flush().await.unwrap();
            c
        };
        let server_side = async {
            // Let the client's bytes arrive before the server even starts.
            tokio::task::yield_now().await;
            server(cb.for_alpn(crate::tunnel::bulk::ALPN).server, y.compat()).await.unwrap().1
        };
        let (_c, mut s) = tokio::join!(client_side, server_side);
        let mut got = vec![0u8; 11 + 100_000];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..11], b"first words");
        assert!(got[11..] == payload(100_000, 6)[..]);
    }
}
