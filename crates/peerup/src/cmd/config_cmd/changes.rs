//! `config rollback|apply|confirm` and `relay config rollback|apply|confirm`: the same files and
//! rules for both configs (see [`crate::config::archive`] and [`crate::config::pending`]); only
//! the check of a new file and who applies it differ.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::cli::{ApplyArgs, RollbackArgs};
use crate::config::load::{node_from_text, relay_from_text};
use crate::config::validate::{Problem, validate_node, validate_relay};
use crate::config::{archive, pending};
use crate::daemon::{ApiPaths, client};
use crate::output::{self, ok, warn};
use crate::{core_config, outln, runtime};

/// Which config a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The node's config (`peerup daemon`).
    Node,
    /// The relay server's config (`peerup relay serve`).
    Relay,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Node => "peerup config",
            Kind::Relay => "peerup relay config",
        }
    }
}

#[derive(Serialize)]
struct ArchiveView {
    n: usize,
    archived_at: String,
    path: String,
    bytes: u64,
}

/// `rollback [--to N] [--list] [--json]`.
pub(crate) fn rollback(kind: Kind, config: &Path, args: &RollbackArgs) -> Result<()> {
    if args.list {
        let views: Vec<ArchiveView> = archive::list(config)?
            .into_iter()
            .map(|a| ArchiveView {
                n: a.n,
                archived_at: a.archived_at.to_string(),
                path: a.path.display().to_string(),
                bytes: a.bytes,
            })
            .collect();
        if args.json.json {
            return output::json(&views);
        }
        if views.is_empty() {
            outln!(
                "No archives of {} yet (one is made on every successful start)",
                config.display()
            )?;
        }
        for v in views {
            outln!("{}\t{}\t{} bytes\t{}", v.n, v.archived_at, v.bytes, v.path)?;
        }
        return Ok(());
    }
    if pending::marker_path(config).exists() {
        bail!(
            "a config apply is pending for {}; confirm it ('{} confirm') or let it revert first",
            config.display(),
            kind.prefix()
        );
    }
    let restored = archive::rollback(config, usize::from(args.to))?;
    tracing::info!(target: "audit", config = %config.display(), archive = %restored.path.display(), "config_rollback");
    if args.json.json {
        return output::json(&serde_json::json!({
            "restored": restored.path.display().to_string(),
            "archived_at": restored.archived_at.to_string(),
            "config": config.display().to_string(),
        }));
    }
    outln!(
        "{}",
        ok(format!(
            "Restored archive {} ({}) to {}",
            restored.n,
            restored.archived_at,
            config.display()
        ))
    )?;
    outln!("The replaced file is kept as {}", archive::before_rollback(config).display())?;
    Ok(())
}

fn problems(r: Result<(), Vec<Problem>>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(ps) => bail!("{}", ps.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
    }
}

/// Everything a start of the node would check: values, identity key, authorized_keys, relays.
fn check_node(text: &str, as_path: &Path) -> Result<()> {
    let loaded = node_from_text(text, as_path)?;
    problems(validate_node(&loaded.config))?;
    core_config::node_config(&loaded, true)?;
    Ok(())
}

/// What `relay serve` would check, without creating a missing identity key.
fn check_relay(text: &str, as_path: &Path) -> Result<()> {
    let loaded = relay_from_text(text, as_path)?;
    let c = &loaded.config;
    problems(validate_relay(c))?;
    core_config::access_list(
        c.security.enable_connection_gating,
        &c.security.authorized_keys_file,
    )?;
    if c.identity.key_file.exists() {
        peerup_core::identity::load(&c.identity.key_file)?;
    }
    Ok(())
}

