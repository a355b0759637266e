//! Config files to the core's typed configs: a node's or a relay's loaded YAML becomes a
//! `peerup_core::node::NodeConfig` (identity, listen addresses, relays, access list, relay
//! limits), and a service's `allowed_peers` a set of peer IDs. Neighbours: [`crate::config`]
//! loads and validates the files; [`crate::runtime`] runs the node.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::gate::AccessList;
use peerup_core::node::NodeConfig as CoreConfig;
use peerup_core::relay::RelayLimits;
use peerup_core::{Multiaddr, PeerId, identity, relay_addr};

use crate::config::load::Loaded;
use crate::config::relay_schema::RelayConfig;
use crate::config::schema::NodeConfig;
use crate::config::units::{parse_data_size, parse_duration};

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
    core.force_private = c.network.force_private_reachability;
    core.reservation_interval = parse_duration(&c.relay.reservation_interval)
        .map_err(|e| anyhow::anyhow!("relay.reservation_interval: {e}"))?;
    core.bootstrap = multiaddrs("discovery.bootstrap_peers", &c.discovery.bootstrap_peers)?;
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
    // Only authorized peers, either way: a deauthorized peer must not come back over a
    // connection the relay dialled (see `Gate::gate_outbound`).
    core.gate_outbound = true;
    let r = &c.resources.effective();
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

/// The peers in a service's allowed_peers. An entry that is not a peer ID is skipped, as in Go
/// peer-up (the start warned about it: `config::validate::node_warnings`); the list still
/// restricts the service, so a list of bad entries only admits no one.
pub fn allowed_peers(list: Option<&Vec<String>>) -> Option<HashSet<PeerId>> {
    list.map(|l| l.iter().filter_map(|p| p.trim().parse().ok()).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::load::node_from_text;

    const RELAY: &str =
        "/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";

    /// The Go keys that reach the core: `force_private_reachability`, `reservation_interval`
    /// (Go's duration syntax, fractions too) and `bootstrap_peers`.
    #[test]
    fn go_node_keys_reach_the_core() {
        let dir = tempfile::tempdir().unwrap();
        identity::generate(&dir.path().join("identity.key")).unwrap();
        let text = format!(
            "network:\n  force_private_reachability: true\nrelay:\n  addresses: [\"{RELAY}\"]\n  reservation_interval: \"1.5m\"\ndiscovery:\n  bootstrap_peers: [\"/ip4/198.18.0.2/tcp/4001\"]\nsecurity:\n  enable_connection_gating: false\n"
        );
        let loaded = node_from_text(&text, &dir.path().join("config.yaml")).unwrap();
        let core = node_config(&loaded, true).unwrap();
        assert!(core.force_private);
        assert_eq!(core.reservation_interval, Duration::from_secs(90));
        assert_eq!(core.bootstrap, ["/ip4/198.18.0.2/tcp/4001".parse::<Multiaddr>().unwrap()]);
        let defaults = node_from_text(
            &format!(
                "relay:\n  addresses: [\"{RELAY}\"]\nsecurity:\n  enable_connection_gating: false\n"
            ),
            &dir.path().join("config.yaml"),
        )
        .unwrap();
        let core = node_config(&defaults, true).unwrap();
        assert!(!core.force_private && core.bootstrap.is_empty());
        assert_eq!(core.reservation_interval, Duration::from_secs(120), "Go's default 2m");
    }

    /// A bad `allowed_peers` entry is skipped, and the list still restricts the service.
    #[test]
    fn bad_allowed_peers_are_skipped_not_opened() {
        let good = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";
        let set = allowed_peers(Some(&vec![good.to_string(), "zz".into()])).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(allowed_peers(Some(&vec!["zz".into()])), Some(HashSet::new()));
        assert_eq!(allowed_peers(None), None);
    }
}
