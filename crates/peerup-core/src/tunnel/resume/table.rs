//! The answering side's sessions, by the peer that opened each and its identity.
//!
//! A resume is looked up under the peer ID its connection authenticated, so a session is found
//! only by the peer that opened it, whatever identity another peer sends; and a peer holds at
//! most so many sessions, however many it asks for. Revoking a peer drops its sessions: each
//! one's engine then finds no way back and ends, resetting its local socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::mpsc;

use super::wire::Id;
use crate::transport::BoxedIo;

/// A resumed underlying connection for a session, with how many bytes the dialler has received.
pub(crate) type Resumed = (BoxedIo, u64);

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The peer holds as many sessions as it may.
    #[error("too many resumable sessions from this peer")]
    Full,
    /// The peer already has a session of this identity.
    #[error("a resumable session of this identity is open already")]
    Taken,
}

/// Each session's sender, with the number that tells it from a later session of the same id.
type Map = HashMap<PeerId, HashMap<Id, (u64, mpsc::Sender<Resumed>)>>;

/// The answering side's sessions.
#[derive(Clone)]
pub(crate) struct Sessions {
    map: Arc<Mutex<Map>>,
    next: Arc<std::sync::atomic::AtomicU64>,
    per_peer: usize,
}

/// One session's place in the table, given back when dropped; its resumed connections arrive on
/// `resumed`.
pub(crate) struct Session {
    pub(crate) resumed: mpsc::Receiver<Resumed>,
    table: Sessions,
    peer: PeerId,
    id: Id,
    generation: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut map = self.table.lock();
        if let Some(ids) = map.get_mut(&self.peer) {
            // Only this session's own entry: after a revocation a new one may hold the id.
            if ids.get(&self.id).is_some_and(|(g, _)| *g == self.generation) {
                ids.remove(&self.id);
            }
            if ids.is_empty() {
                map.remove(&self.peer);
            }
        }
    }
}

impl Sessions {
    /// A table that lets one peer hold at most `per_peer` sessions.
    pub(crate) fn new(per_peer: usize) -> Self {
        Self { map: Arc::default(), next: Arc::default(), per_peer }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens session `id` for `peer`.
    pub(crate) fn open(&self, peer: PeerId, id: Id) -> Result<Session, OpenError> {
        let mut map = self.lock();
        let ids = map.entry(peer).or_default();
        if ids.contains_key(&id) {
            return Err(OpenError::Taken);
        }
        if ids.len() >= self.per_peer {
            if ids.is_empty() {
                map.remove(&peer);
            }
            return Err(OpenError::Full);
        }
        let (tx, resumed) = mpsc::channel(1);
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ids.insert(id, (generation, tx));
        Ok(Session { resumed, table: self.clone(), peer, id, generation })
    }

    /// Hands a resumed connection to `peer`'s session `id`; gives it back if `peer` has no such
    /// session (or it cannot take one now).
    pub(crate) fn resume(&self, peer: PeerId, id: Id, conn: Resumed) -> Result<(), Resumed> {
        let tx = self.lock().get(&peer).and_then(|ids| ids.get(&id)).map(|(_, tx)| tx.clone());
        match tx {
            Some(tx) => tx.try_send(conn).map_err(|e| e.into_inner()),
            None => Err(conn),
        }
    }

    /// Drops every session of `peer`: none can be resumed, and each one's engine, finding no
    /// way back, ends.
    pub(crate) fn revoke(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }

    /// Sessions open, all peers together.
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    fn conn() -> Resumed {
        (Box::new(tokio::io::duplex(16).0.compat()), 0)
    }

    #[tokio::test]
    async fn only_the_peer_that_opened_a_session_resumes_it() {
        let table = Sessions::new(4);
        let (alice, mallory, id) = (PeerId::random(), PeerId::random(), Id::random().unwrap());
        let mut session = table.open(alice, id).unwrap();
        // Another peer that knows (or guesses) the identity gets nothing.
        assert!(table.resume(mallory, id, conn()).is_err());
        assert!(table.resume(alice, Id::random().unwrap(), conn()).is_err());
        assert!(session.resumed.try_recv().is_err());
        table.resume(alice, id, conn()).map_err(|_| ()).unwrap();
        assert!(session.resumed.try_recv().is_ok(), "the opener's resume arrives");
        assert_eq!(table.open(alice, id).err(), Some(OpenError::Taken));
        drop(session);
        assert_eq!(table.len(), 0, "the entry goes with its session");
        assert!(table.resume(alice, id, conn()).is_err(), "an ended session is unknown");
    }

    #[test]
    fn a_peer_holds_so_many_sessions() {
        let table = Sessions::new(2);
        let peer = PeerId::random();
        let a = table.open(peer, Id::random().unwrap()).unwrap();
        let _b = table.open(peer, Id::random().unwrap()).unwrap();
        assert_eq!(table.open(peer, Id::random().unwrap()).err(), Some(OpenError::Full));
        assert!(table.open(PeerId::random(), Id::random().unwrap()).is_ok(), "per peer");
        drop(a);
        assert!(table.open(peer, Id::random().unwrap()).is_ok(), "a place given back");
    }

    #[tokio::test]
    async fn revoking_a_peer_ends_its_sessions() {
        let table = Sessions::new(4);
        let (peer, id) = (PeerId::random(), Id::random().unwrap());
        let mut session = table.open(peer, id).unwrap();
        table.revoke(&peer);
        assert!(session.resumed.recv().await.is_none(), "no way back: the engine ends");
        assert!(table.resume(peer, id, conn()).is_err());
        // A new session of the same identity after the revocation is not removed by the old
        // one's end.
        let _new = table.open(peer, id).unwrap();
        drop(session);
        assert_eq!(table.len(), 1);
    }
}
