//! Safe config changes for `relay serve`: the last-known-good archive at start, and the
//! commit-confirmed revert (see [`crate::config::pending`]).
//!
//! What applies live: authorized_keys (the file named by the config, re-read when the config
//! changes; `relay authorize` edits already take effect through the admission hook). Everything
//! else (listen addresses, identity, resource limits, gating on/off) needs a restart and is logged
//! so. A revert that restores such a setting the running relay does not have (it was restarted
//! with the unconfirmed config) stops the relay with an error after restoring the file, so that its
//! supervisor (systemd `Restart=always` in `deploy/`) starts it again with the old config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::gate::AccessList;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::load::load_relay_file;
use crate::config::relay_schema::RelayConfig;
use crate::config::validate::validate_relay;
use crate::config::{archive, pending};
use crate::daemon::reload::{Ticks, stamp};

/// Set when the relay stops because a reverted config needs a restart.
#[derive(Clone, Default)]
pub(super) struct RestartNeeded(Arc<AtomicBool>);

impl RestartNeeded {
    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The parts of a relay config that only a restart applies (everything but the keys file).
fn restart_part(c: &RelayConfig) -> RelayConfig {
    let mut c = c.clone();
    c.security.authorized_keys_file = PathBuf::new();
    c
}

/// Archives the config the relay started with, unless its apply is not confirmed yet.
pub(super) fn archive_started(path: &Path, started_with: &[u8]) {
    if pending::marker_path(path).exists() {
        tracing::info!("relay config not archived: its apply is not confirmed yet");
        return;
    }
    if std::fs::read(path).ok().as_deref() != Some(started_with) {
        return; // changed since the start; the next start archives it
    }
    match archive::archive(path, started_with) {
        Ok(Some(a)) => {
            tracing::info!(archive = %a.display(), "relay config archived as last-known-good")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot archive the relay config"),
    }
}

/// Watches the config and the pending-apply marker until `cancel`.
pub(super) fn spawn_watch(
    path: PathBuf,
    started: RelayConfig,
    access: AccessList,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> RestartNeeded {
    let restart = RestartNeeded::default();
    let flag = restart.clone();
    let mut seen = stamp(&path);
    tracker.spawn(async move {
        let mut ticks = Ticks::new(cancel.clone());
        while ticks.next().await {
            let expired = match pending::read(&path) {
                Ok(m) => m.is_some_and(|m| m.expired()),
                Err(_) => true, // a broken marker: nobody confirmed a change
            };
            let mut reverted = false;
            if expired {
                match pending::revert(&path) {
                    Ok(r) => reverted = r,
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "relay config revert failed"),
                }
                if reverted {
                    tracing::warn!(target: "audit", config = %path.display(), "config_revert: relay config apply not confirmed by its deadline; previous config restored");
                }
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let new = match load_relay_file(&path) {
                Ok(l) if validate_relay(&l.config).is_ok() => l.config,
                Ok(_) | Err(_) => {
                    tracing::warn!(config = %path.display(), "relay config changed but is invalid; keeping the running one");
                    continue;
                }
            };
            if restart_part(&new) != restart_part(&started) {
                if reverted {
                    tracing::error!("the restored relay config needs a restart; stopping so the supervisor restarts the relay");
                    flag.0.store(true, Ordering::SeqCst);
                    cancel.cancel();
                    break;
                }
                tracing::warn!("relay config change needs a restart to take effect (all but the authorized_keys file)");
            }
            if new.security.enable_connection_gating && started.security.enable_connection_gating {
                match AuthorizedKeys::load_strict(&new.security.authorized_keys_file) {
                    Ok(keys) => {
                        access.replace(&keys);
                        tracing::info!(target: "audit", file = %new.security.authorized_keys_file.display(), "auth_change: relay authorized_keys reloaded by config change");
                    }
                    Err(e) => tracing::warn!(error = %e, "authorized_keys of the new relay config is invalid; keeping the running list"),
                }
            }
        }
    });
    restart
}

/// Like the daemon's: reverts an expired (or broken) pending apply before starting.
pub(super) fn revert_if_expired(path: &Path) -> Result<bool> {
    crate::daemon::live::revert_if_expired(path)
}

/// Whether a pending apply's config fails to start: then it is reverted now.
pub(super) fn revert_failed_start(path: &Path, error: &anyhow::Error) -> Result<bool> {
    if !pending::marker_path(path).exists() {
        return Ok(false);
    }
    tracing::error!(error = %format!("{error:#}"), "the relay config of the pending apply cannot start; reverting it now");
    let reverted = pending::revert(path)?;
    if reverted {
        tracing::warn!(target: "audit", config = %path.display(), "config_revert: pending relay apply failed to start");
    }
    Ok(reverted)
}
