//! `peerup relay add|list|remove`: the relays this node keeps reservations on, and
//! `peerup relay config validate` for a relay server's own config.

use anyhow::{Result, bail};
use peerup_core::{PeerId, relay_addr};
use serde::Serialize;

use super::Ctx;
use crate::cli::RelayCommand;
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

pub(super) fn run(cmd: RelayCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        RelayCommand::Add { addresses, peer_id } => add(&addresses, peer_id.as_deref(), ctx),
        RelayCommand::List(json) => list(json.json, ctx),
        RelayCommand::Remove { address, force } => remove(&address, force, ctx),
        RelayCommand::Config(cmd) => super::config_cmd::relay_changes(cmd, ctx),
        RelayCommand::Setup { dir, non_interactive: _ } => {
            super::relay_server::setup(dir.as_deref(), ctx)
        }
        RelayCommand::Serve => super::relay_server::serve(ctx),
        RelayCommand::Pair { count, ttl, expires, list, revoke, json } => {
            let args = super::pair::relay_pair::PairArgs {
                count: usize::from(count),
                ttl,
                expires,
                list,
                revoke,
                json: json.json,
            };
            super::relay_server::pair(&args, ctx)
        }
        RelayCommand::Info(json) => super::relay_server::info(json.json, ctx),
        RelayCommand::Authorize { peer_id, comment } => {
            super::relay_server::authorize(&peer_id, comment.as_deref(), ctx)
        }
        RelayCommand::Deauthorize { peer_id } => super::relay_server::deauthorize(&peer_id, ctx),
        RelayCommand::ListPeers(json) => super::relay_server::list_peers(json.json, ctx),
    }
}

fn add(addresses: &[String], peer_id: Option<&str>, ctx: &Ctx) -> Result<()> {
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

fn list(json: bool, ctx: &Ctx) -> Result<()> {
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

fn remove(address: &str, force: bool, ctx: &Ctx) -> Result<()> {
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
