//! `peerup service add|list|remove|enable|disable`: comment-preserving edits of `services:`.

use anyhow::{Result, bail};
use peerup_core::label;
use serde::Serialize;

use super::Ctx;
use crate::cli::ServiceCommand;
use crate::config::{self, edit::rewrite_node_file, validate::check_local_address};
use crate::outln;
use crate::output::{self, faint, ok, warn};

const RESTART_HINT: &str = "Restart 'peerup daemon' to apply.";

#[derive(Serialize)]
struct ServiceView<'a> {
    name: &'a str,
    local_address: &'a str,
    enabled: bool,
    protocol: String,
}

pub(super) fn run(cmd: ServiceCommand, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let path = &loaded.path;
    let services = &loaded.config.services;
    match cmd {
        ServiceCommand::Add { name, address, protocol } => {
            label::validate(&name)?;
            if let Err(e) = check_local_address(&address) {
                bail!("invalid service address {address:?}: {e}");
            }
            if services.contains_key(&name) {
                bail!("service already configured: {name} (remove it first to change it)");
            }
            rewrite_node_file(
                path,
                |t| t.add_service(&name, &address, protocol.as_deref()),
                |c| c.services.get(&name).is_some_and(|s| s.local_address == address && s.enabled),
            )?;
            outln!("{}", ok(format!("Added service {name} -> {address}")))?;
            outln!("{}", faint(RESTART_HINT))?;
        }
        ServiceCommand::List(json) => {
            let views: Vec<_> = services
                .iter()
                .map(|(name, s)| ServiceView {
                    name,
                    local_address: &s.local_address,
                    enabled: s.enabled,
                    protocol: peerup_core::protocols::service(name),
                })
                .collect();
            if json.json {
                return output::json(&views);
            }
            if views.is_empty() {
                outln!(
                    "No services configured. Add one with: peerup service add ssh localhost:22"
                )?;
                return Ok(());
            }
            outln!("Services ({}):", views.len())?;
            for v in views {
                let state = if v.enabled { ok("enabled") } else { faint("disabled") };
                outln!("  {:<12} -> {:<20} ({state})", v.name, v.local_address)?;
            }
        }
        ServiceCommand::Remove { name } => {
            if !services.contains_key(&name) {
                bail!("service not found: {name}");
            }
            rewrite_node_file(
                path,
                |t| t.remove_service(&name),
                |c| !c.services.contains_key(&name),
            )?;
            outln!("{}", ok(format!("Removed service {name}")))?;
            outln!("{}", faint(RESTART_HINT))?;
        }
        ServiceCommand::Enable { name } | ServiceCommand::Disable { name }
            if !services.contains_key(&name) =>
        {
            bail!("service not found: {name}");
        }
        ServiceCommand::Enable { name } => set_enabled(path, &name, true, services[&name].enabled)?,
        ServiceCommand::Disable { name } => {
            set_enabled(path, &name, false, services[&name].enabled)?
        }
    }
    Ok(())
}

fn set_enabled(path: &std::path::Path, name: &str, enabled: bool, current: bool) -> Result<()> {
    let word = if enabled { "enabled" } else { "disabled" };
    if current == enabled {
        outln!("{}", warn(format!("Service {name} is already {word}")))?;
        return Ok(());
    }
    rewrite_node_file(
        path,
        |t| t.set_service_enabled(name, enabled),
        |c| c.services.get(name).is_some_and(|s| s.enabled == enabled),
    )?;
    outln!("{}", ok(format!("Service {name} {word}")))?;
    outln!("{}", faint(RESTART_HINT))?;
    Ok(())
}
