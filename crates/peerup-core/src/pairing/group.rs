//! Group pairing at the relay (`peerup relay pair`): the relay makes `count` codes for one group and
//! is itself the PAKE peer of each joiner. A joiner learns the members so far from the relay inside
//! the authenticated session; members already in the group are introduced to each newcomer on
//! `/peerup/group-intro/1.0.0`, and again whenever they reconnect, so everyone ends up mutually
//! authorized, later joiners included. A member accepts introductions only from the relay it joined
//! through and only for that group, so a relay can introduce peers only into groups it made codes
//! for.

use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};
use tokio::time::Instant;

use super::code::{Password, Slot};
use super::pake::Role;
use super::rendezvous::{Admission, Shared, SlotState, Via};
use super::wire::{self, Message};
use super::{GROUP_INTRO, MAX_FAILURES, MAX_TTL, new_secret, session};
use crate::streams::IncomingStream;

/// Most members in one group (its member list must fit one message).
pub const MAX_GROUP: usize = 8;
/// How long an introduction may take.
const INTRO_TIMEOUT: Duration = Duration::from_secs(15);

/// What `relay pair` asks for.
#[derive(Debug, Clone, Copy)]
pub struct GroupSpec {
    /// Codes (members) in the group.
    pub count: usize,
    /// How long the codes work.
    pub ttl: Duration,
    /// How long members stay authorized on the relay (`None`: no expiry).
    pub member_expires: Option<Duration>,
}

/// A new group: its id and codes.
#[derive(Debug, Clone)]
pub struct NewGroup {
    /// The group id.
    pub id: u32,
    /// One slot and password per member.
    pub codes: Vec<(Slot, Password)>,
}

/// A group as `relay pair --list` shows it.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// The group id.
    pub id: u32,
    /// Time left for its codes.
    pub expires_in: Duration,
    /// Codes made.
    pub total: usize,
    /// Members so far: peer ID and name.
    pub members: Vec<(PeerId, String)>,
}

/// Why a group could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Count out of range.
    #[error("a group has 1 to {MAX_GROUP} members")]
    BadCount,
    /// TTL out of range.
    #[error("the TTL must be between 1 s and 1 h")]
    BadTtl,
    /// No randomness.
    #[error("no randomness for the codes")]
    Random,
}

pub(super) struct Group {
    pub(super) expires: Instant,
    pub(super) total: usize,
    pub(super) member_expires: Option<Duration>,
    pub(super) members: Vec<(PeerId, String)>,
}

impl Shared {
    pub(super) fn create_group(&self, spec: GroupSpec) -> Result<NewGroup, GroupError> {
        if spec.count == 0 || spec.count > MAX_GROUP {
            return Err(GroupError::BadCount);
        }
        if spec.ttl.is_zero() || spec.ttl > MAX_TTL {
            return Err(GroupError::BadTtl);
        }
        let expires = Instant::now() + spec.ttl;
        let codes: Vec<(Slot, Password)> = (0..spec.count)
            .map(|_| new_secret().map_err(|_| GroupError::Random))
            .collect::<Result<_, _>>()?;
        let id = new_secret().map_err(|_| GroupError::Random)?.0;
        let relay = self.node.peer_id();
        let mut slots = self.lock();
        for (slot, password) in &codes {
            slots.insert(*slot, SlotState::group(relay, expires, id, *password));
        }
        self.groups().insert(
            id,
            Group {
                expires,
                total: spec.count,
                member_expires: spec.member_expires,
                members: Vec::new(),
            },
        );
        self.prune(&mut slots);
        Ok(NewGroup { id, codes })
    }

    pub(super) fn list_groups(&self) -> Vec<GroupInfo> {
        let now = Instant::now();
        self.groups()
            .iter()
            .map(|(id, g)| GroupInfo {
                id: *id,
                expires_in: g.expires.saturating_duration_since(now),
                total: g.total,
                members: g.members.clone(),
            })
            .collect()
    }

    pub(super) fn revoke_group(&self, id: u32) -> bool {
        let found = self.groups().remove(&id).is_some();
        let mut slots = self.lock();
        slots.retain(|_, s| s.group.map(|(g, _)| g) != Some(id));
        self.prune(&mut slots);
        found
    }

