//! `peerup verify <peer>`: show the short authentication string of this node and a peer (as the Go
//! original computes it) and, once both sides see the same, mark the peer `verified=`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Result, bail};
use peerup_core::authorized_keys::AuthorizedKeys;
use peerup_core::identity;
use peerup_core::pairing::sas::sas;
use serde::Serialize;

use super::Ctx;
use crate::output::{self, faint, ok, warn};
use crate::{config, outln, peers};

#[derive(Serialize)]
struct Verification {
    peer_id: String,
    emoji: String,
    number: String,
    marker: String,
    verified: bool,
}

pub(super) fn run(target: &str, yes: bool, json: bool, ctx: &Ctx) -> Result<()> {
    let loaded = config::load_node(ctx.config_path())?;
    let c = &loaded.config;
    let me = identity::peer_id(&identity::load(&c.identity.key_file)?);
    let (peer, _) = peers::resolve_peer(c, target)?;
    let path = &c.security.authorized_keys_file;
    let keys = AuthorizedKeys::load(path)?;
    if keys.get(&peer).is_none() {
        bail!("{target} is not in {}; pair or 'peerup auth add' it first", path.display());
    }
    let s = sas(&me, &peer);
    if !json {
        outln!("=== Peer verification: {target} ===")?;
        outln!("Verification code:  {}", s.emoji)?;
        outln!("Numeric code:       {}", s.number)?;
    }
    let confirmed = yes || (!json && ask("Does the other side see the same code? [y/N]: ")?);
    if confirmed {
        // Re-read under the lock: the file may have changed while the question was open, and the
        // lock must not wait on a person.
        AuthorizedKeys::update(path, |keys| keys.set_attr(&peer, "verified", &s.marker))?;
    }
    if json {
        return output::json(&Verification {
            peer_id: peer.to_string(),
            emoji: s.emoji,
            number: s.number,
            marker: s.marker,
            verified: confirmed || keys.get(&peer).and_then(|e| e.verified()).is_some(),
        });
    }
    if confirmed {
        outln!("{}", ok(format!("{target} is now [VERIFIED] ({})", s.marker)))?;
    } else {
        outln!("{}", warn("Verification cancelled. Peer remains unverified."))?;
        outln!(
            "{}",
            faint("Compare the code with the other side (in person or by phone), then answer y.")
        )?;
    }
    Ok(())
}

fn ask(question: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{question}");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
