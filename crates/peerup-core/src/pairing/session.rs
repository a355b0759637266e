//! The two ends of a pairing over a node: the inviter waits on a relay slot and runs up to
//! [`MAX_FAILURES`] attempts; the joiner takes the slot and runs one.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::time::Instant;

use super::code::{Password, Slot};
use super::pake::{Handshake, Paired, PakeError, Role, sanitize_name};
use super::wire::{self, Message, WireError};
use super::{MAX_FAILURES, PAIR_RENDEZVOUS};
use crate::node::{Node, NodeError};

/// How long one step of the handshake may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the joiner waits for the inviter to save the pairing.
const DONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the inviter waits for the joiner to close the stream after `Done`: the joiner closes
/// only once it has read `Done`, so the inviter's process does not exit (and drop its connection)
/// while `Done` is still on its way through the relay.
const LINGER: Duration = Duration::from_secs(5);

/// Pairing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// Reaching the relay failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A message was malformed or the stream broke.
    #[error("pairing conversation: {0}")]
    Wire(#[from] WireError),
    /// The handshake failed.
    #[error(transparent)]
    Pake(#[from] PakeError),
    /// The relay refused.
    #[error("the relay refused: {0}")]
    Relay(String),
    /// The other side refused.
    #[error("the other side refused: {0}")]
    Peer(String),
    /// The invite's time ran out.
    #[error("the invite expired; no one joined")]
    Expired,
    /// Too many failed attempts: the code no longer works.
    #[error("{MAX_FAILURES} failed attempts; the code is burnt")]
    Burnt,
    /// A step took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Saving the pairing failed.
    #[error("saving the pairing failed: {0}")]
    Save(String),
}

/// What the inviter needs.
pub struct Invite {
    /// The relay holding the slot.
    pub relay: PeerId,
    /// The slot.
    pub slot: Slot,
    /// The code's password.
    pub password: Password,
    /// Our identity.
    pub keypair: Keypair,
    /// The name we announce.
    pub name: String,
    /// When the invite ends.
    pub expires: Instant,
}

/// Progress of an invite, for the user interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteProgress {
    /// The relay holds the slot; waiting for a joiner.
    Waiting,
    /// A joiner is on the line.
    Matched,
    /// An attempt failed (`n` of [`MAX_FAILURES`]).
    Failed {
        /// Failures so far.
        n: u32,
        /// Why.
        reason: String,
    },
}

/// A finished invite: the joiner, and whether the relay admitted it.
#[derive(Debug)]
pub struct Invited {
    /// The joiner.
    pub paired: Paired,
    /// `Err` with the relay's reason when it did not authorize the joiner.
    pub admitted: Result<(), String>,
}

async fn step<T>(
    what: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, WireError>>,
) -> Result<T, PairError> {
    Ok(tokio::time::timeout(limit, f).await.map_err(|_| PairError::Timeout(what))??)
}

async fn open(node: &Node, relay: PeerId) -> Result<Stream, PairError> {
    Ok(node.open_stream(relay, StreamProtocol::new(PAIR_RENDEZVOUS)).await?.0)
}

/// One relay request that answers `Ok` or `Error`.
async fn request(node: &Node, relay: PeerId, msg: &Message) -> Result<(), PairError> {
    let mut s = open(node, relay).await?;
    wire::write(&mut s, msg).await?;
    let reply = step("the relay", STEP_TIMEOUT, wire::read(&mut s)).await?;
    let _ = s.close().await;
    match reply {
        Message::Ok => Ok(()),
        Message::Error(e) => Err(PairError::Relay(e)),
        _ => Err(PairError::Wire(WireError::Invalid("relay reply"))),
    }
}

/// Runs the PAKE on a matched stream.
pub(super) async fn handshake(
    s: &mut Stream,
    role: Role,
    password: Password,
    relay: &PeerId,
    slot: Slot,
    keypair: Keypair,
    name: &str,
) -> Result<Paired, PairError> {
    let (hs, hello) = Handshake::start(role, password, relay, slot, keypair);
    wire::write(s, &hello).await?;
    let theirs = match step("the other side's hello", STEP_TIMEOUT, wire::read(s)).await? {
        Message::Error(e) => return Err(PairError::Peer(e)),
        m => m,
    };
    let keyed = hs.receive_hello(&theirs)?;
    wire::write(s, &keyed.confirm(name)).await?;
    let confirm = step("the other side's confirmation", STEP_TIMEOUT, wire::read(s)).await?;
    Ok(keyed.verify(&confirm)?)
}

