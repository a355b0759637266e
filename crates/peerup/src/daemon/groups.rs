//! Group introductions: the relay a node joined a group through tells the node's daemon about the
//! group's other members (`/peerup/group-intro/1.0.0`), and the daemon authorizes and names them.
//! Introductions are accepted only from configured relays, and only for a group this node joined
//! through that very relay (the `groups` file next to the config), so a relay cannot introduce
//! anyone into a group it made no codes for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerup_core::node::Node;
use peerup_core::pairing::GROUP_INTRO;
use peerup_core::pairing::pake::Paired;
use peerup_core::pairing::wire::{self, Message};
use peerup_core::serve::{self, Limits};
use peerup_core::{PeerId, StreamProtocol};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::load::load_node_file as load;
use crate::peers::{in_group, save_peer};

/// How long an introduction may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Introductions read at once; more wait (a relay sends one per group it introduces into).
const MAX_INTRODUCTIONS: usize = 4;

/// Accepts introductions from `relays` until `cancel` fires.
pub fn spawn(
    config: PathBuf,
    relays: Vec<PeerId>,
    node: &Node,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let me = node.peer_id();
    let filter: peerup_core::streams::PeerFilter = Arc::new(move |p| relays.contains(p));
    let incoming = node.accept_from(StreamProtocol::new(GROUP_INTRO), filter);
    // Read at once, applied one at a time: each application reads the config, picks names among
    // those it holds and writes it back.
    let applying = Arc::new(Mutex::new(()));
    let limits = Limits::waiting(MAX_INTRODUCTIONS).within(READ_TIMEOUT);
    serve::each(incoming, limits, "group introduction", tracker, cancel, move |mut s| {
        let (config, applying) = (config.clone(), applying.clone());
        Some(async move {
            match wire::read(&mut s.stream).await {
                Ok(Message::Introduce { group, peers }) => {
                    // No await from here on: the time limit cannot cut an application short.
                    let _one = applying.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = apply(&config, s.peer, group, &peers, me) {
                        tracing::warn!(error = ?format!("{e:#}"), "group introduction not applied");
                    }
                }
                Ok(other) => tracing::debug!(message = ?other, "unexpected group message"),
                Err(e) => tracing::debug!(error = %e, "bad group introduction"),
            }
        })
    });
}

fn apply(
    config: &std::path::Path,
    relay: PeerId,
    group: u32,
    peers: &[(PeerId, String)],
    me: PeerId,
) -> anyhow::Result<()> {
    let mut loaded = load(config)?;
    if !in_group(loaded.dir(), group, &relay) {
        anyhow::bail!(
            "relay {relay} introduced peers into group {group:08x}, which this node did not join through it"
        );
    }
    for (peer, name) in peers.iter().filter(|(p, _)| *p != me) {
        let paired = Paired { peer: *peer, name: name.clone() };
        let given = save_peer(&loaded, &paired, None, Some(group))?;
        tracing::info!(target: "audit", %peer, name = ?given, group = %format!("{group:08x}"), "auth_change: group member introduced by the relay");
        loaded = load(config)?;
    }
    Ok(())
}
