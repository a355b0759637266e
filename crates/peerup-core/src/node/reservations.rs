//! Keeping a reservation on every configured relay: listen on its circuit address, and when the
//! reservation or the connection is lost, try again with exponential backoff (1 s doubling to the
//! node's `reservation_interval`, 60 s by default: Go peer-up's re-reserve period, the longest a
//! lost reservation goes unnoticed there).

use std::collections::HashMap;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::relay_addr;

const FIRST_RETRY: Duration = Duration::from_secs(1);
/// If the relay has not identified itself by then, ask for the reservation anyway.
const FIRST_ATTEMPT_FALLBACK: Duration = Duration::from_secs(5);
/// The default longest wait between attempts.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(60);

struct Relay {
    addr: Multiaddr,
    listener: Option<ListenerId>,
    reserved: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
}

/// Reservation state of every relay.
pub(crate) struct Reservations {
    relays: HashMap<PeerId, Relay>,
    /// The longest wait between attempts.
    max_retry: Duration,
}

impl Reservations {
    /// Reservations on `addrs`, retried at most `max_retry` apart (at least 1 s).
    pub(crate) fn new(addrs: &[Multiaddr], max_retry: Duration) -> Self {
        let first = Instant::now() + FIRST_ATTEMPT_FALLBACK;
        let relays = addrs
            .iter()
            .filter_map(|a| relay_addr::peer_id_of(a).map(|id| (id, a.clone())))
            .map(|(id, addr)| {
                let r = Relay {
                    addr,
                    listener: None,
                    reserved: false,
                    backoff: FIRST_RETRY,
                    retry_at: Some(first),
                };
                (id, r)
            })
            .collect();
        Self { relays, max_retry: max_retry.max(FIRST_RETRY) }
    }

    /// Starts keeping a reservation on a relay added at run time (first attempt as at start).
    pub(crate) fn add(&mut self, id: PeerId, addr: Multiaddr, now: Instant) {
        let r = Relay {
            addr,
            listener: None,
            reserved: false,
            backoff: FIRST_RETRY,
            retry_at: Some(now + FIRST_ATTEMPT_FALLBACK),
        };
        self.relays.insert(id, r);
    }

    /// Stops keeping a reservation on a relay; returns its circuit listener to close.
    pub(crate) fn remove(&mut self, id: PeerId) -> Option<ListenerId> {
        self.relays.remove(&id).and_then(|r| r.listener)
    }