    /// Runs the relay's side of a group join on a matched joiner stream.
    pub(super) async fn group_join(
        &self,
        s: IncomingStream,
        slot: Slot,
        id: u32,
        password: Password,
    ) {
        let IncomingStream { peer, mut stream, .. } = s;
        let relay = self.node.peer_id();
        if wire::write(&mut stream, &Message::Matched).await.is_err() {
            return self.group_attempt_failed(slot, "joiner gone");
        }
        let keypair = self.config.keypair.clone();
        let result = session::handshake(
            &mut stream,
            Role::Inviter,
            password,
            &relay,
            slot,
            keypair,
            "relay",
        )
        .await;
        let paired = match result {
            Ok(p) if p.peer == peer => p,
            Ok(_) => {
                return self.group_attempt_failed(slot, "the key does not match the connection");
            }
            Err(e) => return self.group_attempt_failed(slot, &e.to_string()),
        };
        let joined = self.groups().get_mut(&id).map(|g| {
            let others: Vec<_> = g.members.iter().filter(|(p, _)| *p != peer).cloned().collect();
            g.members.retain(|(p, _)| *p != peer);
            g.members.push((peer, paired.name.clone()));
            (others, g.member_expires)
        });
        let Some((others, member_expires)) = joined else {
            let _ = wire::write(&mut stream, &Message::Error("the group was revoked".into())).await;
            return;
        };
        {
            let mut slots = self.lock();
            if let Some(st) = slots.get_mut(&slot) {
                st.closed = true;
                st.busy = false;
            }
            self.prune(&mut slots);
        }
        let admission = Admission {
            joiner: peer,
            name: paired.name.clone(),
            via: Via::Group { id, expires: member_expires },
        };
        if let Some(Err(e)) = self.config.admit.as_ref().map(|hook| hook(admission)) {
            let _ = wire::write(
                &mut stream,
                &Message::Error(format!("the relay could not authorize you: {e}")),
            )
            .await;
            return;
        }
        tracing::info!(target: "audit", joiner = %peer, group = %format!("{id:08x}"), "auth_change: group member admitted");
        let members = Message::Members { group: id, peers: others.clone() };
        if wire::write(&mut stream, &members).await.is_ok() {
            let _ = wire::write(&mut stream, &Message::Done).await;
        }
        let _ = stream.close().await;
        for (member, _) in others {
            self.spawn_intro(member, id);
        }
    }

    fn group_attempt_failed(&self, slot: Slot, why: &str) {
        tracing::info!(%slot, reason = why, "group pairing attempt failed");
        let mut slots = self.lock();
        if let Some(st) = slots.get_mut(&slot) {
            st.busy = false;
            st.failures += 1;
            if st.failures >= MAX_FAILURES {
                st.closed = true;
            }
        }
        self.prune(&mut slots);
    }

    /// Sends `member` the other members of every group it is in (on reconnect).
    pub(super) fn introduce_all(&self, member: PeerId) {
        let ids: Vec<u32> = self
            .groups()
            .iter()
            .filter(|(_, g)| g.members.len() > 1 && g.members.iter().any(|(p, _)| *p == member))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.spawn_intro(member, id);
        }
    }

    fn spawn_intro(&self, member: PeerId, id: u32) {
        let peers: Vec<(PeerId, String)> = match self.groups().get(&id) {
            Some(g) => g.members.iter().filter(|(p, _)| *p != member).cloned().collect(),
            None => return,
        };
        if peers.is_empty() {
            return;
        }
        let node = self.node.clone();
        self.tracker.spawn(async move {
            let intro = async {
                let (mut s, _) =
                    node.open_stream(member, StreamProtocol::new(GROUP_INTRO)).await.ok()?;
                wire::write(&mut s, &Message::Introduce { group: id, peers }).await.ok()?;
                s.close().await.ok()
            };
            match tokio::time::timeout(INTRO_TIMEOUT, intro).await {
                Ok(Some(())) => tracing::debug!(%member, "group introduction sent"),
                _ => tracing::debug!(%member, "group introduction not delivered"),
            }
        });
    }
}
