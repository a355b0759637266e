//! `peerup join`: read the code, reach the relay it names (or the configured one), run the
//! joiner's side, and record the inviter. On a machine with no config it creates one, as `init`
//! would, with the relay from the code.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use peerup_core::multiaddr::Protocol;
use peerup_core::node::NodeError;
use peerup_core::node::{Node, NodeConfig as CoreConfig};
use peerup_core::pairing::code::InviteCode;
use peerup_core::pairing::pake::Paired;
use peerup_core::pairing::session::{self, Join, Joined, PairError};
use peerup_core::streams::OpenStreamError;
use peerup_core::{Multiaddr, identity, relay_addr};

use super::super::Ctx;
use super::super::init::{create_identity, new_node_paths, write_config};
use super::{check_wanted_name, load, note, offered_name, short};
use crate::cli::JoinArgs;
use crate::config::edit::rewrite_node_file;
use crate::config::load::find_node_config;
use crate::output::{faint, ok};
use crate::peers::{add_group, save_peer};
use crate::{outln, runtime};

/// The longest code line read from stdin.
const MAX_LINE: u64 = 4096;

fn read_code(args: &JoinArgs) -> Result<String> {
    if let Some(c) = &args.code {
        return Ok(c.clone());
    }
    if let Some(c) = std::env::var("PEERUP_INVITE_CODE").ok().filter(|c| !c.trim().is_empty()) {
        return Ok(c);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        if args.non_interactive {
            bail!("no invite code: pass it as an argument or in PEERUP_INVITE_CODE");
        }
        eprint!("Invite code: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().take(MAX_LINE).read_line(&mut line).context("cannot read the code from stdin")?;
    if line.trim().is_empty() {
        bail!("no invite code: pass it as an argument, in PEERUP_INVITE_CODE, or on stdin");
    }
    Ok(line)
}

/// `peerup join`.
pub(in crate::cmd) fn join(args: &JoinArgs, ctx: &Ctx) -> Result<()> {
    check_wanted_name("--name", args.name.as_deref())?;
    check_wanted_name("--save-as", args.save_as.as_deref())?;
    let code = InviteCode::decode(&read_code(args)?).context("invalid invite code")?;
    let existing: Option<PathBuf> = match ctx.config_path() {
        Some(p) => p.exists().then(|| p.to_path_buf()),
        None => find_node_config(None).ok(),
    };
    let (config_path, loaded) = match &existing {
        Some(p) => (p.clone(), Some(load(p)?)),
        None => (new_node_paths(ctx)?.1, None),
    };
    let dial: Multiaddr = match (code.relay, &loaded) {
        (Some(a), _) => {
            Multiaddr::empty().with(Protocol::Ip4(*a.ip())).with(Protocol::Tcp(a.port()))
        }
        (None, Some(l)) => {
            let first = l.config.relay.addresses.first().context(
                "this short code names no relay, and the config has none; add the inviter's relay first",
            )?;
            relay_addr::parse(first, None).context("relay.addresses[0]")?
        }
        (None, None) => bail!(
            "this short code names no relay; run 'peerup init --relay <the inviter's relay>' first, then join"
        ),
    };
    let key_file = match &loaded {
        Some(l) => l.config.identity.key_file.clone(),
        None => {
            let dir = config_path.parent().map(PathBuf::from).unwrap_or_else(|| ".".into());
            create_identity(&dir)?.0
        }
    };
    let keypair = identity::load(&key_file)?;
    // As in Go peer-up: --name is what this machine offers; the inviter is saved under the name
    // it offers, unless --save-as says otherwise.
    let wanted = args.save_as.clone();
    let offered = offered_name(args.name.as_deref());
    runtime::block_on(async move {
        let (cancel, tracker) = runtime::shutdown_on_signals()?;
        let mut core = CoreConfig::new(keypair.clone());
        core.enable_dht = false;
        let (node, _) = Node::spawn(core, cancel.clone(), &tracker)?;
        let work = async {
            let relay = node
                .connect(dial.clone())
                .await
                .with_context(|| format!("cannot reach the relay at {dial}"))?;
            note!("Connected to relay {}; pairing…", short(&relay));
            let relay_full = dial.clone().with(Protocol::P2p(relay)).to_string();
            let mut saved = None;
            let save = |j: &Joined| -> std::result::Result<(), String> {
                record(&config_path, loaded.is_some(), &relay_full, j, wanted.as_deref())
                    .map(|n| saved = Some(n))
                    .map_err(|e| format!("{e:#}"))
            };
            let j = Join {
                relay,
                slot: code.slot,
                password: code.password,
                keypair,
                name: offered.clone(),
            };
            // The relay closes the connection of a peer it does not let in right after the
            // handshake: the stream then finds it closing, or already gone (and no address to
            // dial the relay again by its ID).
            let joined = session::join(&node, j, save).await.map_err(|e| match e {
                PairError::Node(
                    NodeError::ConnectionClosed
                    | NodeError::OpenStream(OpenStreamError::NotConnected(_)),
                ) => anyhow::anyhow!(
                    "the relay turned us away: no invite is open there (wrong, expired or used code)"
                ),
                e => e.into(),
            })?;
            Ok::<_, anyhow::Error>((joined, saved.unwrap_or_default(), relay_full))
        };
        let result = tokio::select! {
            () = cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
            r = work => r,
        };
        runtime::shutdown(&cancel, &tracker).await;
        let (joined, name, relay) = result?;
        match &joined.group {
            None => outln!("{}", ok(format!("Paired with {name:?}: {}", joined.paired.peer)))?,
            Some((id, members)) => {
                outln!(
                    "{}",
                    ok(format!("Joined group {id:08x} on relay {}", short(&joined.paired.peer)))
                )?;
                match members.len() {
                    0 => outln!("No other members yet; they will be introduced as they join.")?,
                    n => outln!("Authorized {n} member(s): {name}")?,
                }
                outln!("{}", faint("Run 'peerup daemon' so that later members are introduced."))?;
                return Ok(());
            }
        }
        if existing.is_none() {
            outln!("Created {} (relay {relay})", config_path.display())?;
        }
        outln!(
            "{}",
            faint(format!("Try: peerup ping {name}   |   peerup proxy {name} <service> <port>"))
        )?;
        outln!("{}", faint(format!("Verify it with: peerup verify {name}")))?;
        Ok(())
    })
}

/// Writes the pairing down: a new config when there was none, the relay if the config lacks it,
/// then the inviter (or every member of the group) in authorized_keys and `names:`. Returns the
/// name(s) given.
fn record(
    config_path: &std::path::Path,
    had_config: bool,
    relay: &str,
    joined: &Joined,
    wanted: Option<&str>,
) -> Result<String> {
    if !had_config {
        write_config(config_path, relay, "peerup join", None)?;
    }
    let loaded = load(config_path)?;
    let relay_id = relay.parse::<Multiaddr>().ok().and_then(|a| relay_addr::peer_id_of(&a));
    let known = loaded.config.relay.addresses.iter().any(|a| {
        relay_addr::parse(a, None).ok().and_then(|m| relay_addr::peer_id_of(&m)) == relay_id
    });
    let mut loaded = if known {
        loaded
    } else {
        let list = [relay.to_string()];
        rewrite_node_file(
            config_path,
            |t| t.add_relay_addresses(&list),
            |c| c.relay.addresses.iter().any(|a| a == relay),
        )?;
        load(config_path)?
    };
    let Some((group, members)) = &joined.group else {
        return save_peer(&loaded, &joined.paired, wanted, None);
    };
    add_group(loaded.dir(), *group, &joined.paired.peer)?;
    let mut names = Vec::new();
    for (peer, name) in members {
        let member = Paired { peer: *peer, name: name.clone() };
        names.push(save_peer(&loaded, &member, None, Some(*group))?);
        loaded = load(config_path)?;
    }
    Ok(names.join(", "))
}
