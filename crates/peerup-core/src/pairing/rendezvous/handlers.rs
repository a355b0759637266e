//! The rendezvous handlers: an inviter registering and waiting on a slot, a joiner taking it, and
//! the splice between their streams.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Handoff, JOIN_WAIT, MAX_TTL, SPLICE_BYTES, SPLICE_TIME, Shared, SlotState};
use crate::pairing::code::{Password, Slot};
use crate::pairing::wire::{self, Message};
use crate::streams::IncomingStream;

pub(super) async fn register(
    shared: &Shared,
    peer: PeerId,
    mut stream: Stream,
    slot: Slot,
    ttl_secs: u32,
) {
    let refuse = |why: &str| Message::Error(why.into());
    let ttl = Duration::from_secs(u64::from(ttl_secs).max(1)).min(MAX_TTL);
    let (tx, rx) = oneshot::channel();
    let generation = rand_generation();
    let parked = if shared.config.access.is_authorized(&peer) {
        let mut slots = shared.lock();
        shared.prune(&mut slots);
        let expires = Instant::now() + ttl;
        let state = slots.entry(slot).or_insert(SlotState::invite(peer, expires));
        if state.owner != peer {
            Err(refuse("this slot is taken; make a new invite"))
        } else if state.closed {
            Err(refuse("this invite is closed"))
        } else {
            state.expires = state.expires.min(expires);
            state.parked = Some((generation, tx));
            let expires = state.expires;
            shared.prune(&mut slots);
            Ok(expires)
        }
    } else {
        Err(refuse("only peers this relay authorizes may invite through it"))
    };
    let expires = match parked {
        Ok(e) => e,
        Err(msg) => {
            let _ = wire::write(&mut stream, &msg).await;
            return;
        }
    };
    if wire::write(&mut stream, &Message::Registered).await.is_err() {
        return unpark(shared, slot, generation);
    }
    enum Outcome {
        Matched(Box<Stream>, PeerId),
        Gone,
        Expired,
    }
    let outcome = {
        let mut byte = [0u8; 1];
        tokio::select! {
            r = rx => match r { Ok((s, p)) => Outcome::Matched(Box::new(s), p), Err(_) => Outcome::Gone },
            _ = stream.read(&mut byte) => Outcome::Gone,
            () = tokio::time::sleep_until(expires) => Outcome::Expired,
        }
    };
    match outcome {
        Outcome::Matched(mut joiner, jpeer) => {
            tracing::info!(inviter = %peer, joiner = %jpeer, "pairing rendezvous: splicing");
            if wire::write(&mut stream, &Message::Matched).await.is_ok()
                && wire::write(&mut joiner, &Message::Matched).await.is_ok()
            {
                splice(stream, *joiner).await;
            }
        }
        Outcome::Gone => unpark(shared, slot, generation),
        Outcome::Expired => {
            unpark(shared, slot, generation);
            let _ = wire::write(&mut stream, &refuse("the invite expired")).await;
        }
    }
}

fn rand_generation() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_be_bytes(b)
}

fn unpark(shared: &Shared, slot: Slot, generation: u64) {
    let mut slots = shared.lock();
    if let Some(s) = slots.get_mut(&slot)
        && s.parked.as_ref().is_some_and(|(g, _)| *g == generation)
    {
        s.parked = None;
    }
}

enum Next {
    Refuse(&'static str),
    Inviter(Handoff),
    Group(u32, Password),
    Wait,
}

pub(super) async fn join(shared: &Shared, mut s: IncomingStream, slot: Slot) {
    let peer = s.peer;
    let deadline = Instant::now() + JOIN_WAIT;
    let mut changed = shared.changed.subscribe();
    loop {
        let next = {
            let mut slots = shared.lock();
            shared.prune(&mut slots);
            match slots.get_mut(&slot) {
                None => Next::Refuse(
                    "no invite is waiting for this code at the relay (wrong or expired code, or the inviter stopped)",
                ),
                Some(st) if st.closed => {
                    Next::Refuse("this invite code was already used, cancelled or burnt")
                }
                Some(st) if st.busy => Next::Refuse("someone is using this code right now"),
                Some(st) => match (st.group, st.parked.take()) {
                    (Some((id, pw)), _) => {
                        st.busy = true;
                        Next::Group(id, pw)
                    }
                    (None, Some((_, tx))) => {
                        st.joiner = Some(peer);
                        Next::Inviter(tx)
                    }
                    (None, None) => Next::Wait,
                },
            }
        };
        match next {
            Next::Refuse(why) => {
                let _ = wire::write(&mut s.stream, &Message::Error(why.into())).await;
                return;
            }
            Next::Group(id, pw) => return shared.group_join(s, slot, id, pw).await,
            Next::Inviter(tx) => match tx.send((s.stream, peer)) {
                Ok(()) => return,
                Err((back, _)) => s.stream = back, // that inviter stream just went away
            },
            Next::Wait => {
                if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                    let why =
                        "the inviter is not answering (busy with another attempt, or stopped)";
                    let _ = wire::write(&mut s.stream, &Message::Error(why.into())).await;
                    return;
                }
            }
        }
    }
}

async fn splice(a: Stream, b: Stream) {
    let (ar, mut aw) = a.split();
    let (br, mut bw) = b.split();
    let ab = async {
        let _ = futures::io::copy(ar.take(SPLICE_BYTES), &mut bw).await;
        let _ = bw.close().await;
    };
    let ba = async {
        let _ = futures::io::copy(br.take(SPLICE_BYTES), &mut aw).await;
        let _ = aw.close().await;
    };
    if tokio::time::timeout(SPLICE_TIME, futures::future::join(ab, ba)).await.is_err() {
        tracing::debug!("pairing conversation timed out");
    }
}
