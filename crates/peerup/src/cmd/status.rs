//! `peerup whoami` and `peerup status`: what this node is, read from its files (no daemon needed).

use anyhow::Result;
use jiff::Timestamp;
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::identity;
use serde::Serialize;

use super::Ctx;
use super::auth::PeerView;
use crate::cli::JsonFlag;
use crate::config;
use crate::outln;
use crate::output::{self, faint, ok, short_id, warn};

#[derive(Serialize)]
struct Whoami {
    peer_id: String,
}

pub(super) fn whoami(json: JsonFlag, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let key = identity::load(&loaded.config.identity.key_file)?;
    let peer_id = identity::peer_id(&key).to_string();
    if json.json {
        return output::json(&Whoami { peer_id });
    }
    outln!("{peer_id}")?;
    Ok(())
}

#[derive(Serialize)]
struct ServiceView {
    name: String,
    local_address: String,
    enabled: bool,
}

#[derive(Serialize)]
struct NameView {
    name: String,
    peer_id: String,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    peer_id: String,
    config: String,
    key_file: String,
    network: Option<String>,
    relays: Vec<String>,
    authorized_peers: Vec<PeerView>,
    services: Vec<ServiceView>,
    names: Vec<NameView>,
}

pub(super) fn run(json: JsonFlag, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let c = &loaded.config;
    let key = identity::load(&c.identity.key_file)?;
    let keys = AuthorizedKeys::load(&c.security.authorized_keys_file)?;
    for e in keys.errors() {
        tracing::warn!(file = %c.security.authorized_keys_file.display(), "skipping invalid {e}");
    }
    let now = Timestamp::now();
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        peer_id: identity::peer_id(&key).to_string(),
        config: loaded.path.display().to_string(),
        key_file: c.identity.key_file.display().to_string(),
        network: c.discovery.network.clone(),
        relays: c.relay.addresses.clone(),
        authorized_peers: keys.entries().map(|e| PeerView::new(e, now)).collect(),
        services: c
            .services
            .iter()
            .map(|(name, s)| ServiceView {
                name: name.clone(),
                local_address: s.local_address.clone(),
                enabled: s.enabled,
            })
            .collect(),
        names: c
            .names
            .iter()
            .map(|(name, id)| NameView { name: name.clone(), peer_id: id.clone() })
            .collect(),
    };
    if json.json {
        return output::json(&status);
    }
    outln!("peerup {}", status.version)?;
    outln!("Peer ID:  {}", status.peer_id)?;
    outln!("Config:   {}", status.config)?;
    outln!("Key file: {}", status.key_file)?;
    outln!("Network:  {}", status.network.as_deref().unwrap_or("global (default)"))?;
    outln!()?;
    outln!("Relays ({}):", status.relays.len())?;
    for r in &status.relays {
        outln!("  {r}")?;
    }
    outln!()?;
    outln!("Authorized peers ({}):", status.authorized_peers.len())?;
    for p in &status.authorized_peers {
        let badge = if p.verified.is_some() { ok("[VERIFIED]") } else { warn("[UNVERIFIED]") };
        let expired = if p.expired { format!(" {}", warn("[EXPIRED]")) } else { String::new() };
        let comment = p.comment.as_deref().map(|c| format!("  # {c}")).unwrap_or_default();
        outln!("  {badge}{expired} {}{}", short_id(&p.peer_id), faint(comment))?;
    }
    outln!()?;
    outln!("Services ({}):", status.services.len())?;
    for s in &status.services {
        let state = if s.enabled { ok("enabled") } else { faint("disabled") };
        outln!("  {:<12} -> {:<20} ({state})", s.name, s.local_address)?;
    }
    if !status.names.is_empty() {
        outln!()?;
        outln!("Names ({}):", status.names.len())?;
        for n in &status.names {
            outln!("  {:<12} -> {}", n.name, n.peer_id)?;
        }
    }
    Ok(())
}
