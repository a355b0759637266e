//! The peers this node knows by name: resolving a name from the config's `names:` (or a peer ID)
//! to a peer.

use anyhow::{Context, Result, bail};
use peerup_core::PeerId;

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

#[cfg(test)]
mod tests {
    use super::*;

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
