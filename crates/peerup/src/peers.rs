//! The peers this node knows: resolving a name from the config's `names:` (or a peer ID) to a
//! peer, recording a paired peer (authorized_keys and `names:`), and the groups this node joined
//! (the `groups` file next to the config). `peerup invite`/`join` (`cmd/pair.rs`) and the daemon's
//! group introductions (`daemon/groups.rs`) record peers here.

use std::path::Path;

use anyhow::{Context, Result, bail};
use peerup_core::PeerId;
use peerup_core::authorized_keys::{AuthorizedKeys, Entry};
use peerup_core::pairing::pake::{Paired, sanitize_name};

use crate::config::edit::rewrite_node_file;
use crate::config::load::Loaded;
use crate::config::schema::NodeConfig;

/// A peer ID, or a peer named in `names:`. Anything that parses as a peer ID is that peer, even
/// if `names:` has such a key (config validation refuses those): a name must never stand in for
/// the peer whose ID it spells.
pub fn resolve_peer(config: &NodeConfig, target: &str) -> Result<(PeerId, &'static str)> {
    if let Ok(p) = target.parse::<PeerId>() {
        return Ok((p, "peer_id"));
    }
    match config.names.get(target) {
        Some(id) => {
            let peer =
                id.parse().with_context(|| format!("names.{target}: invalid peer ID {id:?}"))?;
            Ok((peer, "local_config"))
        }
        None => {
            bail!("unknown peer {target:?}: not a name in the config's names: and not a peer ID")
        }
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
pub fn save_peer(
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
pub const GROUPS_FILE: &str = "groups";

/// Whether this node joined `group` through `relay`.
pub fn in_group(config_dir: &Path, group: u32, relay: &PeerId) -> bool {
    let want = format!("{group:08x} {relay}");
    std::fs::read_to_string(config_dir.join(GROUPS_FILE))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == want))
}

/// Records that this node joined `group` through `relay`.
pub fn add_group(config_dir: &Path, group: u32, relay: &PeerId) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str =
        "/ip4/198.18.0.1/tcp/7777/p2p/12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";

    /// A fresh node config at `dir/config.yaml`, as `peerup init` writes it.
    fn new_config(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("config.yaml");
        let text = crate::config::template::node_config(RELAY, "test", None);
        peerup_core::fsutil::write_private_atomic(&path, text.as_bytes()).unwrap();
        path
    }

    fn load(path: &Path) -> Loaded<NodeConfig> {
        crate::config::load::load_node_file(path).unwrap()
    }

    #[test]
    fn names_a_relay_sends_are_sanitized_before_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = new_config(dir.path());
        let (spaced, victim, spoofer) = (PeerId::random(), PeerId::random(), PeerId::random());
        // What a hostile relay could put in Members or Introduce.
        let member = Paired { peer: spaced, name: "a b\nc".into() };
        assert_eq!(save_peer(&load(&path), &member, None, Some(7)).unwrap(), "abc");
        let spoof = Paired { peer: spoofer, name: victim.to_string() };
        let given = save_peer(&load(&path), &spoof, None, Some(7)).unwrap();
        assert!(given.starts_with("peer-"), "{given}");
        let loaded = load(&path);
        crate::config::validate::validate_node(&loaded.config).unwrap();
        assert_eq!(loaded.config.names.get("abc"), Some(&spaced.to_string()));
        assert!(!loaded.config.names.contains_key(&victim.to_string()));
    }

    #[test]
    fn a_taken_name_gets_a_distinct_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = new_config(dir.path());
        let (first, second) = (PeerId::random(), PeerId::random());
        let alice = |peer| Paired { peer, name: "alice".into() };
        assert_eq!(save_peer(&load(&path), &alice(first), None, Some(1)).unwrap(), "alice");
        let again = save_peer(&load(&path), &alice(second), None, Some(1)).unwrap();
        assert_eq!(again, "alice-2");
    }

    #[test]
    fn anything_shaped_like_a_peer_id_resolves_as_that_id() {
        let (victim, spoofer, home) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut c = NodeConfig::default();
        // A names: key that spells the victim's ID (written before names were checked).
        c.names.insert(victim.to_string(), spoofer.to_string());
        c.names.insert("home".into(), home.to_string());
        assert_eq!(resolve_peer(&c, &victim.to_string()).unwrap(), (victim, "peer_id"));
        assert_eq!(resolve_peer(&c, "home").unwrap(), (home, "local_config"));
        let err = resolve_peer(&c, "nobody").unwrap_err().to_string();
        assert!(err.contains("unknown peer"), "{err}");
    }
}
