//! The relay's side of pairing: a rendezvous of inviter and joiner on a slot, after which the relay
//! splices their two streams so that the PAKE runs end to end through it.
//!
//! Slots live in memory only, so a relay restart kills every invite (fail closed). Only peers the
//! relay authorizes may register a slot; anyone may join one, which is why the gate admits unknown
//! peers on probation while slots are open (see [`crate::gate::Probation`]). A successful inviter
//! asks the relay to admit its joiner ([`Message::Admit`]); the relay checks that this joiner came
//! through this inviter's slot before it calls the binary's admit hook. The handlers of `Register`
//! and `Join` and the splice are in [`handlers`]; group slots in [`super::group`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::code::{Password, Slot};
use super::group::{Group, GroupError, GroupInfo, GroupSpec, NewGroup};
use super::wire::{self, Message};
use super::{MAX_TTL, PAIR_RENDEZVOUS};
use crate::gate::{AccessList, Probation};
use crate::node::Node;
use crate::per_key::PerKey;
use crate::streams::IncomingStream;

mod handlers;
use handlers::{join, register};

/// Rendezvous streams handled at once; more are dropped.
const MAX_STREAMS: usize = 64;
/// Rendezvous streams one peer may have handled at once, so that one peer (a stranger on
/// probation, say) cannot take every slot: an inviter holds one per open invite plus a short one
/// for `Admit` or `Release`, a joiner one.
pub const MAX_STREAMS_PER_PEER: usize = 8;
/// How long a request may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a joiner waits for its inviter to come back between two attempts.
const JOIN_WAIT: Duration = Duration::from_secs(5);
/// The longest a spliced pairing conversation may last, and the bytes it may carry each way.
const SPLICE_TIME: Duration = Duration::from_secs(60);
const SPLICE_BYTES: u64 = 16 * 1024;
/// How often expired slots are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// Authorizes a joiner on the relay (the binary writes its authorized_keys).
pub type AdmitHook = Arc<dyn Fn(Admission) -> Result<(), String> + Send + Sync>;

/// A joiner the relay should authorize.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The joiner.
    pub joiner: PeerId,
    /// The name it announced (group joins; empty for invites, whose names the relay never sees).
    pub name: String,
    /// Who vouched for it.
    pub via: Via,
}

/// Who vouched for a joiner.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Via {
    /// An authorized peer's invite.
    Inviter(PeerId),
    /// A code of one of the relay's own groups.
    Group {
        /// The group.
        id: u32,
        /// How long the membership lasts.
        expires: Option<Duration>,
    },
}

/// What the rendezvous needs from the relay.
#[derive(Clone)]
pub struct RendezvousConfig {
    /// The relay's identity: it is the PAKE peer of group joiners.
    pub keypair: libp2p::identity::Keypair,
    /// The relay's access list: who may register slots.
    pub access: AccessList,
    /// The gate's probation, told how many slots are open.
    pub probation: Option<Probation>,
    /// Authorizes joiners on the relay; `None` refuses [`Message::Admit`].
    pub admit: Option<AdmitHook>,
}

type Handoff = oneshot::Sender<(Stream, PeerId)>;

pub(super) struct SlotState {
    owner: PeerId,
    expires: Instant,
    parked: Option<(u64, Handoff)>,
    joiner: Option<PeerId>,
    pub(super) closed: bool,
    /// A group code: the group and the password (the relay is the PAKE peer).
    pub(super) group: Option<(u32, Password)>,
    /// A group join is running on this slot.
    pub(super) busy: bool,
    pub(super) failures: u32,
}

impl SlotState {
    fn invite(owner: PeerId, expires: Instant) -> Self {
        Self {
            owner,
            expires,
            parked: None,
            joiner: None,
            closed: false,
            group: None,
            busy: false,
            failures: 0,
        }
    }

    pub(super) fn group(owner: PeerId, expires: Instant, id: u32, password: Password) -> Self {
        Self { group: Some((id, password)), ..Self::invite(owner, expires) }
    }
}

#[derive(Clone)]
pub(super) struct Shared {
    slots: Arc<Mutex<HashMap<Slot, SlotState>>>,
    groups: Arc<Mutex<HashMap<u32, Group>>>,
    changed: watch::Sender<u64>,
    pub(super) config: RendezvousConfig,
    pub(super) node: Node,
    pub(super) tracker: TaskTracker,
}

/// A handle to the relay's rendezvous: group pairing is managed through it.
#[derive(Clone)]
pub struct Rendezvous {
    shared: Shared,
}

impl Rendezvous {
    /// Makes a group and its codes.
    pub fn create_group(&self, spec: GroupSpec) -> Result<NewGroup, GroupError> {
        self.shared.create_group(spec)
    }

