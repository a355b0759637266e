//! When to hole-punch again while a peer is reached only through relays.
//!
//! DCUtR runs once per relayed connection, started by the side that accepted it, and libp2p gives
//! up after three failed dials. An attempt can fail for a passing reason: after a NAT or uplink
//! fault, the old direct connection still holds the address pair that the new one needs (its
//! socket lingers until the peer's reset reaches it), so the dial falls back to a fresh port that
//! the other NAT drops. The peer would then stay RELAYED until it reconnected. So the node asks
//! again by opening a fresh relayed connection, which runs DCUtR anew:
//! - the side that dialled the relayed connection, [`AFTER`]`[0]` after it opened without a
//!   direct one, then after growing gaps;
//! - the side whose direct connection to a peer ended while relayed ones remain, [`SOON`] after
//!   (the stale connection is gone now, and it was the one in the way). However it ended: failed,
//!   closed by this side for silence, or closed by the peer for silence (which reads as a clean
//!   close here). Only this side may be able to punch: a peer it dialled through a relay may
//!   hold no reservation there, so it cannot dial back.
//!
//! After [`AFTER`]`.len()` tries it waits for something new: a direct connection, a direct one
//! failing again, or the peer disconnecting entirely.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

/// The gap before each try.
const AFTER: [Duration; 3] =
    [Duration::from_secs(5), Duration::from_secs(15), Duration::from_secs(45)];
/// How soon after a direct connection failed its peer is tried again.
const SOON: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Tries made so far.
    tries: usize,
    /// When the next one is due; `None` once they are used up.
    next: Option<Instant>,
}

/// Peers reached only through relays, and when to hole-punch them again.
#[derive(Default)]
pub(crate) struct Repunch {
    peers: HashMap<PeerId, Entry>,
}

impl Repunch {
    /// We opened a relayed connection to `peer` and have no direct one: try again later, unless
    /// tries are under way or used up already.
    pub(crate) fn relayed_only(&mut self, peer: PeerId, now: Instant) {
        self.peers.entry(peer).or_insert(Entry { tries: 0, next: Some(now + AFTER[0]) });
    }

    /// A direct connection to `peer` failed and only relayed ones remain: try again soon, with
    /// a fresh set of tries.
    pub(crate) fn direct_lost(&mut self, peer: PeerId, now: Instant) {
        self.peers.insert(peer, Entry { tries: 0, next: Some(now + SOON) });
    }

    /// A connection to `peer` closed: `relayed` or not, and whether the peer is still
    /// `connected`, only through relays (`relayed_only`). A direct connection that leaves only
    /// relayed ones, however it ended, is punched again soon; a peer with no connection left is
    /// forgotten.
    pub(crate) fn closed(
        &mut self,
        peer: PeerId,
        relayed: bool,
        connected: bool,
        relayed_only: bool,
        now: Instant,
    ) {
        if !connected {
            self.forget(&peer);
        } else if !relayed && relayed_only {
            self.direct_lost(peer, now);
        }
    }

    /// `peer` has a direct connection, or none at all.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// The peers due for a try now; each is counted as tried.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<PeerId> {
        let mut due = Vec::new();
        for (peer, e) in &mut self.peers {
            if e.next.is_some_and(|t| t <= now) {
                e.tries += 1;
                e.next = AFTER.get(e.tries).map(|gap| now + *gap);
                due.push(*peer);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_grow_apart_and_stop() {
        let mut r = Repunch::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.relayed_only(peer, t0);
        assert!(r.due(t0 + AFTER[0] - Duration::from_millis(1)).is_empty(), "too early");
        let mut at = t0 + AFTER[0];
        assert_eq!(r.due(at), vec![peer], "first try");
        assert!(r.due(at).is_empty(), "counted once");
        for gap in &AFTER[1..] {
            assert!(r.due(at + *gap - Duration::from_millis(1)).is_empty());
            at += *gap;
            assert_eq!(r.due(at), vec![peer]);
        }
        assert!(r.due(at + Duration::from_secs(3600)).is_empty(), "used up");
        // A relayed connection opened by a later try does not start them over.
        r.relayed_only(peer, at);
        assert!(r.due(at + Duration::from_secs(3600)).is_empty(), "still used up");
    }

    #[test]
    fn a_lost_direct_connection_tries_soon_and_afresh() {
        let mut r = Repunch::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.relayed_only(peer, t0);
        r.direct_lost(peer, t0);
        assert_eq!(r.due(t0 + SOON), vec![peer], "soon, not after {:?}", AFTER[0]);
        // Used up, then lost again: a fresh set.
        let mut at = t0 + SOON;
        for gap in &AFTER[1..] {
            at += *gap;
            assert_eq!(r.due(at), vec![peer]);
        }
        assert!(r.due(at + Duration::from_secs(3600)).is_empty());
        r.direct_lost(peer, at);
        assert_eq!(r.due(at + SOON), vec![peer]);
    }

    #[test]
    fn a_direct_connection_that_ends_any_way_leaving_relayed_ones_is_punched_again() {
        let mut r = Repunch::default();
        let (peer, t0) = (PeerId::random(), Instant::now());
        // The peer closed it cleanly (its liveness check went first): nothing tells a clean
        // close from a failure here, and a dialler's relayed peer may be unable to punch back.
        r.closed(peer, false, true, true, t0);
        assert_eq!(r.due(t0 + SOON), vec![peer], "punched again soon");
        // A relayed connection closing, or a direct one beside another direct one: no.
        let other = PeerId::random();
        r.closed(other, true, true, true, t0);
        r.closed(other, false, true, false, t0);
        assert!(r.due(t0 + Duration::from_secs(3600)).iter().all(|p| *p != other));
        // Nothing left at all: forgotten.
        r.closed(peer, true, false, false, t0);
        assert!(r.due(t0 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn forgotten_peers_are_not_tried() {
        let mut r = Repunch::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        r.relayed_only(a, t0);
        r.relayed_only(b, t0);
        r.forget(&a);
        assert_eq!(r.due(t0 + AFTER[0]), vec![b]);
    }
}
