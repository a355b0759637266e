//! Changing the relays of a running node ([`super::super::Node::set_relays`]): drop the
//! reservations and connections of relays no longer configured, dial and reserve on new ones the
//! way [`EventLoop::new`] does at start.

use libp2p::Multiaddr;
use tokio::time::Instant;

use super::{EventLoop, quic_twin, strip_p2p};
use crate::node::RelayChange;
use crate::relay_addr;

impl EventLoop {
    pub(super) fn set_relays(&mut self, relays: Vec<Multiaddr>) -> RelayChange {
        let mut change = RelayChange::default();
        for old in std::mem::take(&mut self.relays) {
            if relays.contains(&old) {
                self.relays.push(old);
                continue;
            }
            let Some(id) = relay_addr::peer_id_of(&old) else { continue };
            let still_used = relays.iter().any(|r| relay_addr::peer_id_of(r) == Some(id));
            if let Some(listener) = self.reservations.as_mut().and_then(|r| r.remove(id)) {
                self.swarm.remove_listener(listener);
            }
            if !still_used {
                self.relay_ids.remove(&id);
                self.ready_relays.remove(&id);
                let _ = self.swarm.disconnect_peer_id(id);
            }
            tracing::info!(relay = %id, addr = %old, "relay removed");
            change.removed.push(id);
        }
        for new in relays {
            if self.relays.contains(&new) {
                continue;
            }
            let Some(id) = relay_addr::peer_id_of(&new) else {
                tracing::warn!(addr = %new, "relay address without /p2p/<id> ignored");
                continue;
            };
            if let Some(k) = self.swarm.behaviour_mut().kad.as_mut() {
                k.add_address(&id, strip_p2p(&new));
            }
            for addr in std::iter::once(new.clone()).chain(quic_twin(&new)) {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::debug!(%addr, error = %e, "relay dial failed");
                }
            }
            if let Some(res) = self.reservations.as_mut() {
                res.add(id, new.clone(), Instant::now());
                // Already connected and identified (same relay, new address): ask right away.
                if self.ready_relays.contains(&id) {
                    res.relay_ready(id, Instant::now());
                }
            }
            self.relay_ids.insert(id);
            tracing::info!(relay = %id, addr = %new, "relay added");
            change.added.push(id);
            self.relays.push(new);
        }
        change
    }
}
