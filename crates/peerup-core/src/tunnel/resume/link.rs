//! Where each side's next underlying connection comes from ([`super::engine::Link`]).
//!
//! The dialling side ([`Dialling`]) opens the first connection with a new session's hello, and
//! after a break dials again (any route the tunnel finds) with a resume, backing off between
//! tries, until the grace period since the break is over. The answering side ([`Answering`])
//! answers the first hello, then waits up to the grace period for the table
//! ([`super::table::Sessions`]) to hand it a resumed connection.

use std::time::Duration;

use futures::AsyncWriteExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::engine::{Ended, Link};
use super::table::Session;
use super::wire::{Hello, Id, Reply};
use crate::transport::BoxedIo;

/// The first pause between tries to find a way back; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one try (dial and handshake) may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// A way to open a fresh underlying connection to the answering side's session endpoint.
pub(crate) type Redial = Box<dyn FnMut() -> BoxFuture<'static, Option<BoxedIo>> + Send>;

/// The dialling side.
pub(crate) struct Dialling {
    id: Id,
    service: String,
    /// The first connection, until the session is opened on it.
    first: Option<BoxedIo>,
    redial: Redial,
    grace: Duration,
}

impl Dialling {
    /// A new session `id` to `service`, opened on `first`; `redial` finds a way back after a
    /// break, for up to `grace`.
    pub(crate) fn new(
        id: Id,
        service: &str,
        first: BoxedIo,
        redial: Redial,
        grace: Duration,
    ) -> Self {
        Self { id, service: service.to_string(), first: Some(first), redial, grace }
    }

