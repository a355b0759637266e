//! systemd integration (`Type=notify`): `READY=1` once the node and the API are up, `WATCHDOG=1`
//! from a health loop while the node answers and listens, and `STOPPING=1` at shutdown. Without
//! `NOTIFY_SOCKET` every call is a no-op. `relay serve` uses it too (ready once listening; its
//! health is the same: the swarm answers and listens).

use std::time::Duration;

use peerup_core::node::Node;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd the daemon is ready, and starts the watchdog loop if systemd asked for one.
pub fn ready(node: Node, cancel: CancellationToken, tracker: &TaskTracker) {
    send(&[NotifyState::Ready, NotifyState::Status("running")]);
    let Some(timeout) = sd_notify::watchdog_enabled() else { return };
    let every = (timeout / 2).max(Duration::from_millis(100));
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Healthy: the swarm task answers commands and still listens somewhere. If it does not,
            // the pings stop and systemd restarts the daemon.
            match tokio::time::timeout(every, node.listen_addrs()).await {
                Ok(Ok(addrs)) if !addrs.is_empty() => send(&[NotifyState::Watchdog]),
                other => tracing::warn!(state = ?other.map(|r| r.map(|a| a.len())), "health check failed; no watchdog ping"),
            }
        }
    });
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
