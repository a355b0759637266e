//! Carrying one local socket over a session whose underlying connections come and go.
//!
//! Each end keeps the bytes it sent that the other has not acknowledged yet (at most
//! [`Limits::window`]: beyond it the local socket is not read, which is the backpressure), and
//! acknowledges what it has written to its own local socket. When the underlying connection
//! breaks, [`Link::next`] gives a fresh one whose handshake told each side how much the other
//! has received; each side then sends again from there. So every byte reaches the other local
//! socket exactly once, in order, and neither local socket sees the break.
//!
//! One underlying connection's run is an *epoch*: two halves at once, `up` (local socket → wire:
//! data, acknowledgements, the end of the stream) and `down` (wire → local socket), sharing the
//! state under a lock that is never held across an await. A byte counts as received once written
//! to the local socket, a write at a time, so an epoch cut at any point loses nothing and
//! repeats nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::wire::{Frame, MAX_FRAME, Malformed, ReadError, data_header};
use crate::transport::BoxedIo;

/// How much one end holds and how it acknowledges.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Unacknowledged bytes kept at most; the local socket is not read beyond.
    pub(crate) window: usize,
    /// Acknowledge at the latest after this many bytes...
    pub(crate) ack_every: u64,
    /// ... or this long after the first byte not acknowledged yet.
    pub(crate) ack_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { window: 4 << 20, ack_every: 256 << 10, ack_idle: Duration::from_millis(10) }
    }
}

/// Where the next underlying connection comes from.
pub(crate) trait Link: Send {
    /// A fresh underlying connection with its handshake done, telling the other side that this
    /// one has received `received` bytes; returns it with how many the other side has received.
    fn next(&mut self, received: u64)
    -> impl Future<Output = Result<(BoxedIo, u64), Ended>> + Send;
}

/// Why a session ended other than cleanly. The caller resets its local socket: the application
/// must see an error, not an end of file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    /// The local socket failed.
    #[error("the local connection failed: {0}")]
    LocalFailed(std::io::Error),
    /// The other side's local socket failed.
    #[error("the other end's connection was reset")]
    PeerReset,
    /// No new underlying connection came in time.
    #[error("no way back to the peer: {0}")]
    Lost(String),
    /// The other side answered a hello with this instead of going on (it does not know the
    /// session, or does not offer the service).
    #[error("the peer answered {0:?}")]
    Refused(super::wire::Reply),
    /// The other side broke the protocol.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// What a session carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Bytes from the local socket to the peer.
    pub(crate) sent: u64,
    /// Bytes from the peer to the local socket.
    pub(crate) received: u64,
    /// Underlying connections after the first.
    pub(crate) resumes: u32,
    /// Bytes sent again after a resume.
    pub(crate) resent: u64,
    /// The most unacknowledged bytes held at once.
    pub(crate) peak_unacked: usize,
}

/// Local socket → peer.
#[derive(Default)]
struct Out {
    /// The offset of `buf[0]`: the peer has everything before it.
    base: u64,
    /// Sent (or to send) and not acknowledged.
    buf: VecDeque<u8>,
    /// The local socket's read side ended: the stream ends at `base + buf.len()`.
    eof: bool,
    /// The peer has acknowledged the end of the stream.
    fin_acked: bool,
}

impl Out {
    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
}

/// Peer → local socket.
#[derive(Default)]
struct In {
    /// Bytes written to the local socket.
    received: u64,
    /// The last offset acknowledged to the peer.
    acked: u64,
    /// When an acknowledgement is due at the latest (set at the first byte not acknowledged).
    ack_by: Option<Instant>,
    /// Where the peer's stream ends, once it said.
    fin: Option<u64>,
    /// The local socket's write side was shut down after the last byte.
    shut: bool,
    /// The peer's end of stream was acknowledged.
    fin_acked: bool,
}

#[derive(Default)]
struct State {
    out: Out,
    inn: In,
    totals: Totals,
}

impl State {
    fn done(&self) -> bool {
        self.out.fin_acked && self.inn.shut && self.inn.fin_acked
    }
}

