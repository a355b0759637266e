//! What a node knows of the routes to its peers' bulk paths ([`Probes`]) and what it may still
//! open through relays ([`CircuitBudget`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Route;
use crate::tunnel::bulk::RETRY_AFTER;

/// Relayed bulk connections a node keeps open at once.
pub const MAX_RELAYED_BULK: usize = 4;
/// Relayed bulk connections on circuits of their own a node opens per [`RELAYED_WINDOW`] (probes
/// included). libp2p's relay server lets a peer open 30 circuits per 2 minutes by default; this
/// leaves most of that to relayed connections themselves. Leg pairs ([`crate::tunnel::legs`]) are not
/// circuits: only [`MAX_RELAYED_BULK`] bounds them.
pub const RELAYED_PER_WINDOW: usize = 8;
/// See [`RELAYED_PER_WINDOW`].
pub const RELAYED_WINDOW: Duration = Duration::from_secs(120);

/// What is known of the bulk path along a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// A probe is under way.
    Running,
    /// It answered.
    Works,
    /// It failed at this time.
    Failed(Instant),
}

impl Probe {
    /// A failure old enough to probe the route again: as good as unknown.
    fn expired(&self) -> bool {
        matches!(self, Self::Failed(t) if t.elapsed() >= RETRY_AFTER)
    }
}

/// Which routes to a peer take bulk connections. A route is probed in the background the first
/// time a connection could use it; until the probe answers, connections use yamux streams, so an
/// address that silently drops new flows (a filtering NAT in front of a hole-punched path) never
/// delays one.
#[derive(Clone, Default)]
pub(crate) struct Probes(Arc<Mutex<HashMap<(PeerId, Route), Probe>>>);

impl Probes {
    pub(super) fn get(&self, key: &(PeerId, Route)) -> Option<Probe> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }

    pub(super) fn set(&self, key: (PeerId, Route), state: Probe) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, p| !p.expired());
        map.insert(key, state);
    }

    /// Forgets every result (the network changed).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets `key`'s probe: the route is probed again the next time a connection could use it.
    pub(super) fn forget(&self, key: &(PeerId, Route)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// What is known of `key`'s route: `None` also once a failure is old enough to retry.
    pub(super) fn state(&self, key: &(PeerId, Route)) -> Option<Probe> {
        self.get(key).filter(|p| !p.expired())
    }

    /// Marks `key` as being probed, unless it is known or already being probed.
    pub(super) fn start(&self, key: (PeerId, Route)) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|p| !p.expired()) {
            return false;
        }
        map.insert(key, Probe::Running);
        true
    }
}

/// The budget of relayed bulk connections (circuits or leg pairs): how many are open, how many
/// were opened lately.
#[derive(Clone)]
pub(crate) struct CircuitBudget {
    open: Arc<Semaphore>,
    opened: Arc<Mutex<VecDeque<Instant>>>,
}

impl Default for CircuitBudget {
    fn default() -> Self {
        Self { open: Arc::new(Semaphore::new(MAX_RELAYED_BULK)), opened: Arc::default() }
    }
}

impl CircuitBudget {
    /// Takes one place from the budget, if the limits allow it: the places open, and for a
    /// `circuit` also the circuits opened lately. The permit is held while the connection is open.
    pub(super) fn take(&self, circuit: bool) -> Option<OwnedSemaphorePermit> {
        let permit = self.open.clone().try_acquire_owned().ok()?;
        if !circuit {
            return Some(permit);
        }
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        while opened.front().is_some_and(|t| t.elapsed() >= RELAYED_WINDOW) {
            opened.pop_front();
        }
        if opened.len() >= RELAYED_PER_WINDOW {
            return None;
        }
        opened.push_back(Instant::now());
        Some(permit)
    }
}

/// A bulk connection's place in the budget of relayed ones ([`CircuitBudget`]).
pub(super) enum Place {
    /// A direct route needs none.
    Direct,
    /// A relayed one holds this while it is open.
    Relayed(OwnedSemaphorePermit),
}

impl Place {
    pub(super) fn permit(self) -> Option<OwnedSemaphorePermit> {
        match self {
            Self::Direct => None,
            Self::Relayed(p) => Some(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_probed_once_until_its_failure_expires() {
        let p = Probes::default();
        let key = (PeerId::random(), Route::Tcp("198.18.0.1:4001".parse().unwrap()));
        assert!(p.start(key), "unknown: probe it");
        assert!(!p.start(key), "already being probed");
        p.set(key, Probe::Failed(Instant::now()));
        assert!(!p.start(key), "failed recently");
        let long_ago = Instant::now().checked_sub(RETRY_AFTER + Duration::from_secs(1));
        if let Some(t) = long_ago {
            p.set(key, Probe::Failed(t));
            assert!(p.start(key), "failed long ago: probe again");
        }
        p.forget(&key);
        assert!(p.start(key), "forgotten (no circuit to spare for it): probe it next time");
        p.set(key, Probe::Works);
        assert!(!p.start(key));
        assert_eq!(p.get(&(key.0, Route::Tcp("198.18.0.1:4002".parse().unwrap()))), None);
        assert_eq!(p.get(&(key.0, Route::Relay(PeerId::random()))), None);
    }

    #[test]
    fn the_budget_caps_open_places_and_recent_circuits() {
        let budget = CircuitBudget::default();
        let held: Vec<_> = (0..MAX_RELAYED_BULK).map(|_| budget.take(true).unwrap()).collect();
        assert!(budget.take(true).is_none(), "all open");
        assert!(budget.take(false).is_none(), "all open, for legs too");
        drop(held);
        let more = RELAYED_PER_WINDOW - MAX_RELAYED_BULK;
        for _ in 0..more {
            assert!(budget.take(true).is_some(), "a closed circuit frees its place");
        }
        assert!(budget.take(true).is_none(), "{RELAYED_PER_WINDOW} opened in this window");
        for _ in 0..2 * RELAYED_PER_WINDOW {
            assert!(budget.take(false).is_some(), "leg pairs are bounded only by the places open");
        }
    }
}
