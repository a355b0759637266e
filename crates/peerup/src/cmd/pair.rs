//! `peerup invite` and `peerup join` (in [`join`]): pairing two nodes with a short code. The
//! protocol is in `peerup_core::pairing`; this module finds the relay, shows the code, and records
//! the other side in authorized_keys and `names:`.

mod join;
pub(crate) mod relay_pair;

use std::net::SocketAddrV4;
use std::path::Path;

use anyhow::{Context, Result, bail};
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::multiaddr::Protocol;
use peerup_core::node::{Node, NodeConfig as CoreConfig, NodeError};
use peerup_core::pairing::code::InviteCode;
use peerup_core::pairing::pake::{Paired, is_peer_id, sanitize_name};
use peerup_core::pairing::session::{self, Invite, InviteProgress, PairError};
use peerup_core::pairing::{MAX_TTL, new_secret};
use peerup_core::{Multiaddr, PeerId, identity, relay_addr};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

use super::Ctx;
use crate::cli::InviteArgs;
use crate::config::edit::rewrite_node_file;
use crate::config::load::{Loaded, load_node_file};
use crate::config::schema::NodeConfig;
use crate::output::{faint, ok, short_id, warn};
use crate::{config, outln, runtime};

pub(super) use join::join;

/// Progress and notes for the user: stderr, so that stdout carries only results.
macro_rules! note {
    ($($arg:tt)*) => { anstream::eprintln!($($arg)*) };
}
pub(crate) use note;

/// The relay's IPv4 TCP address, when the multiaddr has one (it then fits in a long code).
fn ipv4_tcp(addr: &Multiaddr) -> Option<SocketAddrV4> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) if ip.is_none() => ip = Some(a),
            Protocol::Tcp(t) if port.is_none() => port = Some(t),
            Protocol::P2pCircuit | Protocol::Udp(_) | Protocol::Ip6(_) | Protocol::Dns(_) => {
                return None;
            }
            _ => {}
        }
    }
    Some(SocketAddrV4::new(ip?, port?))
}

/// This machine's name, announced to the other side.
pub(super) fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    sanitize_name(raw.trim().split('.').next().unwrap_or_default())
}

/// Checks a `--name` given on the command line.
pub(super) fn check_wanted_name(name: Option<&str>) -> Result<()> {
    match name {
        Some(n) if is_peer_id(n.trim()) => {
            bail!(
                "--name {n:?} is a peer ID; a name must not look like one (it would hide that peer)"
            )
        }
        Some(n) if sanitize_name(n).is_empty() => {
            bail!("--name {n:?} has no usable characters (A-Z a-z 0-9 . _ -)")
        }
        _ => Ok(()),
    }
}

/// The name for `peer` in `names:`: `wanted`, else what it announced (sanitized again: a relay
/// relays member names, and it chose those bytes), else `peer-<id prefix>`; made unique among the
/// existing names (`-2`, `-3`, …). A name that another peer holds here stays that peer's: this one
/// gets a distinct name, with a warning (group members cannot take each other's names silently).
fn pick_name(config: &NodeConfig, peer: &PeerId, wanted: Option<&str>, announced: &str) -> String {
    let id = peer.to_string();
    let announced = sanitize_name(announced);
    let base = wanted.map(sanitize_name).filter(|n| !n.is_empty()).unwrap_or_else(|| {
        if announced.is_empty() {
            format!("peer-{}", id.get(8..16).unwrap_or("x"))
        } else {
            announced
        }
    });
    let free = |n: &String| config.names.get(n).is_none_or(|v| *v == id);
    let name = std::iter::once(base.clone())
        .chain((2..100).map(|i| format!("{base}-{i}")))
        .find(free)
        .unwrap_or_else(|| format!("{base}-{}", jiff::Timestamp::now().as_second()));
    if name != base {
        tracing::warn!(%peer, wanted = ?base, given = ?name, "the name belongs to another peer here; this peer gets a distinct name");
    }
    name
}

