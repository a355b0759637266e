//! The relay server: `peerup relay setup|serve|info|authorize|deauthorize|list-peers`.
//!
//! These commands read the relay's own config, `--config` or `./relay-server.yaml`; its paths are
//! relative to its folder.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use peerup_core::authorized_keys::{ATTR_EXPIRES, AuthorizedKeys, Entry};
use peerup_core::gate::{AccessList, Probation};
use peerup_core::multiaddr::Protocol;
use peerup_core::node::NodeEvent;
use peerup_core::pairing::rendezvous::{self, Admission, AdmitHook, RendezvousConfig, Via};
use peerup_core::tunnel::Tunnel;
use peerup_core::{Multiaddr, PeerId, fsutil, identity};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::cmd::Ctx;

mod admit;
mod backups;
mod changes;
mod health;
use crate::config::load::{Loaded, RELAY_CONFIG_FILE, load_relay_file};
use crate::config::relay_schema::RelayConfig;
use crate::config::relay_template::{RELAY_AUTHORIZED_KEYS, RELAY_CONFIG};
use crate::config::validate::validate_relay;
use crate::core_config;
use crate::outln;
use crate::output::{self, ok, short_id};
use crate::runtime;
use admit::{expiry_after, invited_entry};

fn config_path(ctx: &Ctx) -> PathBuf {
    ctx.config_path().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(RELAY_CONFIG_FILE))
}

fn load(ctx: &Ctx) -> Result<Loaded<RelayConfig>> {
    let path = config_path(ctx);
    if !path.exists() {
        bail!(
            "relay config not found: {} (create one with 'peerup relay setup --dir <D>', or pass --config)",
            path.display()
        );
    }
    let loaded = load_relay_file(&path)?;
    if let Err(problems) = validate_relay(&loaded.config) {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("invalid relay config {}: {}", path.display(), list.join("; "));
    }
    Ok(loaded)
}

/// `relay setup`: write the config, authorized_keys and identity key into `dir`, keeping any
/// that already exist (an identity is never replaced), unless `fresh`: then the existing ones go
/// to a snapshot in `dir/backups/` first and are replaced.
pub(super) fn setup(dir: Option<&Path>, fresh: bool, ctx: &Ctx) -> Result<()> {
    let dir = match (dir, ctx.config_path()) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(c)) => c.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => PathBuf::from("."),
    };
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    fsutil::create_private_dir(&dir)?;
    let config = dir.join(RELAY_CONFIG_FILE);
    if fresh {
        start_fresh(&dir, &config)?;
    }
    let mut wrote = Vec::new();
    if !config.exists() {
        fsutil::create_private_new(&config, RELAY_CONFIG.as_bytes())?;
        wrote.push(config.clone());
    }
    let loaded = load_relay_file(&config)?;
    let keys = &loaded.config.security.authorized_keys_file;
    if !keys.exists() {
        fsutil::create_private_new(keys, RELAY_AUTHORIZED_KEYS.as_bytes())?;
        wrote.push(keys.clone());
    }
    let (key, created) = identity::load_or_generate(&loaded.config.identity.key_file)?;
    if created {
        wrote.push(loaded.config.identity.key_file.clone());
    }
    for f in &wrote {
        outln!("Wrote {}", f.display())?;
    }
    if wrote.is_empty() {
        outln!("Relay already set up in {}; existing files kept", dir.display())?;
    }
    outln!("{}", ok(format!("Relay peer ID: {}", identity::peer_id(&key))))?;
    outln!("Authorize each node:  peerup relay authorize <peer-id> --config {}", config.display())?;
    outln!("Start the relay:      peerup relay serve --config {}", config.display())?;
    Ok(())
}

/// `setup --fresh`: snapshots the relay's config, authorized_keys and key (those named by the
/// config when it loads, else the default names), then removes them.
fn start_fresh(dir: &Path, config: &Path) -> Result<()> {
    let (keys, key) = match load_relay_file(config) {
        Ok(l) => (l.config.security.authorized_keys_file, l.config.identity.key_file),
        Err(_) => {
            let d = RelayConfig::default();
            (dir.join(d.security.authorized_keys_file), dir.join(d.identity.key_file))
        }
    };
    let files = [config.to_path_buf(), keys, key];
    if let Some(snap) = backups::snapshot(dir, &files, Timestamp::now())? {
        outln!("Snapshot of the previous files: {}", snap.display())?;
    }
    for f in files.iter().filter(|f| f.exists()) {
        std::fs::remove_file(f).with_context(|| format!("cannot remove {}", f.display()))?;
    }
    Ok(())
}

/// `relay pair`: group codes from the running relay (see `relay/pair.rs`).
pub(super) fn pair(args: &super::pair::PairArgs, ctx: &Ctx) -> Result<()> {
    let path = config_path(ctx);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    super::pair::run(dir, args)
}

