//! The rendezvous provider record, as Go peer-up's daemon keeps it (`discovery.rendezvous`): every
//! minute the node announces itself in the DHT as a provider of the rendezvous string's key, and
//! [`super::super::Node::providers`] looks such a key up.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::{PeerId, kad};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::EventLoop;

/// How often the record is announced again (Go's advertise loop).
pub(super) const ADVERTISE_EVERY: Duration = Duration::from_secs(60);

/// The DHT key of a rendezvous string: the SHA-256 multihash of it, which is what go-libp2p's
/// DHT keys the provider record of `CIDv1(raw, sha2-256(rendezvous))` by.
pub(crate) fn rendezvous_key(rendezvous: &str) -> kad::RecordKey {
    let mut mh = vec![0x12, 0x20];
    mh.extend_from_slice(&Sha256::digest(rendezvous.as_bytes()));
    kad::RecordKey::new(&mh)
}

/// Provider lookups in flight: who asked, and the providers found so far.
pub(super) type ProviderQuery = (oneshot::Sender<Vec<PeerId>>, HashSet<PeerId>);

impl EventLoop {
    /// Announces the rendezvous record when due and the DHT knows a peer to store it.
    pub(super) fn advertise_rendezvous(&mut self) {
        let Some(key) = self.rendezvous.clone() else { return };
        if Instant::now() < self.next_advertise {
            return;
        }
        let Some(k) = self.swarm.behaviour_mut().kad.as_mut() else { return };
        if k.kbuckets().all(|b| b.num_entries() == 0) {
            return;
        }
        match k.start_providing(key) {
            Ok(_) => tracing::debug!("rendezvous record announced"),
            Err(e) => tracing::debug!(error = %e, "rendezvous record not announced"),
        }
        self.next_advertise = Instant::now() + ADVERTISE_EVERY;
    }

    /// Starts looking up the providers of `key`; answers at once (none) without a DHT.
    pub(super) fn find_providers(
        &mut self,
        key: kad::RecordKey,
        reply: oneshot::Sender<Vec<PeerId>>,
    ) {
        match self.swarm.behaviour_mut().kad.as_mut() {
            Some(k) => {
                let id = k.get_providers(key);
                self.provider_queries.insert(id, (reply, HashSet::new()));
            }
            None => {
                let _ = reply.send(Vec::new());
            }
        }
    }

    /// A step of a provider lookup.
    pub(super) fn on_providers(
        &mut self,
        id: kad::QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) {
        let Some((_, found)) = self.provider_queries.get_mut(&id) else { return };
        let done = match result {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                found.extend(providers);
                last
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
        };
        if done || last {
            if let Some((reply, found)) = self.provider_queries.remove(&id) {
                let _ = reply.send(found.into_iter().collect());
            }
            if let Some(mut q) =
                self.swarm.behaviour_mut().kad.as_mut().and_then(|k| k.query_mut(&id))
            {
                q.finish();
            }
        }
    }
}
