//! Noticing that this machine's addresses changed: a new network, a renumbered LAN, a lost link.
//!
//! On Linux a netlink socket ([`if_watch`]) wakes the watcher as soon as an address comes or
//! goes; the watcher then waits until the changes settle ([`SETTLE`]), reads the address list again
//! and compares it with the last one. A check also runs every [`POLL_EVERY`], so a machine where
//! the netlink socket cannot be opened still notices changes, only later. The node reacts in
//! `node/event_loop/network.rs`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::netinfo;

/// How long the address list must stay quiet after a netlink event before it is compared.
pub const SETTLE: Duration = Duration::from_millis(500);
/// The longest a burst of events may delay the comparison.
const SETTLE_MAX: Duration = Duration::from_secs(2);
/// How often the list is compared without any netlink event.
pub const POLL_EVERY: Duration = Duration::from_secs(30);
/// How often when netlink is not available.
const POLL_FALLBACK: Duration = Duration::from_secs(5);

/// Addresses that appeared and disappeared since the last look.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressChange {
    /// New addresses.
    pub added: Vec<IpAddr>,
    /// Addresses that are gone.
    pub removed: Vec<IpAddr>,
}

impl std::fmt::Display for AddressChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        parts.extend(self.added.iter().map(|a| format!("+{a}")));
        parts.extend(self.removed.iter().map(|a| format!("-{a}")));
        f.write_str(&parts.join(" "))
    }
}

/// The address list as last seen.
#[derive(Debug, Default)]
pub struct Addresses(BTreeSet<IpAddr>);

impl Addresses {
    /// Starts from `now`.
    pub fn new(now: impl IntoIterator<Item = IpAddr>) -> Self {
        Self(now.into_iter().collect())
    }

    /// Takes the current list; returns what changed, if anything.
    pub fn update(&mut self, now: impl IntoIterator<Item = IpAddr>) -> Option<AddressChange> {
        let now: BTreeSet<IpAddr> = now.into_iter().collect();
        let change = AddressChange {
            added: now.difference(&self.0).copied().collect(),
            removed: self.0.difference(&now).copied().collect(),
        };
        self.0 = now;
        (!change.added.is_empty() || !change.removed.is_empty()).then_some(change)
    }
}

/// Watches the machine's addresses until `cancel` fires, sending each change to `changes`.
pub(crate) fn spawn(
    changes: mpsc::Sender<AddressChange>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let mut seen = Addresses::new(netinfo::local_addresses());
        let mut netlink = match if_watch::tokio::IfWatcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch addresses through netlink; polling every {POLL_FALLBACK:?}");
                None
            }
        };
        let poll_every = if netlink.is_some() { POLL_EVERY } else { POLL_FALLBACK };
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = poll.tick() => {}
                event = next_event(&mut netlink) => {
                    if event.is_none() {
                        tracing::warn!("the netlink address watch ended; polling from now on");
                        netlink = None;
                        poll = tokio::time::interval(POLL_FALLBACK);
                        continue;
                    }
                    if !settle(&mut netlink, &cancel).await {
                        return;
                    }
                }
            }
            if let Some(change) = seen.update(netinfo::local_addresses()) {
                tracing::info!(%change, "local addresses changed");
                if changes.send(change).await.is_err() {
                    return; // the node is gone
                }
            }
        }
    });
}

/// The next netlink event; pending forever without a watcher. `None` when the watch failed.
async fn next_event(netlink: &mut Option<if_watch::tokio::IfWatcher>) -> Option<()> {
    match netlink {
        Some(w) => match w.next().await {
            Some(Ok(_)) => Some(()),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "netlink address watch error");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

/// Waits until no netlink event came for [`SETTLE`] (at most [`SETTLE_MAX`]). False if cancelled.
async fn settle(
    netlink: &mut Option<if_watch::tokio::IfWatcher>,
    cancel: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep_until(deadline) => return true,
            () = tokio::time::sleep(SETTLE) => return true,
            event = next_event(netlink) => if event.is_none() { return true },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn update_reports_added_and_removed_addresses_once() {
        let mut seen = Addresses::new([ip("192.168.1.2"), ip("10.0.0.5")]);
        assert_eq!(seen.update([ip("10.0.0.5"), ip("192.168.1.2")]), None, "order does not matter");
        let change = seen.update([ip("10.0.0.5"), ip("192.168.1.3")]).expect("a change");
        assert_eq!(change.added, vec![ip("192.168.1.3")]);
        assert_eq!(change.removed, vec![ip("192.168.1.2")]);
        assert_eq!(change.to_string(), "+192.168.1.3 -192.168.1.2");
        assert_eq!(seen.update([ip("10.0.0.5"), ip("192.168.1.3")]), None, "reported once");
        let gone = seen.update([]).expect("link down");
        assert_eq!(gone.removed.len(), 2);
        assert!(gone.added.is_empty());
    }
}
