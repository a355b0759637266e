//! Group pairing at the relay (`peerup relay pair`): the relay makes `count` codes for one group and
//! is itself the PAKE peer of each joiner. A joiner learns the members so far from the relay inside
//! the authenticated session; members already in the group are introduced to each newcomer on
//! `/peerup/group-intro/1.0.0`, and again whenever they reconnect, so everyone ends up mutually
//! authorized, later joiners included. A member accepts introductions only from the relay it joined
//! through and only for that group, so a relay can introduce peers only into groups it made codes
//! for.
//!
//! A group outlives its codes: once the codes expire no one new can join, but the relay keeps the
//! group while it has members whose membership on the relay lasts, so that a member that was
//! offline still hears of the members who joined meanwhile when it reconnects.
//!
//! Names: each member announces a name for itself. Within a group the relay keeps them distinct: a
//! member announcing a name that an earlier member already has gets the name with a suffix (`-2`,
//! `-3`, …), and the relay logs a warning. Refusing the join instead would lock out a second
//! machine with the same host name (two `raspberrypi`s), and the joiner cannot choose the name it
//! announces. Who was first keeps the name; `peerup verify` tells the members apart.

use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};
use tokio::time::Instant;

use super::code::{Password, Slot};
use super::pake::Role;
use super::rendezvous::{Admission, Shared, SlotState, Via};
use super::wire::{self, MAX_NAME, Message};
use super::{GROUP_INTRO, MAX_FAILURES, MAX_TTL, new_secret, session};
use crate::streams::IncomingStream;

/// Most members in one group (its member list must fit one message).
pub const MAX_GROUP: usize = 8;
/// Most groups a relay holds (groups with members live until revoked or the relay restarts).
pub const MAX_GROUPS: usize = 1024;
/// The longest membership a group may grant on the relay (`relay pair --expires`): ten years. Any
/// longer is no expiry at all, which is what leaving `--expires` out gives.
pub const MAX_MEMBER_EXPIRES: Duration = Duration::from_secs(3650 * 24 * 3600);
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
    /// Membership expiry out of range.
    #[error("the membership expiry must be between 1 s and 3650 days")]
    BadExpires,
    /// The relay holds [`MAX_GROUPS`] groups already.
    #[error("the relay holds {MAX_GROUPS} groups already; revoke some first")]
    TooMany,
    /// No randomness.
    #[error("no randomness for the codes")]
    Random,
}

pub(super) struct Group {
    /// When the codes expire.
    pub(super) expires: Instant,
    pub(super) total: usize,
    pub(super) member_expires: Option<Duration>,
    pub(super) members: Vec<Member>,
}

pub(super) struct Member {
    peer: PeerId,
    name: String,
    /// When its membership on the relay ends (`None`: never).
    until: Option<Instant>,
}

impl Group {
    /// Drops members whose membership ended; whether the group is still worth keeping: its codes
    /// still work, or it has members to introduce to each other.
    pub(super) fn keep(&mut self, now: Instant) -> bool {
        self.members.retain(|m| m.until.is_none_or(|u| u > now));
        self.expires > now || !self.members.is_empty()
    }

    fn others(&self, member: PeerId) -> Vec<(PeerId, String)> {
        self.members.iter().filter(|m| m.peer != member).map(|m| (m.peer, m.name.clone())).collect()
    }

    /// `wanted`, or when another member has that name already, the first free `wanted-N`.
    fn distinct_name(&self, peer: PeerId, wanted: &str) -> String {
        let taken = |n: &str| self.members.iter().any(|m| m.peer != peer && m.name == n);
        if wanted.is_empty() || !taken(wanted) {
            return wanted.to_string();
        }
        // Sanitized names are ASCII, so any byte index is a char boundary; the suffix must fit.
        let base = &wanted[..wanted.len().min(MAX_NAME - 3)];
        (2..=MAX_GROUP + 1).map(|i| format!("{base}-{i}")).find(|n| !taken(n)).unwrap_or_default()
    }
}

impl Shared {
    pub(super) fn create_group(&self, spec: GroupSpec) -> Result<NewGroup, GroupError> {
        if spec.count == 0 || spec.count > MAX_GROUP {
            return Err(GroupError::BadCount);
        }
        if spec.ttl.is_zero() || spec.ttl > MAX_TTL {
            return Err(GroupError::BadTtl);
        }
        if spec.member_expires.is_some_and(|d| d.is_zero() || d > MAX_MEMBER_EXPIRES) {
            return Err(GroupError::BadExpires);
        }
        if self.groups().len() >= MAX_GROUPS {
            let mut slots = self.lock();
            self.prune(&mut slots);
            if self.groups().len() >= MAX_GROUPS {
                return Err(GroupError::TooMany);
            }
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
                members: g.members.iter().map(|m| (m.peer, m.name.clone())).collect(),
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
            let others = g.others(peer);
            let name = g.distinct_name(peer, &paired.name);
            let until = g.member_expires.and_then(|d| Instant::now().checked_add(d));
            g.members.retain(|m| m.peer != peer);
            g.members.push(Member { peer, name: name.clone(), until });
            (others, g.member_expires, name)
        });
        let Some((others, member_expires, name)) = joined else {
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
        if name != paired.name {
            tracing::warn!(joiner = %peer, announced = ?paired.name, given = ?name, group = %format!("{id:08x}"), "a group member announced a name an earlier member has; it gets a distinct one");
        }
        let admission =
            Admission { joiner: peer, name, via: Via::Group { id, expires: member_expires } };
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
        tracing::info!(%slot, reason = ?why, "group pairing attempt failed");
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
            .filter(|(_, g)| g.members.len() > 1 && g.members.iter().any(|m| m.peer == member))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.spawn_intro(member, id);
        }
    }

    fn spawn_intro(&self, member: PeerId, id: u32) {
        let peers: Vec<(PeerId, String)> = match self.groups().get(&id) {
            Some(g) => g.others(member),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, until: Option<Instant>) -> Member {
        Member { peer: PeerId::random(), name: name.into(), until }
    }

    #[test]
    fn a_name_another_member_has_gets_a_suffix() {
        let now = Instant::now();
        let mut g = Group { expires: now, total: 8, member_expires: None, members: vec![] };
        let newcomer = PeerId::random();
        assert_eq!(g.distinct_name(newcomer, "alice"), "alice");
        g.members.push(member("alice", None));
        assert_eq!(g.distinct_name(newcomer, "alice"), "alice-2");
        g.members.push(member("alice-2", None));
        assert_eq!(g.distinct_name(newcomer, "alice"), "alice-3");
        assert_eq!(g.distinct_name(newcomer, ""), "", "no name stays no name");
        // A member that joins again keeps its own name.
        let own = g.members[0].peer;
        assert_eq!(g.distinct_name(own, "alice"), "alice");
        let long = "x".repeat(MAX_NAME);
        g.members.push(member(&long, None));
        let suffixed = g.distinct_name(newcomer, &long);
        assert!(suffixed.len() <= MAX_NAME && suffixed.ends_with("-2"), "{suffixed}");
    }

    #[test]
    fn a_group_outlives_its_codes_while_it_has_current_members() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut g = Group { expires: now, total: 2, member_expires: None, members: vec![] };
        assert!(!g.keep(later), "no codes left and nobody joined");
        g.members.push(member("a", None));
        g.members.push(member("b", Some(now + Duration::from_secs(30))));
        assert!(g.keep(later), "a joined for good");
        assert_eq!(g.members.len(), 1, "b's membership ended");
        g.members[0].until = Some(now);
        assert!(!g.keep(later));
    }
}
