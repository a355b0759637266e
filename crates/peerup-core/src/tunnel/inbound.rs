//! Inbound connections to a service, whichever way they came: yamux streams from the node, and
//! bulk connections from the acceptor ([`super::bulk`]), delivered as one kind.

use std::io;

use futures::AsyncWriteExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::bulk::{self, Registry};
use crate::metrics::Metrics;
use crate::streams::IncomingStream;
use crate::transport::BoxedIo;

/// A connection to one of this node's services from an authorized peer that may use it. The
/// service answers it once it knows whether it can serve it: [`Inbound::accept`] or
/// [`Inbound::unavailable`].
pub struct Inbound {
    peer: PeerId,
    path: &'static str,
    via: Option<Multiaddr>,
    kind: Kind,
}

enum Kind {
    Stream(libp2p::Stream),
    /// A bulk connection whose request named the service, waiting for the answer.
    Bulk {
        io: BoxedIo,
        metrics: Metrics,
    },
}

impl Inbound {
    pub(crate) fn stream(s: IncomingStream) -> Self {
        let via = Some(s.path.remote_addr.clone());
        Self { peer: s.peer, path: s.path.kind(), via, kind: Kind::Stream(s.stream) }
    }

    pub(crate) fn bulk(peer: PeerId, path: &'static str, io: BoxedIo, metrics: Metrics) -> Self {
        Self { peer, path, via: None, kind: Kind::Bulk { io, metrics } }
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// How it came, for the logs: `DIRECT` or `RELAYED` (a yamux stream), or a bulk path
    /// (`DIRECT/bulk`, `DIRECT/punched`, `RELAYED/legs`, `RELAYED/bulk`).
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The address of the node connection a yamux stream rides.
    pub fn via(&self) -> Option<&Multiaddr> {
        self.via.as_ref()
    }

    /// The service is ready: the connection, to carry its bytes.
    pub async fn accept(self) -> io::Result<BoxedIo> {
        match self.kind {
            Kind::Stream(s) => Ok(Box::new(s)),
            Kind::Bulk { mut io, metrics } => {
                // Counted before the answer, so that a client holding the answer sees it counted.
                metrics.bulk_connections.inc();
                io.write_all(&[bulk::Answer::Ok as u8]).await?;
                io.flush().await?;
                Ok(io)
            }
        }
    }

    /// The service cannot be reached: the peer is told so (a yamux stream is reset).
    pub async fn unavailable(self) {
        if let Kind::Bulk { io, .. } = self.kind {
            bulk::last_answer(io, bulk::Answer::Unavailable).await;
        }
    }
}

/// The connections to one service ([`super::Tunnel::accept`]); dropping it withdraws the
/// service from the bulk path (its stream protocol stays until the node's receiver goes too).
pub struct Accepted {
    streams: mpsc::Receiver<IncomingStream>,
    bulk: mpsc::Receiver<Inbound>,
    registry: Registry,
    offered: bulk::Offer,
    /// Set once one of the two sources closed.
    streams_done: bool,
    bulk_done: bool,
}

impl Accepted {
    pub(crate) fn new(
        streams: mpsc::Receiver<IncomingStream>,
        bulk: mpsc::Receiver<Inbound>,
        registry: Registry,
        offered: bulk::Offer,
    ) -> Self {
        Self { streams, bulk, registry, offered, streams_done: false, bulk_done: false }
    }

    /// The next connection; `None` once the service stopped being offered.
    pub async fn recv(&mut self) -> Option<Inbound> {
        loop {
            if self.streams_done {
                // The stream protocol was withdrawn: so is the service.
                return None;
            }
            tokio::select! {
                s = self.streams.recv() => match s {
                    Some(s) => return Some(Inbound::stream(s)),
                    None => self.streams_done = true,
                },
                b = self.bulk.recv(), if !self.bulk_done => match b {
                    Some(b) => return Some(b),
                    None => self.bulk_done = true,
                },
            }
        }
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        self.registry.remove_if(&self.offered);
    }
}

impl crate::serve::Accept for Accepted {
    type Item = Inbound;

    async fn next(&mut self) -> Option<Inbound> {
        self.recv().await
    }
}