pub(super) fn serve(ctx: &Ctx) -> Result<()> {
    let path = config_path(ctx);
    if path.exists() {
        changes::revert_if_expired(&path)?;
    }
    let loaded = match load(ctx) {
        Ok(l) => l,
        Err(e) if changes::revert_failed_start(&path, &e)? => load(ctx)?,
        Err(e) => return Err(e),
    };
    for p in crate::config::validate::relay_unsupported(&loaded.config) {
        tracing::warn!(config = %loaded.path.display(), "{p}");
    }
    let started_with = std::fs::read(&loaded.path)?;
    let started = std::time::Instant::now();
    runtime::block_on(async move {
        let (cancel, tracker) = runtime::shutdown_on_signals()?;
        let mut core = core_config::relay_node_config(&loaded)?;
        let probation = Probation::new(PROBATION_MAX, PROBATION_TTL);
        core.probation = Some(probation.clone());
        let access = core.access.clone();
        let restart = changes::spawn_watch(
            loaded.path.clone(),
            loaded.config.clone(),
            access.clone(),
            cancel.clone(),
            &tracker,
        );
        let keypair = core.keypair.clone();
        // The tunnel layer, for the relay's legs (relayed bulk connections).
        let (tunnel, mut events) = Tunnel::spawn(core, cancel.clone(), &tracker)?;
        let node = tunnel.node().clone();
        let security = &loaded.config.security;
        // `relay authorize|deauthorize` (and hand edits) apply at once; a peer that loses access
        // has its connections closed, and so its reservation and circuits end.
        if security.enable_connection_gating {
            crate::daemon::reload::spawn(
                &security.authorized_keys_file,
                access.clone(),
                tunnel.clone(),
                cancel.clone(),
                &tracker,
            );
        }
        let rendezvous = RendezvousConfig {
            keypair,
            access: access.clone(),
            probation: Some(probation),
            admit: Some(admit_hook(
                access,
                security.enable_connection_gating,
                security.authorized_keys_file.clone(),
            )),
        };
        let rendezvous = rendezvous::serve(&node, rendezvous, cancel.clone(), &tracker);
        super::pair::serve(
            loaded.dir(),
            node.clone(),
            rendezvous.clone(),
            cancel.clone(),
            &tracker,
        )
        .await?;
        let c = &loaded.config;
        if let Some(addr) = health::serve(c, &node, started, cancel.clone(), &tracker).await? {
            if c.health.enabled {
                outln!("Health: http://{addr}/healthz")?;
            }
            if c.telemetry.metrics.enabled {
                outln!("Metrics: http://{addr}/metrics")?;
            }
        }
        let mut announced = false;
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => break,
                e = events.recv() => e,
            };
            match event {
                Ok(NodeEvent::Listening(addr)) => {
                    if !announced {
                        outln!("Relay ready: {}", node.peer_id())?;
                        changes::archive_started(&loaded.path, &started_with);
                        crate::daemon::systemd::ready(node.clone(), cancel.clone(), &tracker);
                        announced = true;
                    }
                    outln!("  {}", addr.with(Protocol::P2p(node.peer_id())))?;
                }
                // Members of a group hear of the members who joined while they were away.
                Ok(NodeEvent::Identified { peer, .. }) => rendezvous.member_connected(peer),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
        crate::daemon::systemd::stopping();
        runtime::shutdown(&cancel, &tracker).await;
        if restart.get() {
            bail!(
                "relay config {} was reverted and needs a restart; exiting so the supervisor restarts the relay",
                loaded.path.display()
            );
        }
        Ok(())
    })
}

/// Unknown peers admitted at once while pairing slots are open, and how long each may stay.
const PROBATION_MAX: usize = 16;
const PROBATION_TTL: Duration = Duration::from_secs(30);

/// Authorizes a joiner on the relay: when its inviter (an authorized peer) vouches for it after a
/// successful pairing, or when it used a code of one of the relay's groups (`group=` attribute,
/// `expires=` if the group asked for it). Appended to the relay's authorized_keys, effective at once.
fn admit_hook(access: AccessList, gating: bool, path: PathBuf) -> AdmitHook {
    Arc::new(move |a: Admission| {
        if !gating {
            return Ok(());
        }
        let _lock = AuthorizedKeys::lock(&path).map_err(|e| e.to_string())?;
        let mut keys = AuthorizedKeys::load(&path).map_err(|e| e.to_string())?;
        if keys.get(&a.joiner).is_none() {
            let entry = match &a.via {
                Via::Inviter(inviter) => {
                    invited_entry(&keys, a.joiner, *inviter, Timestamp::now())?
                }
                Via::Group { id, expires } => {
                    let comment =
                        if a.name.is_empty() { format!("group {id:08x}") } else { a.name.clone() };
                    let mut e = Entry::new(a.joiner, Some(&comment));
                    e.set_attr("group", &format!("{id:08x}")).map_err(|e| e.to_string())?;
                    if let Some(d) = expires {
                        let until = expiry_after(Timestamp::now(), *d)?;
                        e.set_attr(ATTR_EXPIRES, &until.to_string()).map_err(|e| e.to_string())?;
                    }
                    e
                }
                _ => Entry::new(a.joiner, Some("paired")),
            };
            keys.add(entry).map_err(|e| e.to_string())?;
            keys.save(&path).map_err(|e| e.to_string())?;
        }
        access.replace(&keys);
        Ok(())
    })
}

