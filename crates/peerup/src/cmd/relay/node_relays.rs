//! `peerup relay add|list|remove`: the relays this node keeps reservations on (`relay.addresses`
//! in the node's config).

use anyhow::{Result, bail};
use peerup_core::{PeerId, relay_addr};
use serde::Serialize;

use crate::cmd::Ctx;
use crate::config::edit::{ConfigText, rewrite_node_file, rewrite_node_file_forced};
use crate::config::schema::NodeConfig;
use crate::config::{self};
use crate::outln;
use crate::output::{self, faint, ok, warn};

#[derive(Serialize)]
struct RelayList<'a> {
    config: String,
    addresses: &'a [String],
}

pub(super) fn add(addresses: &[String], peer_id: Option<&str>, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let current = &loaded.config.relay.addresses;
    let peer_id = peer_id
        .map(|s| {
            s.trim().parse::<PeerId>().map_err(|e| anyhow::anyhow!("invalid --peer-id {s:?}: {e}"))
        })
        .transpose()?;
    let mut new = Vec::new();
    for a in addresses {
        let addr = relay_addr::parse(a, peer_id)?.to_string();
        if current.contains(&addr) || new.contains(&addr) {
            outln!("{}", warn(format!("Already configured: {addr}")))?;
        } else {
            new.push(addr);
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    rewrite_node_file(
        &loaded.path,
        |t| t.add_relay_addresses(&new),
        |c| new.iter().all(|a| c.relay.addresses.contains(a)),
    )?;
    for a in &new {
        outln!("{}", ok(format!("Added relay: {a}")))?;
    }
    Ok(())
}

pub(super) fn list(json: bool, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let current = &loaded.config.relay.addresses;
    let list = RelayList { config: loaded.path.display().to_string(), addresses: current };
    if json {
        return output::json(&list);
    }
    if current.is_empty() {
        outln!("No relays configured. Add one with: peerup relay add <multiaddr>")?;
    }
    for (i, a) in current.iter().enumerate() {
        outln!("  {}. {a}", i + 1)?;
    }
    outln!("{}", faint(format!("Config: {}", list.config)))?;
    Ok(())
}

pub(super) fn remove(address: &str, force: bool, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let current = &loaded.config.relay.addresses;
    if !current.iter().any(|a| a == address) {
        bail!("relay address not found: {address} (see 'peerup relay list')");
    }
    if current.len() == 1 && !force {
        bail!(
            "cannot remove the last relay address (the daemon needs at least one); use --force to remove it anyway"
        );
    }
    let edit = |t: &mut ConfigText| t.remove_relay_address(address);
    let gone = |c: &NodeConfig| !c.relay.addresses.iter().any(|a| a == address);
    if current.len() == 1 {
        // The last relay: the config will not start without one, which --force accepted.
        rewrite_node_file_forced(&loaded.path, edit, gone)?;
    } else {
        rewrite_node_file(&loaded.path, edit, gone)?;
    }
    outln!("{}", ok(format!("Removed relay: {address}")))?;
    Ok(())
}