/// Records a paired peer: authorized_keys (comment = its name, `group=` for group members) and
/// `names:`. Returns the name.
pub(crate) fn save_peer(
    loaded: &Loaded<NodeConfig>,
    paired: &Paired,
    wanted: Option<&str>,
    group: Option<u32>,
) -> Result<String> {
    let c = &loaded.config;
    if let Some(name) = c.names.iter().find(|(_, v)| **v == paired.peer.to_string()).map(|(k, _)| k)
        && group.is_some()
    {
        // A member we know already (introduced twice): nothing to do but make sure it is allowed.
        let path = &c.security.authorized_keys_file;
        let keys = AuthorizedKeys::load(path)?;
        if keys.get(&paired.peer).is_some() {
            return Ok(name.clone());
        }
    }
    let name = pick_name(c, &paired.peer, wanted, &paired.name);
    let path = &c.security.authorized_keys_file;
    let lock = AuthorizedKeys::lock(path)?;
    let mut keys = AuthorizedKeys::load(path)?;
    if keys.get(&paired.peer).is_none() {
        let mut entry = Entry::new(paired.peer, Some(&name));
        if let Some(g) = group {
            entry.set_attr("group", &format!("{g:08x}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        keys.add(entry)?;
        keys.save(path)?;
    }
    drop(lock);
    let id = paired.peer.to_string();
    if c.names.get(&name) != Some(&id) {
        rewrite_node_file(
            &loaded.path,
            |t| t.add_name(&name, &id),
            |n| n.names.get(&name) == Some(&id),
        )
        .with_context(|| format!("cannot add the name {name:?} to {}", loaded.path.display()))?;
    }
    Ok(name)
}

/// The file, next to the config, listing the groups this node joined: `<group> <relay peer ID>`.
pub(crate) const GROUPS_FILE: &str = "groups";

/// Whether this node joined `group` through `relay`.
pub(crate) fn in_group(config_dir: &Path, group: u32, relay: &PeerId) -> bool {
    let want = format!("{group:08x} {relay}");
    std::fs::read_to_string(config_dir.join(GROUPS_FILE))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == want))
}

/// Records that this node joined `group` through `relay`.
pub(crate) fn add_group(config_dir: &Path, group: u32, relay: &PeerId) -> Result<()> {
    if in_group(config_dir, group, relay) {
        return Ok(());
    }
    let path = config_dir.join(GROUPS_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Groups joined with 'peerup join' (relay pair codes): <group> <relay peer ID>\n".into()
    });
    text.push_str(&format!("{group:08x} {relay}\n"));
    peerup_core::fsutil::write_private_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// `peerup invite`.
pub(super) fn invite(args: &InviteArgs, ctx: &Ctx) -> Result<()> {
    if args.ttl > MAX_TTL {
        bail!("--ttl may be at most {}", humantime::format_duration(MAX_TTL));
    }
    check_wanted_name(args.name.as_deref())?;
    let loaded = config::load_node(ctx.config_path())?;
    let c = &loaded.config;
    let Some(first) = c.relay.addresses.first() else {
        bail!("no relay configured; add one with 'peerup relay add <multiaddr>'");
    };
    let relay = relay_addr::parse(first, None).context("relay.addresses[0]")?;
    let relay_id = relay_addr::peer_id_of(&relay).context("relay.addresses[0] has no /p2p/ ID")?;
    let keypair = identity::load(&c.identity.key_file)?;
    let (slot, password) = new_secret().context("no randomness for the code")?;
    let code = InviteCode { relay: ipv4_tcp(&relay), slot, password }.encode();
    let (ttl, name, quiet) = (args.ttl, args.name.clone(), args.non_interactive);
    runtime::block_on(async move {
        let (cancel, tracker) = runtime::shutdown_on_signals()?;
        // A client-only node: no listening, no DHT, no gating to load (nothing dials in).
        let mut core = CoreConfig::new(keypair.clone());
        core.enable_dht = false;
        core.network = loaded.config.discovery.network.clone();
        core.relays = vec![relay];
        let (node, _) = Node::spawn(core, cancel.clone(), &tracker)?;
        // The code is shown once the relay holds the slot, so it works from the moment it is seen.
        let mut shown = false;
        let progress = |p: InviteProgress| {
            if p == InviteProgress::Waiting && !shown {
                shown = true;
                if let Err(e) = show_code(&code, ttl, quiet) {
                    tracing::warn!(error = %e, "cannot print the code");
                }
            }
            progress(p);
        };
        let inv = Invite {
            relay: relay_id,
            slot,
            password,
            keypair,
            name: host_name(),
            expires: tokio::time::Instant::now() + ttl,
        };
        let mut saved = None;
        let save = |p: &Paired| match save_peer(&loaded, p, name.as_deref(), None) {
            Ok(n) => {
                saved = Some(n);
                Ok(())
            }
            Err(e) => Err(format!("{e:#}")),
        };
        let result = tokio::select! {
            () = cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
            r = session::invite(&node, &inv, progress, save) => r.map_err(|e| match e {
                PairError::Node(NodeError::ConnectionClosed) => anyhow::anyhow!(
                    "the relay refused this node; authorize it there first: \
                     peerup relay authorize {} (on the relay)",
                    node.peer_id()
                ),
                e => e.into(),
            }),
        };
        runtime::shutdown(&cancel, &tracker).await;
        let invited = result?;
        let name = saved.unwrap_or_default();
        let line = format!("Peer {name:?} joined and is authorized: {}", invited.paired.peer);
        if quiet {
            note!("{line}")
        } else {
            outln!("{}", ok(line))?
        }
        if let Err(e) = invited.admitted {
            // The relay's words, quoted: it chose them.
            note!("{}", warn(format!("the relay did not authorize {name}: {e:?}")));
        }
        let hint = format!("Verify it with: peerup verify {name}");
        if quiet {
            note!("{hint}")
        } else {
            outln!("{}", faint(hint))?
        }
        Ok(())
    })
}

fn progress(p: InviteProgress) {
    match p {
        InviteProgress::Waiting => {}
        InviteProgress::Matched => note!("Someone is joining; checking the code…"),
        InviteProgress::Failed { n, reason } => {
            note!("{}", warn(format!("Attempt {n} of 3 failed: {reason}")));
        }
        _ => {}
    }
}

fn show_code(code: &str, ttl: std::time::Duration, quiet: bool) -> Result<()> {
    let ttl = humantime::format_duration(ttl);
    if quiet {
        outln!("{code}")?;
        note!("Invite code valid for {ttl}; waiting for 'peerup join' on the other machine…");
        return Ok(());
    }
    let qr = QrCode::new(code.as_bytes()).context("cannot encode QR code")?;
    outln!("=== Invite code (valid for {ttl}, one use) ===")?;
    outln!()?;
    outln!("  {code}")?;
    outln!()?;
    outln!("{}", qr.render::<Dense1x2>().quiet_zone(true).build())?;
    outln!("On the other machine:  peerup join {code}")?;
    outln!("{}", faint("Waiting for it to join… (Ctrl-C cancels)"))?;
    Ok(())
}

/// A short form of a peer for messages.
pub(super) fn short(peer: &PeerId) -> String {
    short_id(peer)
}

/// Loads the node config at `path`.
pub(crate) fn load(path: &Path) -> Result<Loaded<NodeConfig>> {
    load_node_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str =
        "/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";

    #[test]
    fn names_a_relay_sends_are_sanitized_before_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        super::super::init::write_config(&path, RELAY, "test", None).unwrap();
        let (spaced, victim, spoofer) = (PeerId::random(), PeerId::random(), PeerId::random());
        // What a hostile relay could put in Members or Introduce.
        let member = Paired { peer: spaced, name: "a b\nc".into() };
        assert_eq!(save_peer(&load(&path).unwrap(), &member, None, Some(7)).unwrap(), "abc");
        let spoof = Paired { peer: spoofer, name: victim.to_string() };
        let given = save_peer(&load(&path).unwrap(), &spoof, None, Some(7)).unwrap();
        assert!(given.starts_with("peer-"), "{given}");
        let loaded = load(&path).unwrap();
        crate::config::validate::validate_node(&loaded.config).unwrap();
        assert_eq!(loaded.config.names.get("abc"), Some(&spaced.to_string()));
        assert!(!loaded.config.names.contains_key(&victim.to_string()));
    }

    #[test]
    fn a_taken_name_gets_a_distinct_one_and_peer_ids_are_no_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        super::super::init::write_config(&path, RELAY, "test", None).unwrap();
        let (first, second) = (PeerId::random(), PeerId::random());
        let alice = |peer| Paired { peer, name: "alice".into() };
        assert_eq!(
            save_peer(&load(&path).unwrap(), &alice(first), None, Some(1)).unwrap(),
            "alice"
        );
        let again = save_peer(&load(&path).unwrap(), &alice(second), None, Some(1)).unwrap();
        assert_eq!(again, "alice-2");
        let id = PeerId::random().to_string();
        let err = check_wanted_name(Some(&id)).unwrap_err().to_string();
        assert!(err.contains("is a peer ID"), "{err}");
        assert!(check_wanted_name(Some("!!")).is_err());
        check_wanted_name(Some("bob")).unwrap();
        check_wanted_name(None).unwrap();
    }
}
