//! What the protocols report: reservations accepted (relay client), identify (our public address,
//! relays becoming ready, DHT addresses), hole punching (DCUtR) and ping round trips.

use libp2p::{dcutr, identify, kad, ping, relay};
use tokio::time::Instant;

use super::EventLoop;
use crate::node::NodeEvent;
use crate::node::behaviour::BehaviourEvent;
use crate::streams::{is_quic, is_relayed};

impl EventLoop {
    pub(super) fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if let Some(res) = self.reservations.as_mut() {
                    res.accepted(relay_peer_id);
                }
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "reservation accepted");
                }
                self.emit(NodeEvent::ReservationAccepted { relay: relay_peer_id, renewal });
            }
            BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            }) => {
                let observed = info.observed_addr.clone();
                tracing::debug!(peer = %peer_id, %observed, "identified");
                self.book.identified(
                    peer_id,
                    connection_id,
                    info.agent_version.clone(),
                    observed.clone(),
                );
                // Our public QUIC address as a relay or peer sees it: what DCUtR offers the
                // other side. TCP observations name a throwaway source port, so they are skipped.
                if is_quic(&observed)
                    && !is_relayed(&observed)
                    && !self.swarm.external_addresses().any(|a| *a == observed)
                {
                    if self.force_private {
                        // Offered to hole punching only, never confirmed as ours.
                        self.swarm.behaviour_mut().streams.announce_candidate(observed.clone());
                    } else if self.offer_quic_until.is_some_and(|t| Instant::now() < t) {
                        // A candidate first, so that hole punching offers it (the swarm hides
                        // confirmed addresses from DCUtR), then confirmed when it comes back.
                        self.announced.insert(observed.clone());
                        self.swarm.behaviour_mut().streams.announce_candidate(observed.clone());
                    } else {
                        self.swarm.add_external_address(observed.clone());
                    }
                }
                if let Some(k) = self.swarm.behaviour_mut().kad.as_mut()
                    && info
                        .protocols
                        .iter()
                        .any(|p| p.as_ref().ends_with(crate::protocols::KAD_SUFFIX))
                {
                    for addr in info.listen_addrs.iter().filter(|a| !is_relayed(a)) {
                        k.add_address(&peer_id, addr.clone());
                    }
                }
                self.unidentified_relay_conns.remove(&connection_id);
                self.refused_by.remove(&peer_id);
                if self.relay_ids.contains(&peer_id) && self.ready_relays.insert(peer_id) {
                    if let Some(res) = self.reservations.as_mut() {
                        res.relay_ready(peer_id, Instant::now());
                    }
                    // Relays are the DHT's bootstrap peers.
                    if let Some(Err(e)) =
                        self.swarm.behaviour_mut().kad.as_mut().map(|k| k.bootstrap())
                    {
                        tracing::debug!(error = %e, "DHT bootstrap not started");
                    }
                    self.dial_deferred(true);
                }
                self.add_tcp_beside_quic(peer_id, &info.listen_addrs);
                self.emit(NodeEvent::Identified {
                    peer: peer_id,
                    agent: info.agent_version,
                    observed,
                });
            }
            BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punch succeeded; direct connection");
                    self.metrics.holepunch(true);
                    self.emit(NodeEvent::HolePunched { peer: remote_peer_id });
                }
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, error = %e, "hole punch failed; staying relayed");
                    self.metrics.holepunch(false);
                    self.emit(NodeEvent::HolePunchFailed {
                        peer: remote_peer_id,
                        reason: e.to_string(),
                    });
                }
            },
            BehaviourEvent::Ping(ping::Event { peer, connection, result: Ok(rtt) }) => {
                self.book.pong(peer, connection, rtt);
            }
            BehaviourEvent::Ping(ping::Event { peer, connection, result: Err(e) }) => {
                if matches!(e, ping::Failure::Unsupported) {
                    self.book.unjudged(peer, connection);
                }
                tracing::debug!(%peer, error = %e, "ping failed");
            }
            BehaviourEvent::RelayServer(e) => {
                self.metrics.relay_event(&e);
                tracing::debug!(event = ?e, "relay");
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            }) => self.on_providers(id, result, step.last),
            other => tracing::trace!(event = ?other, "behaviour event"),
        }
    }
}
