//! Hot reload of authorized_keys: the daemon re-reads the file when it changes on disk (an edit,
//! `peerup auth add|remove`, the API), swaps the access list, and closes the connections of peers
//! that lost access.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use peerup_core::PeerId;
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::gate::AccessList;
use peerup_core::tunnel::Tunnel;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the file's size and modification time are checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The clock of the daemon's and the relay's file watches: a tick every [`CHECK_EVERY`] until
/// shutdown begins.
pub struct Ticks {
    every: tokio::time::Interval,
    cancel: CancellationToken,
}

impl Ticks {
    pub fn new(cancel: CancellationToken) -> Self {
        Self { every: tokio::time::interval(CHECK_EVERY), cancel }
    }

    /// Waits for the next check; false once shutdown has begun.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            _ = self.every.tick() => true,
        }
    }
}

/// Watches one authorized_keys file.
pub struct KeysWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    peers: Vec<PeerId>,
}

/// A file's modification time and size, to notice changes.
pub(crate) fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl KeysWatch {
    /// Starts from the file as it is now.
    pub fn new(path: &Path) -> Self {
        let peers = AuthorizedKeys::load(path)
            .map(|k| k.entries().map(|e| e.peer_id()).collect())
            .unwrap_or_default();
        Self { path: path.to_path_buf(), seen: stamp(path), peers }
    }

    /// If the file changed, reloads `access` from it and returns the peers that lost access. A file
    /// that no longer parses is ignored (with a warning) and the current list stays in force.
    pub fn check(&mut self, access: &AccessList) -> Option<Vec<PeerId>> {
        let now = stamp(&self.path);
        if now == self.seen {
            return None;
        }
        self.seen = now;
        match AuthorizedKeys::load_strict(&self.path) {
            Ok(keys) => {
                access.replace(&keys);
                let new: Vec<PeerId> = keys.entries().map(|e| e.peer_id()).collect();
                let removed = self.peers.iter().filter(|p| !new.contains(p)).copied().collect();
                tracing::info!(target: "audit", file = %self.path.display(), peers = new.len(), "auth_change: authorized_keys reloaded");
                self.peers = new;
                Some(removed)
            }
            Err(e) => {
                tracing::warn!(error = %e, "authorized_keys changed but is invalid; keeping the previous list");
                None
            }
        }
    }
}

/// Runs the watch until `cancel` fires, disconnecting peers that lose access.
pub fn spawn(
    path: &Path,
    access: AccessList,
    tunnel: Tunnel,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let mut watch = KeysWatch::new(path);
    tracker.spawn(async move {
        let mut ticks = Ticks::new(cancel);
        while ticks.next().await {
            for peer in watch.check(&access).unwrap_or_default() {
                tracing::info!(target: "audit", %peer, "auth_change: access revoked; closing connections");
                let _ = tunnel.disconnect(peer).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_reports_removed_peers_and_ignores_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        let (a, b) = (PeerId::random(), PeerId::random());
        AuthorizedKeys::parse(&format!("{a}\n{b}\n")).save(&path).unwrap();
        let access = AccessList::from_keys(&AuthorizedKeys::load(&path).unwrap());
        let mut watch = KeysWatch::new(&path);
        assert_eq!(watch.check(&access), None, "unchanged file");

        AuthorizedKeys::parse(&format!("{a}\n")).save(&path).unwrap();
        assert_eq!(watch.check(&access), Some(vec![b]));
        assert!(access.is_authorized(&a) && !access.is_authorized(&b));

        // A broken edit keeps the list in force.
        peerup_core::fsutil::write_private_atomic(&path, b"garbage line\n").unwrap();
        assert_eq!(watch.check(&access), None);
        assert!(access.is_authorized(&a));

        AuthorizedKeys::parse(&format!("{a}\n{b}\n")).save(&path).unwrap();
        assert_eq!(watch.check(&access), Some(vec![]));
        assert!(access.is_authorized(&b), "an added peer gets in without a restart");
    }
}