/// Carries `local` over the connections `link` gives until both directions have ended and
/// each end knows it.
pub(crate) async fn carry<L, K>(local: L, link: &mut K, limits: Limits) -> Result<Totals, Ended>
where
    L: AsyncRead + AsyncWrite + Send + Unpin,
    K: Link,
{
    let (mut lr, mut lw) = tokio::io::split(local);
    let state = Mutex::new(State::default());
    let wake = Notify::new();
    let mut first = true;
    loop {
        let received = lock(&state).inn.received;
        let (io, theirs) = link.next(received).await?;
        {
            let mut s = lock(&state);
            let (base, end) = (s.out.base, s.out.end());
            if theirs < base || theirs > end {
                return Err(Malformed("the peer's received offset is out of range").into());
            }
            // Everything before `theirs` arrived: drop it; send again from there.
            s.out.buf.drain(..(theirs - base) as usize);
            s.out.base = theirs;
            s.inn.acked = s.inn.received;
            s.inn.ack_by = None;
            // The end of the peer's stream may not have been acknowledged on the last wire.
            s.inn.fin_acked = false;
            if !first {
                s.totals.resumes += 1;
                s.totals.resent += end - theirs;
            }
        }
        first = false;
        let (mut wr, mut ww) = io.split();
        let finished = Notify::new();
        let up = up(&mut ww, &mut lr, &state, &wake, &finished, limits);
        let down = down(&mut wr, &mut lw, &state, &wake, &finished, limits);
        let epoch = futures::future::try_join(up, down).await;
        match epoch {
            // Both halves done: the session is complete.
            Ok(_) => {
                let _ = ww.close().await;
                return Ok(lock(&state).totals);
            }
            Err(Broken::Wire) => continue,
            Err(Broken::Local(e)) => {
                let _ = ww.write_all(&Frame::Reset.encode_control()).await;
                let _ = ww.flush().await;
                return Err(Ended::LocalFailed(e));
            }
            Err(Broken::PeerReset) => return Err(Ended::PeerReset),
            Err(Broken::Malformed(m)) => return Err(m.into()),
        }
    }
}

/// Why a half stopped before the session was done.
enum Broken {
    /// The underlying connection failed or ended.
    Wire,
    /// The local socket failed.
    Local(std::io::Error),
    PeerReset,
    Malformed(Malformed),
}