    /// The groups that have not expired.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut slots = self.shared.lock();
        self.shared.prune(&mut slots);
        drop(slots);
        self.shared.list_groups()
    }

    /// Revokes a group: its unused codes stop working. Returns whether it existed.
    pub fn revoke(&self, id: u32) -> bool {
        self.shared.revoke_group(id)
    }

    /// Re-sends group introductions to a member that (re)connected.
    pub fn member_connected(&self, peer: PeerId) {
        self.shared.introduce_all(peer);
    }
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, SlotState>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired slots, and groups whose codes expired and that have no members left to
    /// introduce (see [`Group::keep`]); tells probation how many slots are open. Call with the slot
    /// lock held.
    pub(super) fn prune(&self, slots: &mut HashMap<Slot, SlotState>) {
        let now = Instant::now();
        slots.retain(|_, s| s.expires > now);
        self.groups().retain(|_, g| g.keep(now));
        if let Some(p) = &self.config.probation {
            p.set_open_slots(slots.values().filter(|s| !s.closed).count());
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Serves the rendezvous protocol on `node` until `cancel` fires.
pub fn serve(
    node: &Node,
    config: RendezvousConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Rendezvous {
    let incoming = node.accept(StreamProtocol::new(PAIR_RENDEZVOUS));
    let shared = Shared {
        slots: Arc::default(),
        groups: Arc::default(),
        changed: watch::Sender::new(0),
        config,
        node: node.clone(),
        tracker: tracker.clone(),
    };
    let rendezvous = Rendezvous { shared: shared.clone() };
    // Each peer's streams; a peer's entry goes when its last stream ends.
    let per_peer = PerKey::new(MAX_STREAMS_PER_PEER);
    let pruner = shared.clone();
    let stop = cancel.clone();
    tracker.spawn(async move {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = prune.tick() => {
                    let mut slots = pruner.lock();
                    pruner.prune(&mut slots);
                }
            }
        }
    });
    let limits = crate::serve::Limits::dropping(MAX_STREAMS);
    crate::serve::each(
        incoming,
        limits,
        "pairing stream",
        tracker,
        cancel,
        move |s: IncomingStream| {
            let Some(mine) = per_peer.take(s.peer) else {
                tracing::debug!(peer = %s.peer, "too many pairing streams from this peer; dropped");
                return None;
            };
            let shared = shared.clone();
            Some(async move {
                handle(&shared, s).await;
                drop(mine);
            })
        },
    );
    rendezvous
}

async fn handle(shared: &Shared, mut s: IncomingStream) {
    let peer = s.peer;
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, wire::read(&mut s.stream)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return tracing::debug!(%peer, error = ?e.to_string(), "bad pairing request"),
        Err(_) => return tracing::debug!(%peer, "pairing request timed out"),
    };
    let reply = match request {
        Message::Register { slot, ttl_secs } => {
            return register(shared, peer, s.stream, slot, ttl_secs).await;
        }
        Message::Join { slot } => return join(shared, s, slot).await,
        Message::Admit { slot, peer: joiner } => admit(shared, peer, slot, joiner),
        Message::Release { slot } => {
            let mut slots = shared.lock();
            if let Some(s) = slots.get_mut(&slot).filter(|s| s.owner == peer) {
                s.closed = true;
                s.parked = None;
            }
            shared.prune(&mut slots);
            Message::Ok
        }
        _ => Message::Error("unexpected request".into()),
    };
    let _ = wire::write(&mut s.stream, &reply).await;
    let _ = s.stream.close().await;
}

fn admit(shared: &Shared, inviter: PeerId, slot: Slot, joiner: PeerId) -> Message {
    // The inviter vouches for the joiner: that is worth something only while the inviter itself is
    // authorized here (it may have been removed, or expired, since it registered the slot).
    if !shared.config.access.is_authorized(&inviter) {
        tracing::info!(target: "audit", %joiner, %inviter, "auth_decision: joiner not admitted (the inviter is no longer authorized)");
        return Message::Error("the inviter is no longer authorized on this relay".into());
    }
    {
        let mut slots = shared.lock();
        let Some(s) =
            slots.get_mut(&slot).filter(|s| s.owner == inviter && s.joiner == Some(joiner))
        else {
            return Message::Error("no such pairing on this relay".into());
        };
        s.closed = true;
        s.parked = None;
        shared.prune(&mut slots);
    }
    let admission = Admission { joiner, name: String::new(), via: Via::Inviter(inviter) };
    match &shared.config.admit {
        Some(hook) => match hook(admission) {
            Ok(()) => {
                tracing::info!(target: "audit", %joiner, %inviter, "auth_change: joiner admitted on the inviter's word");
                Message::Ok
            }
            Err(e) => Message::Error(format!("the relay could not authorize the joiner: {e}")),
        },
        None => Message::Error("this relay does not admit joiners".into()),
    }
}