    /// Relays due for a (re)try: their circuit listen address. The caller listens and reports
    /// the listener with [`Self::listening`].
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        self.relays
            .iter_mut()
            .filter(|(_, r)| r.listener.is_none() && r.retry_at.is_some_and(|t| t <= now))
            .map(|(id, r)| {
                r.retry_at = None;
                (*id, r.addr.clone().with(Protocol::P2pCircuit))
            })
            .collect()
    }

    pub(crate) fn listening(&mut self, relay: PeerId, listener: ListenerId) {
        if let Some(r) = self.relays.get_mut(&relay) {
            r.listener = Some(listener);
        }
    }

    /// A listen attempt failed at once; schedule the next.
    pub(crate) fn failed(&mut self, relay: PeerId, now: Instant) {
        if let Some(r) = self.relays.get_mut(&relay) {
            r.listener = None;
            r.reserved = false;
            Self::schedule(r, now, self.max_retry);
        }
    }

    /// The relay is connected and identified: ask for a reservation now if none is pending.
    pub(crate) fn relay_ready(&mut self, relay: PeerId, now: Instant) {
        if let Some(r) = self.relays.get_mut(&relay)
            && r.listener.is_none()
        {
            r.retry_at = Some(now);
        }
    }

    pub(crate) fn accepted(&mut self, relay: PeerId) {
        if let Some(r) = self.relays.get_mut(&relay) {
            r.reserved = true;
            r.backoff = FIRST_RETRY;
        }
    }

    /// A listener closed: returns the relay it belonged to, with a retry scheduled.
    pub(crate) fn closed(&mut self, listener: ListenerId, now: Instant) -> Option<PeerId> {
        let (id, r) = self.relays.iter_mut().find(|(_, r)| r.listener == Some(listener))?;
        r.listener = None;
        r.reserved = false;
        Self::schedule(r, now, self.max_retry);
        Some(*id)
    }

    /// Whether a reservation on `relay` (a configured relay) is held now.
    pub(crate) fn holds(&self, relay: &PeerId) -> bool {
        self.relays.get(relay).is_some_and(|r| r.reserved)
    }

    /// The network changed: the next attempts start again from the shortest wait.
    pub(crate) fn reset_backoff(&mut self) {
        for r in self.relays.values_mut() {
            r.backoff = FIRST_RETRY;
        }
    }

    fn schedule(r: &mut Relay, now: Instant, max_retry: Duration) {
        r.retry_at = Some(now + r.backoff.min(max_retry));
        r.backoff = (r.backoff * 2).min(max_retry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_reset_on_success() {
        let id = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{id}").parse().unwrap();
        let mut res = Reservations::new(std::slice::from_ref(&addr), MAX_RETRY);
        let now = Instant::now();
        assert!(res.due(now).is_empty(), "the first attempt waits for the relay");
        res.relay_ready(id, now);
        let due = res.due(now);
        assert_eq!(due.len(), 1);
        assert!(due[0].1.to_string().ends_with("/p2p-circuit"));
        assert!(res.due(now).is_empty(), "not due twice");
        let l = ListenerId::next();
        res.listening(id, l);
        assert_eq!(res.closed(l, now), Some(id));
        assert!(res.due(now).is_empty(), "retry is in the future");
        assert_eq!(res.due(now + Duration::from_secs(1)).len(), 1);
        let later = now + Duration::from_secs(1);
        res.failed(id, later);
        let almost = later + Duration::from_millis(1999);
        assert!(res.due(almost).is_empty(), "backoff doubled to 2 s");
        assert_eq!(res.due(later + Duration::from_secs(2)).len(), 1);
        assert!(!res.holds(&id));
        res.accepted(id);
        assert!(res.holds(&id), "held once accepted");
        assert!(!res.holds(&PeerId::random()), "only configured relays");
        res.failed(id, now);
        assert!(!res.holds(&id), "not after the listener failed");
    }

    #[test]
    fn relays_come_and_go_at_run_time() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let addr =
            |id: PeerId| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/1/p2p/{id}").parse().unwrap() };
        let mut res = Reservations::new(&[addr(a)], MAX_RETRY);
        let now = Instant::now();
        res.relay_ready(a, now);
        assert_eq!(res.due(now).len(), 1);
        let l = ListenerId::next();
        res.listening(a, l);
        assert_eq!(res.remove(a), Some(l), "the caller closes the circuit listener");
        assert_eq!(res.closed(l, now), None, "a removed relay is not retried");
        res.add(b, addr(b), now);
        assert!(res.due(now).is_empty(), "a new relay waits for identify like at start");
        res.relay_ready(b, now);
        let due = res.due(now);
        assert_eq!(due.len(), 1);
        assert!(due[0].1.to_string().contains(&b.to_string()));
        assert_eq!(res.remove(a), None);
    }

    /// `relay.reservation_interval` bounds the wait between attempts, as Go's re-reserve loop does.
    #[test]
    fn the_reservation_interval_caps_the_backoff() {
        let id = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{id}").parse().unwrap();
        let now = Instant::now();
        let wait_after = |max: Duration, failures: u32| {
            let mut res = Reservations::new(std::slice::from_ref(&addr), max);
            for _ in 0..failures {
                res.failed(id, now);
            }
            // The first instant (in 100 ms steps) the next attempt is due.
            (0..2000u64)
                .map(|i| Duration::from_millis(i * 100))
                .find(|&d| !res.due(now + d).is_empty())
                .unwrap()
        };
        assert_eq!(wait_after(Duration::from_secs(3), 10), Duration::from_secs(3));
        assert_eq!(wait_after(MAX_RETRY, 10), MAX_RETRY);
        assert_eq!(wait_after(Duration::from_secs(90), 10), Duration::from_secs(90));
        assert_eq!(wait_after(Duration::ZERO, 10), FIRST_RETRY, "at least a second apart");
    }
}
