//! Glue between config files and the core node: the async runtime, shutdown on SIGINT/SIGTERM,
//! turning a loaded config into the core's `NodeConfig`, and resolving peer names.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::gate::AccessList;
use peerup_core::node::NodeConfig as CoreConfig;
use peerup_core::relay::RelayLimits;
use peerup_core::{Multiaddr, PeerId, identity, relay_addr};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::load::Loaded;
use crate::config::relay_schema::RelayConfig;
use crate::config::schema::NodeConfig;
use crate::config::units::{parse_data_size, parse_duration};

/// How long shutdown waits for tasks to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs `f` on a multi-threaded tokio runtime.
pub fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Runs `f`, which yields a value, on a current-thread runtime (one-shot client calls).
pub fn block_on_value<T, F: Future<Output = Result<T>>>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// A token cancelled on SIGINT or SIGTERM, and a tracker for every task.
pub fn shutdown_on_signals() -> Result<(CancellationToken, TaskTracker)> {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let t = token.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
            _ = term.recv() => tracing::info!("terminated; shutting down"),
            () = t.cancelled() => {}
        }
        t.cancel();
    });
    Ok((token, tracker))
}

/// Cancels, then waits up to [`SHUTDOWN_GRACE`] for tracked tasks.
pub async fn shutdown(token: &CancellationToken, tracker: &TaskTracker) {
    token.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}");
    }
}

fn multiaddrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>> {
    list.iter()
        .enumerate()
        .map(|(i, a)| a.parse().with_context(|| format!("{key}[{i}]: invalid multiaddr {a:?}")))
        .collect()
}

/// The access list from a config's gating settings (strict: a bad line refuses to start).
pub fn access_list(gating: bool, path: &std::path::Path) -> Result<AccessList> {
    if !gating {
        tracing::warn!("connection gating is disabled: any peer can connect");
        return Ok(AccessList::open());
    }
    let keys = AuthorizedKeys::load_strict(path)?;
    if keys.entries().next().is_none() {
        tracing::warn!(file = %path.display(), "authorized_keys is empty: no peer can connect");
    }
    Ok(AccessList::from_keys(&keys))
}

/// The core config of a node from its config file. `reserve`: hold relay reservations.
pub fn node_config(loaded: &Loaded<NodeConfig>, reserve: bool) -> Result<CoreConfig> {
    let c = &loaded.config;
    let key = identity::load(&c.identity.key_file)?;
    let mut core = CoreConfig::new(key);
    core.listen = multiaddrs("network.listen_addresses", &c.network.listen_addresses)?;
    core.relays = node_config_relays(loaded)?;
    core.reserve = reserve;
    core.network = c.discovery.network.clone();
    core.enable_upnp = c.network.enable_upnp;
    core.access =
        access_list(c.security.enable_connection_gating, &c.security.authorized_keys_file)?;
    // Troubleshooting switch: PEERUP_BULK=0 keeps every proxied connection on yamux streams.
    core.enable_bulk = std::env::var("PEERUP_BULK").map_or(true, |v| v != "0");
    Ok(core)
}

/// The configured relays as dialable addresses (each naming its peer ID); none is an error.
pub fn node_config_relays(loaded: &Loaded<NodeConfig>) -> Result<Vec<Multiaddr>> {
    let relays: Vec<Multiaddr> = loaded
        .config
        .relay
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| relay_addr::parse(a, None).with_context(|| format!("relay.addresses[{i}]")))
        .collect::<Result<_>>()?;
    if relays.is_empty() {
        bail!("no relay configured; add one with 'peerup relay add <multiaddr>'");
    }
    Ok(relays)
}

/// The core config of a relay server.
pub fn relay_node_config(loaded: &Loaded<RelayConfig>) -> Result<CoreConfig> {
    let c = &loaded.config;
    let (key, created) = identity::load_or_generate(&c.identity.key_file)?;
    if created {
        tracing::info!(file = %c.identity.key_file.display(), "created relay identity key");
    }
    let mut core = CoreConfig::new(key);
    core.agent = format!("relay-server/{}", env!("CARGO_PKG_VERSION"));
    // A relay exposes no services; its per-IP connection caps must not be sidestepped.
    core.enable_bulk = false;
    core.listen = multiaddrs("network.listen_addresses", &c.network.listen_addresses)?;
    core.network = c.discovery.network.clone();
    core.access =
        access_list(c.security.enable_connection_gating, &c.security.authorized_keys_file)?;
    let r = &c.resources;
    let per_ip = r.max_reservations_per_ip as usize;
    core.relay_server = Some(RelayLimits {
        max_reservations: r.max_reservations as usize,
        max_reservations_per_peer: 1,
        // A peer connects over TCP and QUIC, so two connections per reservation.
        max_connections_per_ip: per_ip * 2,
        reservation_ttl: parse_duration(&r.reservation_ttl).map_err(anyhow::Error::msg)?,
        max_circuits: (r.max_circuits as usize).saturating_mul(r.max_reservations as usize),
        max_circuits_per_peer: r.max_circuits as usize,
        circuit_duration: parse_duration(&r.session_duration).map_err(anyhow::Error::msg)?,
        circuit_bytes: parse_data_size(&r.session_data_limit).map_err(anyhow::Error::msg)?,
        legs: true,
    });
    core.max_inbound_per_ip = Some(per_ip * 2);
    core.listen_addrs_are_external = true;
    Ok(core)
}

/// A peer ID, or a peer named in `names:`. Anything that parses as a peer ID is that peer, even
/// if `names:` has such a key (config validation refuses those): a name must never stand in for
/// the peer whose ID it spells.
pub fn resolve_peer(config: &NodeConfig, target: &str) -> Result<(PeerId, &'static str)> {
    if let Ok(p) = target.parse::<PeerId>() {
        return Ok((p, "peer_id"));
    }
    match config.names.get(target) {
        Some(id) => {
            let peer =
                id.parse().with_context(|| format!("names.{target}: invalid peer ID {id:?}"))?;
            Ok((peer, "local_config"))
        }
        None => {
            bail!("unknown peer {target:?}: not a name in the config's names: and not a peer ID")
        }
    }
}

/// The peers in a service's allowed_peers.
pub fn allowed_peers(name: &str, list: Option<&Vec<String>>) -> Result<Option<HashSet<PeerId>>> {
    list.map(|l| {
        l.iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse().with_context(|| {
                    format!("services.{name}.allowed_peers[{i}]: invalid peer ID {p:?}")
                })
            })
            .collect()
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_shaped_like_a_peer_id_resolves_as_that_id() {
        let (victim, spoofer, home) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut c = NodeConfig::default();
        // A names: key that spells the victim's ID (written before names were checked).
        c.names.insert(victim.to_string(), spoofer.to_string());
        c.names.insert("home".into(), home.to_string());
        assert_eq!(resolve_peer(&c, &victim.to_string()).unwrap(), (victim, "peer_id"));
        assert_eq!(resolve_peer(&c, "home").unwrap(), (home, "local_config"));
        let err = resolve_peer(&c, "nobody").unwrap_err().to_string();
        assert!(err.contains("unknown peer"), "{err}");
    }
}