/// `apply <file> [--confirm-timeout D]`.
pub(crate) fn apply(kind: Kind, config: &Path, args: &ApplyArgs) -> Result<()> {
    pending::ensure_none(config)?;
    let file = &args.file;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read new config {}", file.display()))?;
    let check = match kind {
        Kind::Node => check_node,
        Kind::Relay => check_relay,
    };
    // Relative paths are checked against the new file's folder (as Go peer-up did) and against
    // the config's folder, where they resolve once the file is in place.
    check(&text, file).with_context(|| format!("new config {} is invalid", file.display()))?;
    check(&text, config).with_context(|| {
        format!("new config {} is invalid once in place at {}", file.display(), config.display())
    })?;
    let marker = pending::apply(config, text.as_bytes(), args.confirm_timeout)?;
    tracing::info!(target: "audit", config = %config.display(), from = %file.display(), deadline = %marker.deadline, "config_apply: pending confirmation");
    outln!("{}", ok(format!("Applied {} → {}", file.display(), config.display())))?;
    if kind == Kind::Node {
        tell_daemon(config)?;
    } else {
        outln!("A running relay picks the change up within a second (see its log).")?;
    }
    outln!(
        "Auto-revert in {} (at {}) unless confirmed: {} confirm",
        humantime::format_duration(args.confirm_timeout),
        marker.deadline,
        kind.prefix()
    )?;
    Ok(())
}

/// Asks a running daemon to apply the config now and prints what it did.
fn tell_daemon(config: &Path) -> Result<()> {
    let dir = config.parent().unwrap_or(Path::new("."));
    let paths = ApiPaths::in_dir(dir);
    if !paths.socket.exists() {
        outln!("No daemon running; the new config is used at its next start.")?;
        return Ok(());
    }
    match runtime::block_on_value(client::call(&paths, Method::POST, "/v1/config/reload", None)) {
        Ok(v) => {
            let list = |key: &str| {
                let items: Vec<&str> =
                    v[key].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect();
                if items.is_empty() { "nothing".to_string() } else { items.join(", ") }
            };
            outln!("Daemon applied live: {}", list("applied"))?;
            if v["needs_restart"].as_array().is_some_and(|a| !a.is_empty()) {
                outln!("{}", warn(format!("Needs a daemon restart: {}", list("needs_restart"))))?;
            }
        }
        Err(e) => {
            outln!(
                "{}",
                warn(format!(
                    "The daemon did not apply it now ({e:#}); it will notice the file change"
                ))
            )?;
        }
    }
    Ok(())
}

/// `confirm`.
pub(crate) fn confirm(config: &Path) -> Result<()> {
    pending::confirm(config)?;
    tracing::info!(target: "audit", config = %config.display(), "config_confirm");
    // A confirmed config is a known-good one.
    let text =
        std::fs::read(config).with_context(|| format!("cannot read {}", config.display()))?;
    archive::archive(config, &text)?;
    outln!("{}", ok(format!("Confirmed {}; it will not be reverted", config.display())))?;
    Ok(())
}

/// The `config show` trailer: archives and any pending apply, as comments.
pub(crate) fn show_state(config: &Path) -> Result<()> {
    match archive::list(config)?.first() {
        Some(newest) => outln!(
            "# Last-known-good archive: {} ({} kept, newest {}; rollback: peerup config rollback --list)",
            archive::last_good(config).display(),
            archive::list(config)?.len(),
            newest.archived_at
        )?,
        None => outln!("# No last-known-good archive (will be created on next successful start)")?,
    }
    match pending::read(config) {
        Ok(Some(m)) if m.expired() => outln!(
            "# Commit-confirmed expired at {} (a running daemon reverts now, else its next start)",
            m.deadline
        )?,
        Ok(Some(m)) => outln!(
            "# Commit-confirmed pending: {} remaining (reverts at {}; confirm: peerup config confirm)",
            humantime::format_duration(std::time::Duration::from_secs(m.remaining().as_secs())),
            m.deadline
        )?,
        Ok(None) => {}
        Err(e) => outln!("# WARNING: {e:#}")?,
    }
    Ok(())
}