    async fn shake(mut io: BoxedIo, hello: &Hello) -> Result<(BoxedIo, Reply), String> {
        let hello = hello.encode().map_err(|e| e.to_string())?;
        let shake = async {
            io.write_all(&hello).await?;
            io.flush().await?;
            Reply::read(&mut io).await.map_err(|e| std::io::Error::other(e.to_string()))
        };
        match tokio::time::timeout(TRY_TIMEOUT, shake).await {
            Ok(Ok(reply)) => Ok((io, reply)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

impl Link for Dialling {
    async fn next(&mut self, received: u64) -> Result<(BoxedIo, u64), Ended> {
        if let Some(first) = self.first.take() {
            let hello = Hello::New { id: self.id, service: self.service.clone() };
            return match Self::shake(first, &hello).await {
                Ok((io, Reply::Ok { received: theirs })) => Ok((io, theirs)),
                Ok((_, reply)) => Err(Ended::Refused(reply)),
                Err(e) => Err(Ended::Lost(e)),
            };
        }
        let hello = Hello::Resume { id: self.id, received };
        let deadline = Instant::now() + self.grace;
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::from("no path found");
        while Instant::now() < deadline {
            if let Some(io) = (self.redial)().await {
                match Self::shake(io, &hello).await {
                    Ok((io, Reply::Ok { received: theirs })) => return Ok((io, theirs)),
                    // The other side no longer has the session: there is nothing to resume.
                    Ok((_, reply)) => return Err(Ended::Refused(reply)),
                    Err(e) => last = e,
                }
            }
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(Ended::Lost(format!("no way back within {:?} ({last})", self.grace)))
    }
}

/// The answering side.
pub(crate) struct Answering {
    /// The first connection, whose new-session hello was read, until it is answered.
    first: Option<BoxedIo>,
    session: Session,
    grace: Duration,
}

impl Answering {
    /// A session opened by the hello read on `first`, its resumed connections arriving through
    /// `session`, each within `grace` of a break.
    pub(crate) fn new(first: BoxedIo, session: Session, grace: Duration) -> Self {
        Self { first: Some(first), session, grace }
    }

    /// Answers the first hello with `reply` instead of going on (the service is unavailable).
    pub(crate) async fn refuse(mut self, reply: Reply) {
        if let Some(mut io) = self.first.take() {
            let _ = io.write_all(&reply.encode()).await;
            let _ = io.close().await;
        }
    }
}

impl Link for Answering {
    async fn next(&mut self, received: u64) -> Result<(BoxedIo, u64), Ended> {
        {
            let (mut io, theirs) = match self.first.take() {
                Some(io) => (io, 0),
                None => {
                    let next = tokio::time::timeout(self.grace, self.session.resumed.recv());
                    match next.await {
                        Ok(Some(resumed)) => resumed,
                        Ok(None) => return Err(Ended::Lost("the session was revoked".into())),
                        Err(_) => {
                            return Err(Ended::Lost(format!(
                                "the peer did not come back within {:?}",
                                self.grace
                            )));
                        }
                    }
                }
            };
            let reply = Reply::Ok { received }.encode();
            // A connection that fails at once is a break like any other: the engine asks again.
            let _ = io.write_all(&reply).await;
            Ok((io, theirs))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;
    use libp2p::PeerId;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::{Mutex, mpsc};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::super::engine::{Limits, carry};
    use super::super::table::Sessions;
    use super::*;

    /// The answering side's endpoint: reads each connection's hello; a new session's goes to
    /// `new`, a resume to the table (or is answered `Unknown`).
    fn endpoint(
        table: Sessions,
        peer: PeerId,
    ) -> (mpsc::Sender<BoxedIo>, mpsc::Receiver<(BoxedIo, Id)>) {
        let (conns, mut incoming) = mpsc::channel::<BoxedIo>(8);
        let (new_tx, new) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(mut io) = incoming.recv().await {
                match Hello::read(&mut io).await {
                    Ok(Hello::New { id, .. }) => {
                        let _ = new_tx.send((io, id)).await;
                    }
                    Ok(Hello::Resume { id, received }) => {
                        if let Err((mut io, _)) = table.resume(peer, id, (io, received)) {
                            let _ = io.write_all(&Reply::Unknown.encode()).await;
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        (conns, new)
    }

    /// A redial that opens a pipe to the endpoint, the first `cuts` of them cut early: the
    /// dialler's end fails after that many bytes.
    fn redial(to: mpsc::Sender<BoxedIo>, cuts: Arc<Mutex<Vec<usize>>>) -> Redial {
        Box::new(move || {
            let (to, cuts) = (to.clone(), cuts.clone());
            async move {
                let (a, b) = tokio::io::duplex(64 << 10);
                to.send(Box::new(b.compat())).await.ok()?;
                let left = cuts.lock().await.pop();
                let io: BoxedIo = match left {
                    Some(n) => Box::new(super::super::cut::Cut::new(a.compat(), n)),
                    None => Box::new(a.compat()),
                };
                Some(io)
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn a_session_comes_back_through_the_table_after_breaks() {
        let (table, peer) = (Sessions::new(8), PeerId::random());
        let (to_endpoint, mut new) = endpoint(table.clone(), peer);
        let cuts = Arc::new(Mutex::new(vec![700_000, 3, 150_000]));
        let mut open = redial(to_endpoint, cuts.clone());
        let first = open().await.unwrap();
        let id = Id::random().unwrap();
        let grace = Duration::from_secs(10);
        let mut dialling = Dialling::new(id, "echo", first, open, grace);
        let (app_a, sess_a) = tokio::io::duplex(64 << 10);
        let (mut app_b, sess_b) = tokio::io::duplex(64 << 10);
        let a = tokio::spawn(async move { carry(sess_a, &mut dialling, Limits::default()).await });
        let (io, got_id) = new.recv().await.unwrap();
        assert_eq!(got_id, id);
        let session = table.open(peer, id).unwrap();
        let mut answering = Answering::new(io, session, grace);
        let b = tokio::spawn(async move { carry(sess_b, &mut answering, Limits::default()).await });
        // b echoes what a sends.
        let echo = tokio::spawn(async move {
            let mut all = Vec::new();
            app_b.read_to_end(&mut all).await.unwrap();
            app_b.write_all(&all).await.unwrap();
            app_b.shutdown().await.unwrap();
        });
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let (mut r, mut w) = tokio::io::split(app_a);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        echo.await.unwrap();
        assert!(back == data, "echoed byte for byte");
        let (ta, tb) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert!(ta.resumes >= 2 && tb.resumes >= 2, "{ta:?} {tb:?}");
        assert!(cuts.lock().await.is_empty());
        assert_eq!(table.len(), 0, "the session left the table when it ended");
    }

    #[tokio::test]
    async fn a_resume_the_other_side_does_not_know_ends_the_session() {
        let (table, peer) = (Sessions::new(8), PeerId::random());
        let (to_endpoint, _new) = endpoint(table, peer);
        let open = redial(to_endpoint, Arc::default());
        let first: BoxedIo = Box::new(tokio::io::duplex(16).0.compat());
        // Skip the first connection: resume straight away, a session the table never had.
        let mut dialling =
            Dialling::new(Id::random().unwrap(), "echo", first, open, Duration::from_secs(10));
        dialling.first = None;
        let Err(ended) = dialling.next(0).await else { panic!("resumed a session nobody had") };
        assert!(matches!(ended, Ended::Refused(Reply::Unknown)), "{ended}");
    }
}