#[derive(Serialize)]
struct Info {
    peer_id: String,
    addresses: Vec<String>,
    gating: bool,
    authorized_peers: usize,
}

/// The listen addresses with wildcard IPs replaced by this host's non-loopback interface IPs.
fn public_addrs(listen: &[String], peer: PeerId) -> Vec<String> {
    let ifaces: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().filter(|i| !i.is_loopback()).map(|i| i.ip()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for a in listen.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
        let (v4_any, v6_any) = a.iter().fold((false, false), |(v4, v6), p| match p {
            Protocol::Ip4(ip) => (v4 || ip.is_unspecified(), v6),
            Protocol::Ip6(ip) => (v4, v6 || ip.is_unspecified()),
            _ => (v4, v6),
        });
        if !(v4_any || v6_any) {
            out.push(a.with(Protocol::P2p(peer)).to_string());
            continue;
        }
        for ip in &ifaces {
            let replaced: Multiaddr = a
                .iter()
                .filter_map(|p| match (p, ip) {
                    (Protocol::Ip4(_), IpAddr::V4(v4)) if v4_any => Some(Protocol::Ip4(*v4)),
                    (Protocol::Ip6(_), IpAddr::V6(v6)) if v6_any => Some(Protocol::Ip6(*v6)),
                    (Protocol::Ip4(_) | Protocol::Ip6(_), _) => None,
                    (other, _) => Some(other),
                })
                .collect();
            if replaced.iter().any(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_))) {
                out.push(replaced.with(Protocol::P2p(peer)).to_string());
            }
        }
    }
    out
}

pub(super) fn info(json: bool, ctx: &Ctx) -> Result<()> {
    let loaded = load(ctx)?;
    let c = &loaded.config;
    let key = identity::load(&c.identity.key_file)?;
    let peer = identity::peer_id(&key);
    let keys = AuthorizedKeys::load(&c.security.authorized_keys_file)?;
    let info = Info {
        peer_id: peer.to_string(),
        addresses: public_addrs(&c.network.listen_addresses, peer),
        gating: c.security.enable_connection_gating,
        authorized_peers: keys.entries().count(),
    };
    if json {
        return output::json(&info);
    }
    outln!("Peer ID: {}", info.peer_id)?;
    outln!("Gating:  {}", if info.gating { "on" } else { "OFF (any peer may use this relay)" })?;
    outln!("Authorized peers: {}", info.authorized_peers)?;
    outln!("Addresses:")?;
    for a in &info.addresses {
        outln!("  {a}")?;
    }
    outln!("On each node: peerup init --relay <one of the addresses above>")?;
    Ok(())
}

fn keys_path(ctx: &Ctx) -> Result<PathBuf> {
    Ok(load(ctx)?.config.security.authorized_keys_file)
}

fn parse_peer(s: &str) -> Result<PeerId> {
    s.trim().parse().map_err(|e| anyhow::anyhow!("invalid peer ID {:?}: {e}", s.trim()))
}

pub(super) fn authorize(peer: &str, comment: Option<&str>, ctx: &Ctx) -> Result<()> {
    let peer = parse_peer(peer)?;
    let path = keys_path(ctx)?;
    let _lock = AuthorizedKeys::lock(&path)?;
    let mut keys = AuthorizedKeys::load(&path)?;
    keys.add(Entry::new(peer, comment))?;
    keys.save(&path)?;
    outln!("{}", ok(format!("Authorized on this relay: {}", short_id(peer))))?;
    outln!("A running relay applies this at once.")?;
    Ok(())
}

pub(super) fn deauthorize(peer: &str, ctx: &Ctx) -> Result<()> {
    let peer = parse_peer(peer)?;
    let path = keys_path(ctx)?;
    let _lock = AuthorizedKeys::lock(&path)?;
    let mut keys = AuthorizedKeys::load(&path)?;
    keys.remove(&peer)?;
    keys.save(&path)?;
    outln!("{}", ok(format!("Removed from this relay: {}", short_id(peer))))?;
    outln!("A running relay closes its connections, reservation and circuits at once.")?;
    Ok(())
}

#[derive(Serialize)]
struct Listed {
    peer_id: String,
    comment: Option<String>,
}

pub(super) fn list_peers(json: bool, ctx: &Ctx) -> Result<()> {
    let keys = AuthorizedKeys::load(&keys_path(ctx)?)?;
    let peers: Vec<Listed> = keys
        .entries()
        .map(|e| Listed {
            peer_id: e.peer_id().to_string(),
            comment: e.comment().map(String::from),
        })
        .collect();
    if json {
        return output::json(&peers);
    }
    for p in &peers {
        let c = p.comment.as_deref().map(|c| format!("  # {c}")).unwrap_or_default();
        outln!("  {}{c}", p.peer_id)?;
    }
    outln!("Total: {} peer(s)", peers.len())?;
    Ok(())
}
