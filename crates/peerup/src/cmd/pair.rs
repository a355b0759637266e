//! `peerup invite` and `peerup join` (in [`join`]): pairing two nodes with a short code. The
//! protocol is in `peerup_core::pairing`; this module finds the relay, shows the code, and records
//! the other side in authorized_keys and `names:`.

mod join;

use std::net::SocketAddrV4;
use std::path::Path;

use anyhow::{Context, Result, bail};
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
use crate::config::load::{Loaded, load_node_file};
use crate::config::schema::NodeConfig;
use crate::output::{faint, ok, short_id, warn};
use crate::peers::save_peer;
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

/// The name this machine offers the other side: `--name`, else the host name.
pub(super) fn offered_name(name: Option<&str>) -> String {
    name.map(sanitize_name).unwrap_or_else(host_name)
}

/// This machine's host name, as a name to offer.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    sanitize_name(raw.trim().split('.').next().unwrap_or_default())
}

/// Checks a name given on the command line as `flag` (`--name`, `--save-as`).
pub(super) fn check_wanted_name(flag: &str, name: Option<&str>) -> Result<()> {
    match name {
        Some(n) if is_peer_id(n.trim()) => {
            bail!(
                "{flag} {n:?} is a peer ID; a name must not look like one (it would hide that peer)"
            )
        }
        Some(n) if sanitize_name(n).is_empty() => {
            bail!("{flag} {n:?} has no usable characters (A-Z a-z 0-9 . _ -)")
        }
        _ => Ok(()),
    }
}

/// `peerup invite`.
pub(super) fn invite(args: &InviteArgs, ctx: &Ctx) -> Result<()> {
    if args.ttl > MAX_TTL {
        bail!("--ttl may be at most {}", humantime::format_duration(MAX_TTL));
    }
    check_wanted_name("--name", args.name.as_deref())?;
    check_wanted_name("--save-as", args.save_as.as_deref())?;
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
    // As in Go peer-up: --name is what this machine offers; the joiner is saved under the name
    // it offers, unless --save-as says otherwise.
    let offered = offered_name(args.name.as_deref());
    let (ttl, name, quiet) = (args.ttl, args.save_as.clone(), args.non_interactive);
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
            name: offered,
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
fn load(path: &Path) -> Result<Loaded<NodeConfig>> {
    load_node_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_names_are_no_peer_ids() {
        let id = PeerId::random().to_string();
        let err = check_wanted_name("--name", Some(&id)).unwrap_err().to_string();
        assert!(err.contains("is a peer ID"), "{err}");
        assert!(check_wanted_name("--save-as", Some("!!")).is_err());
        check_wanted_name("--name", Some("bob")).unwrap();
        check_wanted_name("--name", None).unwrap();
    }
}