/// Runs an invite until one joiner pairs, it expires, or [`MAX_FAILURES`] attempts fail. `save`
/// records the joiner (authorized_keys, names) before the joiner is told it succeeded.
pub async fn invite(
    node: &Node,
    inv: &Invite,
    mut progress: impl FnMut(InviteProgress),
    save: impl FnOnce(&Paired) -> Result<(), String>,
) -> Result<Invited, PairError> {
    let mut failures = 0;
    loop {
        let left = inv.expires.saturating_duration_since(Instant::now());
        if left.is_zero() {
            release(node, inv).await;
            return Err(PairError::Expired);
        }
        let mut s = open(node, inv.relay).await?;
        let ttl_secs = u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX);
        wire::write(&mut s, &Message::Register { slot: inv.slot, ttl_secs }).await?;
        match step("the relay", STEP_TIMEOUT, wire::read(&mut s)).await? {
            Message::Registered => {}
            Message::Error(e) => return Err(PairError::Relay(e)),
            _ => return Err(PairError::Wire(WireError::Invalid("relay reply"))),
        }
        progress(InviteProgress::Waiting);
        match tokio::time::timeout_at(inv.expires, wire::read(&mut s)).await {
            Err(_) => {
                release(node, inv).await;
                return Err(PairError::Expired);
            }
            Ok(Ok(Message::Matched)) => {}
            Ok(Ok(Message::Error(e))) if e.contains("expired") => return Err(PairError::Expired),
            Ok(Ok(Message::Error(e))) => return Err(PairError::Relay(e)),
            Ok(Ok(_)) => return Err(PairError::Wire(WireError::Invalid("relay message"))),
            // Slots live in relay memory: a relay that went away took the slot with it.
            Ok(Err(WireError::Io(e))) => {
                return Err(PairError::Relay(format!(
                    "lost the slot ({e}); did the relay restart? The code no longer works"
                )));
            }
            Ok(Err(e)) => return Err(e.into()),
        }
        progress(InviteProgress::Matched);
        let result = handshake(
            &mut s,
            Role::Inviter,
            inv.password,
            &inv.relay,
            inv.slot,
            inv.keypair.clone(),
            &inv.name,
        )
        .await;
        match result {
            Ok(paired) => {
                if let Err(e) = save(&paired) {
                    let _ =
                        wire::write(&mut s, &Message::Error("the inviter could not save".into()))
                            .await;
                    return Err(PairError::Save(e));
                }
                let admit = Message::Admit { slot: inv.slot, peer: paired.peer };
                let admitted = request(node, inv.relay, &admit).await.map_err(|e| e.to_string());
                wire::write(&mut s, &Message::Done).await?;
                let _ = s.close().await;
                let mut rest = Vec::new();
                let _ =
                    tokio::time::timeout(LINGER, (&mut s).take(4096).read_to_end(&mut rest)).await;
                return Ok(Invited { paired, admitted });
            }
            Err(e) => {
                // Every attempt that reached the handshake may have been a guess.
                failures += 1;
                let _ = s.close().await;
                progress(InviteProgress::Failed { n: failures, reason: e.to_string() });
                if failures >= MAX_FAILURES {
                    release(node, inv).await;
                    return Err(PairError::Burnt);
                }
            }
        }
    }
}

async fn release(node: &Node, inv: &Invite) {
    if let Err(e) = request(node, inv.relay, &Message::Release { slot: inv.slot }).await {
        tracing::debug!(error = ?e.to_string(), "releasing the slot failed");
    }
}

/// A member list as received from a relay ([`Message::Members`] or [`Message::Introduce`]): the
/// names sanitized like every announced name (the relay chose these bytes), ourselves and repeated
/// peers left out.
pub fn received_members(peers: Vec<(PeerId, String)>, me: PeerId) -> Vec<(PeerId, String)> {
    let mut out: Vec<(PeerId, String)> = Vec::with_capacity(peers.len());
    for (peer, name) in peers {
        if peer != me && !out.iter().any(|(p, _)| *p == peer) {
            out.push((peer, sanitize_name(&name)));
        }
    }
    out
}

/// What the joiner needs.
pub struct Join {
    /// The relay (connected already).
    pub relay: PeerId,
    /// The slot.
    pub slot: Slot,
    /// The code's password.
    pub password: Password,
    /// Our identity.
    pub keypair: Keypair,
    /// The name we announce.
    pub name: String,
}

/// A finished join.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The other side: the inviter, or for a group code the relay itself.
    pub paired: Paired,
    /// For a group code: the group and its members so far.
    pub group: Option<(u32, Vec<(PeerId, String)>)>,
}

/// Joins through the relay. `save` records the inviter (or the group's members) once the other
/// side has confirmed.
pub async fn join(
    node: &Node,
    j: Join,
    save: impl FnOnce(&Joined) -> Result<(), String>,
) -> Result<Joined, PairError> {
    let mut s = open(node, j.relay).await?;
    wire::write(&mut s, &Message::Join { slot: j.slot }).await?;
    match step("the relay", STEP_TIMEOUT, wire::read(&mut s)).await? {
        Message::Matched => {}
        Message::Error(e) => return Err(PairError::Relay(e)),
        _ => return Err(PairError::Wire(WireError::Invalid("relay reply"))),
    }
    let me = j.keypair.public().to_peer_id();
    let paired =
        handshake(&mut s, Role::Joiner, j.password, &j.relay, j.slot, j.keypair, &j.name).await?;
    let mut group = None;
    loop {
        match step("the inviter to save the pairing", DONE_TIMEOUT, wire::read(&mut s)).await? {
            Message::Done => break,
            // Only the relay itself, as the PAKE peer, hands out a group's members.
            Message::Members { group: id, peers } if paired.peer == j.relay && group.is_none() => {
                group = Some((id, received_members(peers, me)));
            }
            Message::Error(e) => return Err(PairError::Peer(e)),
            _ => return Err(PairError::Wire(WireError::Invalid("inviter reply"))),
        }
    }
    let _ = s.close().await;
    let joined = Joined { paired, group };
    save(&joined).map_err(PairError::Save)?;
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_from_a_relay_are_sanitized_without_us_and_repeats() {
        let (me, a, victim) = (PeerId::random(), PeerId::random(), PeerId::random());
        let got = received_members(
            vec![
                (a, "a b\ninjected".into()),
                (me, "me".into()),
                (victim, victim.to_string()),
                (a, "again".into()),
            ],
            me,
        );
        assert_eq!(got, vec![(a, "abinjected".to_string()), (victim, String::new())]);
    }
}
