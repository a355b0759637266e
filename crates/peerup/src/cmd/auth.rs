//! `peerup auth add|list|remove|validate`: edit and check the authorized_keys file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use jiff::{SignedDuration, Timestamp};
use peerup_core::PeerId;
use peerup_core::authorized_keys::{ATTR_EXPIRES, AuthorizedKeys, Entry};
use serde::Serialize;

use super::Ctx;
use crate::cli::{AuthCommand, AuthFile};
use crate::config;
use crate::outln;
use crate::output::{self, faint, ok, short_id, warn};

/// An authorized peer as shown by `auth list` and `status`.
#[derive(Serialize)]
pub(super) struct PeerView {
    pub(super) peer_id: String,
    pub(super) comment: Option<String>,
    pub(super) verified: Option<String>,
    pub(super) group: Option<String>,
    pub(super) expires: Option<String>,
    pub(super) expired: bool,
    pub(super) attributes: BTreeMap<String, String>,
}

impl PeerView {
    pub(super) fn new(e: &Entry, now: Timestamp) -> Self {
        Self {
            peer_id: e.peer_id().to_string(),
            comment: e.comment().map(String::from),
            verified: e.verified().map(String::from),
            group: e.group().map(String::from),
            expires: e.expires().map(|t| t.to_string()),
            expired: e.is_expired(now),
            attributes: e.attrs().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

pub(super) fn run(cmd: AuthCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        AuthCommand::Add { peer_id, comment, expires, file } => {
            add(&peer_id, comment.as_deref(), expires.as_deref(), &file, ctx)
        }
        AuthCommand::List { file, json } => list(&file, json.json, ctx),
        AuthCommand::Remove { peer_id, file } => remove(&peer_id, &file, ctx),
        AuthCommand::Validate { path, file } => {
            let path = match path {
                Some(p) => p,
                None => file_path(&file, ctx)?,
            };
            validate(&path)
        }
    }
}

/// `--file`, else the config's `security.authorized_keys_file`.
pub(super) fn file_path(file: &AuthFile, ctx: &Ctx) -> Result<PathBuf> {
    match &file.file {
        Some(p) => Ok(p.clone()),
        None => Ok(config::load_node(ctx.config_path())?.config.security.authorized_keys_file),
    }
}

fn parse_peer(s: &str) -> Result<PeerId> {
    s.trim().parse().map_err(|e| anyhow::anyhow!("invalid peer ID {:?}: {e}", s.trim()))
}

/// `--expires`: an RFC 3339 time, or a duration from now such as `30d` or `12h`.
fn parse_expiry(s: &str, now: Timestamp) -> Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = crate::config::units::parse_duration(s).map_err(|_| {
        anyhow::anyhow!("invalid --expires {s:?}: use an RFC 3339 time (2026-12-31T00:00:00Z) or a duration (30d)")
    })?;
    let d = SignedDuration::try_from(d).context("--expires is too far away")?;
    now.checked_add(d).context("--expires is too far away")
}

fn add(
    peer: &str,
    comment: Option<&str>,
    expires: Option<&str>,
    file: &AuthFile,
    ctx: &Ctx,
) -> Result<()> {
    let peer_id = parse_peer(peer)?;
    let path = file_path(file, ctx)?;
    let _lock = AuthorizedKeys::lock(&path)?;
    let mut keys = AuthorizedKeys::load(&path)?;
    let mut entry = Entry::new(peer_id, comment);
    if let Some(when) = expires {
        let t = parse_expiry(when, Timestamp::now())?.round(jiff::Unit::Second)?;
        entry.set_attr(ATTR_EXPIRES, &t.to_string())?;
    }
    keys.add(entry.clone())?;
    keys.save(&path)?;
    outln!("{}", ok(format!("Authorized peer: {}", short_id(peer_id))))?;
    if let Some(c) = entry.comment() {
        outln!("  Comment: {c}")?;
    }
    if let Some(t) = entry.expires() {
        outln!("  Expires: {t}")?;
    }
    outln!("  File:    {}", path.display())?;
    Ok(())
}

fn list(file: &AuthFile, json: bool, ctx: &Ctx) -> Result<()> {
    let path = file_path(file, ctx)?;
    let keys = AuthorizedKeys::load(&path)?;
    for e in keys.errors() {
        tracing::warn!(file = %path.display(), "skipping invalid {e}");
    }
    let now = Timestamp::now();
    let peers: Vec<PeerView> = keys.entries().map(|e| PeerView::new(e, now)).collect();
    if json {
        return output::json(&peers);
    }
    if peers.is_empty() {
        outln!("No authorized peers.")?;
        return Ok(());
    }
    outln!("Authorized peers ({}):", peers.len())?;
    for (i, p) in peers.iter().enumerate() {
        let comment = p.comment.as_deref().map(|c| format!("  # {c}")).unwrap_or_default();
        outln!("  {}. {}{comment}", i + 1, short_id(&p.peer_id))?;
        let mut detail = vec![p.peer_id.clone()];
        detail.extend(p.attributes.iter().map(|(k, v)| format!("{k}={v}")));
        detail.push(if p.verified.is_some() { "[VERIFIED]" } else { "[UNVERIFIED]" }.into());
        let line = faint(detail.join("  "));
        let expired = if p.expired { format!("  {}", warn("[EXPIRED]")) } else { String::new() };
        outln!("     {line}{expired}")?;
    }
    Ok(())
}

fn remove(peer: &str, file: &AuthFile, ctx: &Ctx) -> Result<()> {
    let peer_id = parse_peer(peer)?;
    let path = file_path(file, ctx)?;
    let _lock = AuthorizedKeys::lock(&path)?;
    let mut keys = AuthorizedKeys::load(&path)?;
    keys.remove(&peer_id)?;
    keys.save(&path)?;
    outln!("{}", ok(format!("Removed peer: {}", short_id(peer_id))))?;
    outln!("  File:    {}", path.display())?;
    Ok(())
}

fn validate(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!("authorized_keys file not found: {}", path.display());
    }
    let keys = AuthorizedKeys::load(path)?;
    let errors = keys.errors();
    let valid = keys.entries().count();
    if errors.is_empty() {
        outln!(
            "OK: {} has {valid} valid entr{}",
            path.display(),
            if valid == 1 { "y" } else { "ies" }
        )?;
        return Ok(());
    }
    for e in &errors {
        outln!("{}", warn(format!("Line {}: {}", e.line, e.kind)))?;
    }
    bail!("{} has {} invalid line(s) and {valid} valid", path.display(), errors.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(parse_expiry("30d", now).unwrap().to_string(), "2026-01-31T00:00:00Z");
        assert_eq!(parse_expiry("1.5h", now).unwrap().to_string(), "2026-01-01T01:30:00Z");
        assert_eq!(
            parse_expiry("2027-02-03T04:05:06+01:00", now).unwrap().to_string(),
            "2027-02-03T03:05:06Z"
        );
        assert!(parse_expiry("someday", now).is_err());
    }
}
