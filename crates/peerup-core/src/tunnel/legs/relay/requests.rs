//! The relay's answers to [`OPEN`] requests: a peer asks for a leg pair to another; the relay
//! checks both, tells the target its token over a stream of its own ([`INCOMING`]) and answers
//! the dialer with its token.

use std::sync::Arc;

use futures::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};

use super::Legs;
use crate::gate::AccessList;
use crate::node::Node;
use crate::streams::IncomingStream;
use crate::tunnel::legs::wire::{self, Status, Token};
use crate::tunnel::legs::{INCOMING, LegError, OPEN, PAIRING_TIMEOUT};

/// Requests for leg pairs handled at once; more wait in the stream queue.
const CONCURRENT_REQUESTS: usize = 64;

/// Serves [`OPEN`] requests from the peers `access` allows, on the relay `node`.
pub(crate) fn serve(node: Node, legs: Legs, access: AccessList) {
    let filter_access = access.clone();
    let requests = node.accept_from(
        StreamProtocol::new(OPEN),
        Arc::new(move |peer: &PeerId| filter_access.is_allowed(peer)),
    );
    let (tracker, cancel) = (legs.0.tracker.clone(), legs.0.cancel.clone());
    let what = "relay leg request";
    crate::serve::each(
        requests,
        crate::serve::Limits::waiting(CONCURRENT_REQUESTS).within(PAIRING_TIMEOUT),
        what,
        &tracker,
        cancel,
        move |request| {
            let (node, legs, access) = (node.clone(), legs.clone(), access.clone());
            Some(async move { answer(&node, &legs, &access, request).await })
        },
    );
}

async fn answer(
    node: &Node,
    legs: &Legs,
    access: &AccessList,
    request: IncomingStream,
) -> Result<(), LegError> {
    let (source, mut stream) = (request.peer, request.stream);
    let result = async {
        let (target, _) = wire::read_hello(&mut stream, false).await?;
        let outcome = pair(node, legs, access, source, target).await;
        let (status, token) = match outcome {
            Ok(token) => (Status::Ok, Some(token)),
            Err(status) => (status, None),
        };
        tracing::debug!(%source, %target, ?status, "relay leg request");
        wire::write_answer(&mut stream, status, token.as_ref()).await?;
        Ok::<_, LegError>(())
    }
    .await;
    let _ = stream.close().await;
    result
}

/// Mints the tokens of a pair `source` → `target`, tells `target` its own and returns the
/// dialer's.
async fn pair(
    node: &Node,
    legs: &Legs,
    access: &AccessList,
    source: PeerId,
    target: PeerId,
) -> Result<Token, Status> {
    if target == source || !access.is_allowed(&target) {
        return Err(Status::Refused);
    }
    let paths = node.paths(target).await.unwrap_or_default();
    if !paths.iter().any(|p| !p.relayed && !p.is_quic()) {
        return Err(Status::Unreachable);
    }
    let (token, theirs) = legs.expect(source, target)?;
    let told = async {
        let (mut s, _) = node
            .open_stream(target, StreamProtocol::new(INCOMING))
            .await
            .map_err(|e| LegError::Io(e.to_string()))?;
        s.write_all(&wire::encode_hello(&source, Some(&theirs))).await?;
        s.flush().await?;
        let answer = wire::read_answer(&mut s, false).await;
        let _ = s.close().await;
        answer
    };
    match told.await {
        Ok(_) => Ok(token),
        Err(e) => {
            tracing::debug!(%target, error = ?e, "the target took no relay leg");
            legs.forget(&token);
            Err(match e {
                LegError::Refused(_) => Status::Refused,
                _ => Status::Unreachable,
            })
        }
    }
}