impl From<ReadError> for Broken {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(_) => Broken::Wire,
            ReadError::Malformed(m) => Broken::Malformed(m),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `up` does next.
enum Next {
    Ack(Frame),
    /// Send `n` bytes of the buffer, copied into the chunk.
    Data(usize),
    Fin(u64),
    Done,
    /// Nothing now: wait for the local socket (if `read`) or a wake-up (until `ack_by`).
    Wait {
        read: bool,
        ack_by: Option<Instant>,
    },
}

/// Copies `out.len()` bytes of `buf` from `from` on into `out`.
fn copy_out(buf: &VecDeque<u8>, from: usize, out: &mut [u8]) {
    let (front, back) = buf.as_slices();
    let mut done = 0;
    if from < front.len() {
        let n = (front.len() - from).min(out.len());
        out[..n].copy_from_slice(&front[from..from + n]);
        done = n;
    }
    if done == out.len() {
        return;
    }
    let at = (from + done) - front.len();
    let rest = out.len() - done;
    out[done..].copy_from_slice(&back[at..at + rest]);
}

/// Local socket → wire: data (again from the peer's offset after a resume), acknowledgements
/// and the end of the stream.
async fn up<W, R>(
    ww: &mut W,
    lr: &mut R,
    state: &Mutex<State>,
    wake: &Notify,
    finished: &Notify,
    limits: Limits,
) -> Result<(), Broken>
where
    W: futures::AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let wire = |_: std::io::Error| Broken::Wire;
    let mut chunk = vec![0u8; MAX_FRAME];
    // The next byte to put on this wire.
    let mut pos = lock(state).out.base;
    let mut fin_sent = false;
    loop {
        let next = {
            let mut s = lock(state);
            let now = Instant::now();
            let owed = s.inn.received - s.inn.acked;
            let peer_done = s.inn.shut && !s.inn.fin_acked;
            if owed >= limits.ack_every
                || peer_done
                || (owed > 0 && s.inn.ack_by.is_some_and(|t| t <= now))
            {
                let at = s.inn.received;
                s.inn.acked = at;
                s.inn.ack_by = None;
                if s.inn.shut {
                    s.inn.fin_acked = true;
                    Next::Ack(Frame::AckFin(at))
                } else {
                    Next::Ack(Frame::Ack(at))
                }
            } else if pos < s.out.end() {
                let from = (pos - s.out.base) as usize;
                let n = (s.out.buf.len() - from).min(MAX_FRAME);
                copy_out(&s.out.buf, from, &mut chunk[..n]);
                Next::Data(n)
            } else if s.out.eof && !fin_sent {
                Next::Fin(s.out.end())
            } else if s.done() {
                Next::Done
            } else {
                let read = !s.out.eof && s.out.buf.len() < limits.window;
                Next::Wait { read, ack_by: s.inn.ack_by.filter(|_| owed > 0) }
            }
        };
        match next {
            Next::Ack(frame) => ww.write_all(&frame.encode_control()).await.map_err(wire)?,
            Next::Data(n) => {
                ww.write_all(&data_header(n)).await.map_err(wire)?;
                ww.write_all(&chunk[..n]).await.map_err(wire)?;
                pos += n as u64;
            }
            Next::Fin(at) => {
                ww.write_all(&Frame::Fin(at).encode_control()).await.map_err(wire)?;
                fin_sent = true;
            }
            Next::Done => {
                ww.flush().await.map_err(wire)?;
                finished.notify_one();
                return Ok(());
            }
            Next::Wait { read, ack_by } => {
                ww.flush().await.map_err(wire)?;
                let ack_timer = async {
                    match ack_by {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = lr.read(&mut chunk), if read => {
                        let n = r.map_err(Broken::Local)?;
                        let mut s = lock(state);
                        if n == 0 {
                            s.out.eof = true;
                        } else {
                            s.out.buf.extend(&chunk[..n]);
                            s.totals.sent += n as u64;
                            s.totals.peak_unacked = s.totals.peak_unacked.max(s.out.buf.len());
                        }
                    }
                    () = wake.notified() => {}
                    () = ack_timer => {}
                }
            }
        }
    }
}

/// Wire → local socket: data (written a write at a time, each counted as it lands),
/// acknowledgements of ours, the end of the peer's stream.
async fn down<R, W>(
    wr: &mut R,
    lw: &mut W,
    state: &Mutex<State>,
    wake: &Notify,
    finished: &Notify,
    limits: Limits,
) -> Result<(), Broken>
where
    R: futures::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        {
            let s = lock(state);
            if s.done() {
                return Ok(());
            }
        }
        let frame = tokio::select! {
            // Done on both sides (`up` sent the last acknowledgement): nothing more will come
            // that matters, and the peer closes the wire when it is done too.
            () = finished.notified() => return Ok(()),
            f = Frame::read(wr, &mut buf) => match f {
                Ok(f) => f,
                Err(_) if lock(state).done() => return Ok(()),
                // A clean end of the wire before the session is done is a break too.
                Err(e) => return Err(e.into()),
            },
        };
        match frame {
            Frame::Data(bytes) => {
                {
                    let s = lock(state);
                    if s.inn.fin.is_some_and(|f| s.inn.received + bytes.len() as u64 > f) {
                        return Err(Broken::Malformed(Malformed("data beyond the end of stream")));
                    }
                }
                let mut off = 0;
                while off < bytes.len() {
                    let n = lw.write(&bytes[off..]).await.map_err(Broken::Local)?;
                    if n == 0 {
                        return Err(Broken::Local(std::io::ErrorKind::WriteZero.into()));
                    }
                    off += n;
                    let mut s = lock(state);
                    s.inn.received += n as u64;
                    s.totals.received += n as u64;
                    if s.inn.ack_by.is_none() {
                        s.inn.ack_by = Some(Instant::now() + limits.ack_idle);
                    }
                }
                buf = bytes;
                wake.notify_one();
            }
            Frame::Ack(at) | Frame::AckFin(at) => {
                let fin = matches!(frame, Frame::AckFin(_));
                let mut s = lock(state);
                if at < s.out.base || at > s.out.end() || (fin && (!s.out.eof || at != s.out.end()))
                {
                    return Err(Broken::Malformed(Malformed("acknowledgement out of range")));
                }
                let n = (at - s.out.base) as usize;
                s.out.buf.drain(..n);
                s.out.base = at;
                s.out.fin_acked |= fin;
                drop(s);
                wake.notify_one();
            }
            Frame::Fin(at) => {
                let mut s = lock(state);
                if at < s.inn.received || s.inn.fin.is_some_and(|f| f != at) {
                    return Err(Broken::Malformed(Malformed("end of stream out of range")));
                }
                s.inn.fin = Some(at);
            }
            Frame::Reset => return Err(Broken::PeerReset),
        }
        let shut_now = {
            let s = lock(state);
            s.inn.fin == Some(s.inn.received) && !s.inn.shut
        };
        if shut_now {
            // The peer's stream is all here: end the local socket's write side, as TCP would.
            let _ = lw.shutdown().await;
            lock(state).inn.shut = true;
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::super::cut::Cut;
    use super::super::wire::{Hello, Id, Reply};
    use super::*;

    /// The dialling side: each connection is a fresh pipe to the answering side, cut after the
    /// next budget in `cuts` (none: never); a handshake that breaks is tried again.
    struct Dialer {
        to_answerer: mpsc::Sender<Compat<DuplexStream>>,
        cuts: VecDeque<usize>,
        id: Id,
        first: bool,
        /// After this many connections, no path is found any more.
        paths_left: usize,
    }

    impl Link for Dialer {
        async fn next(&mut self, received: u64) -> Result<(BoxedIo, u64), Ended> {
            loop {
                if self.paths_left == 0 {
                    return Err(Ended::Lost("no path".into()));
                }
                self.paths_left -= 1;
                let (a, b) = tokio::io::duplex(64 << 10);
                if self.to_answerer.send(b.compat()).await.is_err() {
                    return Err(Ended::Lost("the answering side is gone".into()));
                }
                let left = self.cuts.pop_front().unwrap_or(usize::MAX);
                let mut io = Cut::new(a.compat(), left);
                let hello = match self.first {
                    true => Hello::New { id: self.id, service: "test".into() },
                    false => Hello::Resume { id: self.id, received },
                };
                let shake = async {
                    io.write_all(&hello.encode().unwrap()).await?;
                    io.flush().await?;
                    Reply::read(&mut io).await.map_err(|e| std::io::Error::other(e.to_string()))
                };
                match shake.await {
                    Ok(Reply::Ok { received: theirs }) => {
                        self.first = false;
                        return Ok((Box::new(io), theirs));
                    }
                    Ok(other) => return Err(Ended::Lost(format!("{other:?}"))),
                    Err(_) => continue,
                }
            }
        }
    }

    /// The answering side: takes the next pipe within `grace`, reads the hello, answers.
    struct Answerer {
        from_dialer: mpsc::Receiver<Compat<DuplexStream>>,
        grace: Duration,
    }

    impl Link for Answerer {
        async fn next(&mut self, received: u64) -> Result<(BoxedIo, u64), Ended> {
            loop {
                let next = tokio::time::timeout(self.grace, self.from_dialer.recv()).await;
                let Ok(Some(mut io)) = next else {
                    return Err(Ended::Lost("no new connection in time".into()));
                };
                let theirs = match Hello::read(&mut io).await {
                    Ok(Hello::New { .. }) => 0,
                    Ok(Hello::Resume { received, .. }) => received,
                    Err(_) => continue,
                };
                if io.write_all(&Reply::Ok { received }.encode()).await.is_err() {
                    continue;
                }
                return Ok((Box::new(io), theirs));
            }
        }
    }

    fn links(cuts: &[usize], paths: usize, grace: Duration) -> (Dialer, Answerer) {
        let (tx, rx) = mpsc::channel(4);
        let dialer = Dialer {
            to_answerer: tx,
            cuts: cuts.iter().copied().collect(),
            id: Id::random().unwrap(),
            first: true,
            paths_left: paths,
        };
        (dialer, Answerer { from_dialer: rx, grace })
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2654435761) ^ seed).to_be_bytes()[1]).collect()
    }

    /// The application at one end: writes `out`, ends its stream, reads everything back.
    async fn app(mut sock: DuplexStream, out: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let (mut r, mut w) = tokio::io::split(&mut sock);
        let send = async {
            w.write_all(&out).await?;
            w.shutdown().await
        };
        let mut got = Vec::new();
        let (sent, read) = tokio::join!(send, r.read_to_end(&mut got));
        sent?;
        read?;
        Ok(got)
    }

    /// Runs a session both ways with `a_out` and `b_out`; returns each end's totals.
    async fn session(
        a_out: &[u8],
        b_out: &[u8],
        cuts: &[usize],
        limits: Limits,
    ) -> (Result<Totals, Ended>, Result<Totals, Ended>) {
        let (mut dialer, mut answerer) = links(cuts, 100, Duration::from_secs(10));
        let (app_a, sess_a) = tokio::io::duplex(64 << 10);
        let (app_b, sess_b) = tokio::io::duplex(64 << 10);
        let a = async move { carry(sess_a, &mut dialer, limits).await };
        let b = async move { carry(sess_b, &mut answerer, limits).await };
        let (ta, tb, got_a, got_b) =
            tokio::join!(a, b, app(app_a, a_out.to_vec()), app(app_b, b_out.to_vec()));
        assert!(got_b.unwrap() == a_out, "b got a's bytes exactly");
        assert!(got_a.unwrap() == b_out, "a got b's bytes exactly");
        (ta, tb)
    }

    #[tokio::test]
    async fn every_byte_once_in_order_across_breaks() {
        let (a_out, b_out) = (pattern(3 << 20, 1), pattern(2 << 20, 2));
        // Breaks at odd places: mid-frame, mid-handshake, mid-acknowledgement.
        let cuts = [200_000, 5, 1_000_003, 77_777, 30, 2_500_001];
        let (ta, tb) = session(&a_out, &b_out, &cuts, Limits::default()).await;
        let (ta, tb) = (ta.unwrap(), tb.unwrap());
        assert_eq!((ta.sent, ta.received), (a_out.len() as u64, b_out.len() as u64));
        assert_eq!((tb.sent, tb.received), (b_out.len() as u64, a_out.len() as u64));
        assert!(ta.resumes >= 4, "resumed across the breaks: {ta:?}");
        assert!(ta.resent + tb.resent > 0, "something was in flight at a break");
    }

    #[tokio::test]
    async fn no_break_no_resume_and_empty_streams_end() {
        let (ta, tb) = session(&pattern(100_000, 3), &[], &[], Limits::default()).await;
        let (ta, tb) = (ta.unwrap(), tb.unwrap());
        assert_eq!((ta.resumes, tb.resumes, ta.resent, tb.resent), (0, 0, 0, 0));
        let (ta, _) = session(&[], &[], &[], Limits::default()).await;
        assert_eq!(ta.unwrap().sent, 0);
    }

    #[tokio::test]
    async fn unacknowledged_bytes_stay_within_the_window() {
        let limits = Limits { window: 256 << 10, ..Limits::default() };
        let (a_out, b_out) = (pattern(4 << 20, 4), pattern(4 << 20, 5));
        let (ta, tb) = session(&a_out, &b_out, &[1_500_000], limits).await;
        for t in [ta.unwrap(), tb.unwrap()] {
            assert!(t.peak_unacked <= limits.window + MAX_FRAME, "{t:?}");
            assert!(t.peak_unacked > 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_with_no_way_back_ends_after_the_grace_period() {
        let grace = Duration::from_secs(30);
        let (mut dialer, mut answerer) = links(&[100_000], 1, grace);
        // The way to the answering side stays open; nothing comes along it.
        let _open = dialer.to_answerer.clone();
        let (app_a, sess_a) = tokio::io::duplex(64 << 10);
        let (_app_b, sess_b) = tokio::io::duplex(1 << 20);
        let start = Instant::now();
        let a = tokio::spawn(async move { carry(sess_a, &mut dialer, Limits::default()).await });
        let b = tokio::spawn(async move { carry(sess_b, &mut answerer, Limits::default()).await });
        let _app = tokio::spawn(app(app_a, pattern(1 << 20, 6)));
        let ea = a.await.unwrap().unwrap_err();
        assert!(matches!(ea, Ended::Lost(_)), "{ea}");
        let eb = b.await.unwrap().unwrap_err();
        assert!(matches!(eb, Ended::Lost(_)), "{eb}");
        let waited = start.elapsed();
        assert!(waited >= grace && waited < grace + Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test]
    async fn a_peer_that_breaks_the_protocol_is_refused() {
        // Data beyond the end of stream it announced, an acknowledgement of bytes never sent,
        // and a reset: each ends the session with an error (never a panic or a hang).
        for frames in [
            vec![Frame::Fin(2), Frame::Data(vec![1, 2, 3])],
            vec![Frame::Ack(10)],
            vec![Frame::Reset],
        ] {
            let (mut dialer, mut answerer) = links(&[], 100, Duration::from_secs(10));
            let (_app_b, sess_b) = tokio::io::duplex(1 << 16);
            let b =
                tokio::spawn(async move { carry(sess_b, &mut answerer, Limits::default()).await });
            let (mut io, theirs) = dialer.next(0).await.unwrap();
            assert_eq!(theirs, 0);
            for f in &frames {
                io.write_all(&f.encode_control()).await.unwrap();
            }
            io.flush().await.unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(10), b).await.unwrap().unwrap();
            let err = ended.unwrap_err();
            match frames.last() {
                Some(Frame::Reset) => assert!(matches!(err, Ended::PeerReset), "{err}"),
                _ => assert!(matches!(err, Ended::Malformed(_)), "{frames:?}: {err}"),
            }
        }
    }
}
