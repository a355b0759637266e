//! `peerup init`: create a node's folder with its identity key, authorized_keys and config.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peerup_core::authorized_keys::HEADER as AUTHORIZED_KEYS_HEADER;
use peerup_core::{PeerId, fsutil, identity, label, relay_addr};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

use super::Ctx;
use crate::cli::InitArgs;
use crate::config::load::{NODE_CONFIG_FILE, default_config_dir};
use crate::config::template;
use crate::outln;
use crate::output::{faint, ok};

pub(super) fn run(args: &InitArgs, ctx: &Ctx) -> Result<()> {
    let (dir, config_path) = target_paths(args, ctx)?;
    if config_path.exists() {
        bail!(
            "config already exists: {}; delete it first if you want to reinitialize",
            config_path.display()
        );
    }
    if let Some(ns) = &args.network {
        label::validate(ns).context("--network")?;
    }
    let relay = relay_address(args)?;

    let (key_path, created) = create_identity(&dir)?;
    let auth_path = dir.join("authorized_keys");
    write_config(&config_path, &relay.to_string(), "peerup init", args.network.as_deref())?;
    let peer_id = identity::peer_id(&identity::load(&key_path)?);
    outln!("{}", ok(format!("peerup initialized in {}", dir.display())))?;
    outln!("  Config:          {}", config_path.display())?;
    let key_note = if created { "" } else { " (existing key kept)" };
    outln!("  Identity:        {}{key_note}", key_path.display())?;
    outln!("  Authorized keys: {}", auth_path.display())?;
    outln!()?;
    outln!("Your peer ID:")?;
    outln!("  {peer_id}")?;
    outln!()?;
    outln!("{}", qr(&peer_id)?)?;
    outln!("Next steps:")?;
    outln!("  1. Expose a service:      peerup service add ssh localhost:22")?;
    outln!("  2. Authorize a peer:      peerup auth add <peer-id> --comment laptop")?;
    outln!("  3. Start the node:        peerup daemon")?;
    outln!("{}", faint("Share your peer ID with the peers that should reach this node."))?;
    Ok(())
}

/// Creates `dir` (private) with an identity key (kept if present) and an empty authorized_keys;
/// returns the key's path and whether it was created.
pub(super) fn create_identity(dir: &Path) -> Result<(PathBuf, bool)> {
    fsutil::create_private_dir(dir)?;
    let key_path = dir.join("identity.key");
    let (_, created) = identity::load_or_generate(&key_path)?;
    let auth_path = dir.join("authorized_keys");
    if !auth_path.exists() {
        fsutil::create_private_new(&auth_path, AUTHORIZED_KEYS_HEADER.as_bytes())?;
    }
    Ok((key_path, created))
}

/// Writes a fresh node config (mode 0600) naming one relay.
pub(super) fn write_config(
    path: &Path,
    relay: &str,
    generator: &str,
    network: Option<&str>,
) -> Result<()> {
    let text = template::node_config(relay, generator, network);
    Ok(fsutil::write_private_atomic(path, text.as_bytes())?)
}

/// The folder and config file a new node gets: the folder of `--config`, else the default.
pub(super) fn new_node_paths(ctx: &Ctx) -> Result<(PathBuf, PathBuf)> {
    let args = InitArgs {
        dir: None,
        network: None,
        relay: None,
        relay_peer_id: None,
        non_interactive: true,
    };
    target_paths(&args, ctx)
}

/// The folder and config file to create: `--dir`, else the folder of `--config`, else the default.
fn target_paths(args: &InitArgs, ctx: &Ctx) -> Result<(PathBuf, PathBuf)> {
    match (&args.dir, ctx.config_path()) {
        (Some(dir), _) => Ok((dir.clone(), dir.join(NODE_CONFIG_FILE))),
        (None, Some(cfg)) => {
            let dir = cfg.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(".".as_ref());
            Ok((dir.to_path_buf(), cfg.to_path_buf()))
        }
        (None, None) => {
            let dir = default_config_dir()?;
            Ok((dir.clone(), dir.join(NODE_CONFIG_FILE)))
        }
    }
}

fn relay_address(args: &InitArgs) -> Result<peerup_core::Multiaddr> {
    let parse_id = |s: &str| -> Result<PeerId> {
        s.trim().parse().map_err(|e| anyhow::anyhow!("invalid relay peer ID {:?}: {e}", s.trim()))
    };
    let input = match &args.relay {
        Some(r) => r.clone(),
        None if args.non_interactive => {
            bail!(
                "--relay is required with --non-interactive (a multiaddr, or IP[:PORT] with --relay-peer-id)"
            )
        }
        None => prompt("Relay address (multiaddr, or IP[:PORT]): ")?,
    };
    let mut peer_id = args.relay_peer_id.as_deref().map(parse_id).transpose()?;
    if peer_id.is_none() && relay_addr::is_short_form(&input) {
        if args.non_interactive {
            bail!(
                "relay address {input:?} needs --relay-peer-id <ID> (or use a full /p2p/ multiaddr)"
            );
        }
        peer_id = Some(parse_id(&prompt("Relay peer ID: ")?)?);
    }
    Ok(relay_addr::parse(&input, peer_id)?)
}

/// Asks a question on stderr (stdout carries results) and reads one line from stdin.
fn prompt(question: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{question}");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
        bail!(
            "no answer to {:?}; for scripts use --non-interactive --relay <addr>",
            question.trim()
        );
    }
    Ok(line.trim().to_string())
}

/// The peer ID as a terminal QR code (half-block characters).
pub(crate) fn qr(peer_id: &PeerId) -> Result<String> {
    let code = QrCode::new(peer_id.to_string().as_bytes()).context("cannot encode QR code")?;
    Ok(code.render::<Dense1x2>().quiet_zone(true).build())
}
