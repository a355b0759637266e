//! `peerup config validate|show|rollback|apply|confirm`, and `relay config validate`.

mod changes;

pub(crate) use changes::Kind;

use std::path::Path;

use anyhow::{Result, bail};
use peerup_core::identity;

use super::Ctx;
use crate::cli::{ConfigCommand, RelayConfigCommand};
use crate::config::load::{RELAY_CONFIG_FILE, find_node_config, load_relay_file};
use crate::config::validate::{
    Problem, node_warnings, relay_unsupported, validate_node, validate_relay, with_lines,
};
use crate::config::{self};
use crate::outln;
use crate::output::{ok, warn};

pub(super) fn run(cmd: ConfigCommand, ctx: &Ctx) -> Result<()> {
    // These work on the file as bytes, so a config that no longer loads can still be repaired.
    match &cmd {
        ConfigCommand::Rollback(args) => {
            return changes::rollback(Kind::Node, &find_node_config(ctx.config_path())?, args);
        }
        ConfigCommand::Apply(args) => {
            return changes::apply(Kind::Node, &find_node_config(ctx.config_path())?, args);
        }
        ConfigCommand::Confirm => return changes::confirm(&find_node_config(ctx.config_path())?),
        ConfigCommand::Validate | ConfigCommand::Show => {}
    }
    let loaded = config::load_node(ctx.config_path())?;
    let path = loaded.path.display();
    match cmd {
        ConfigCommand::Validate => {
            let mut problems = strings(validate_node(&loaded.config));
            let key = &loaded.config.identity.key_file;
            if key.exists()
                && let Err(e) = identity::load(key)
            {
                problems.push(format!("identity.key_file: {e}"));
            }
            for w in warnings(&loaded) {
                outln!("{}", warn(format!("warning: {w}")))?;
            }
            report(&loaded.path, &loaded.unknown_keys, &problems)
        }
        ConfigCommand::Show => {
            let problems = validate_node(&loaded.config).err().unwrap_or_default();
            for p in problems.iter().chain(&warnings(&loaded)) {
                outln!("# WARNING: {p}")?;
            }
            outln!("# Resolved config from {path}")?;
            let mut options = serde_saphyr::SerializerOptions::default();
            options.prefer_block_scalars = false;
            let yaml = serde_saphyr::to_string_with_options(&loaded.config, options)?;
            outln!("{}", yaml.trim_end())?;
            changes::show_state(&loaded.path)
        }
        ConfigCommand::Rollback(_) | ConfigCommand::Apply(_) | ConfigCommand::Confirm => Ok(()),
    }
}

/// `peerup relay config rollback|apply|confirm` on `--config` or `./relay-server.yaml`.
pub(super) fn relay_changes(cmd: RelayConfigCommand, ctx: &Ctx) -> Result<()> {
    let path = ctx.config_path().unwrap_or(Path::new(RELAY_CONFIG_FILE));
    if !path.exists() {
        bail!("relay config not found: {} (create one with 'peerup relay setup')", path.display());
    }
    match cmd {
        RelayConfigCommand::Validate => validate_relay_config(ctx),
        RelayConfigCommand::Rollback(args) => changes::rollback(Kind::Relay, path, &args),
        RelayConfigCommand::Apply(args) => changes::apply(Kind::Relay, path, &args),
        RelayConfigCommand::Confirm => changes::confirm(path),
    }
}

/// `peerup relay config validate`: the relay's config is `--config`, else `./relay-server.yaml`.
pub(super) fn validate_relay_config(ctx: &Ctx) -> Result<()> {
    let path = ctx.config_path().unwrap_or(Path::new(RELAY_CONFIG_FILE));
    if !path.exists() {
        bail!("relay config not found: {} (create one with 'peerup relay setup')", path.display());
    }
    let loaded = load_relay_file(path)?;
    for w in relay_unsupported(&loaded.config) {
        outln!("{}", warn(format!("warning: {w}")))?;
    }
    report(&loaded.path, &loaded.unknown_keys, &strings(validate_relay(&loaded.config)))
}

/// What a start of the daemon would warn about in the loaded node config, with line numbers.
pub(crate) fn warnings(loaded: &config::load::Loaded<config::schema::NodeConfig>) -> Vec<Problem> {
    let text = std::fs::read_to_string(&loaded.path).unwrap_or_default();
    with_lines(node_warnings(&loaded.config), &text)
}

fn strings(r: Result<(), Vec<Problem>>) -> Vec<String> {
    r.err().unwrap_or_default().iter().map(ToString::to_string).collect()
}

fn report(path: &Path, unknown_keys: &[String], problems: &[String]) -> Result<()> {
    for k in unknown_keys {
        outln!("note: unknown key {k} is ignored")?;
    }
    if problems.is_empty() {
        outln!("{}", ok(format!("OK: {} is valid", path.display())))?;
        return Ok(());
    }
    for p in problems {
        outln!("{}", warn(format!("FAIL: {p}")))?;
    }
    bail!("{} has {} invalid value(s)", path.display(), problems.len())
}
