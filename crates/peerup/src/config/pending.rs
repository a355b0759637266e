//! Commit-confirmed config changes: `config apply` replaces the config but keeps the previous one,
//! and unless `config confirm` comes before a deadline, the previous one is put back.
//!
//! For a config `<dir>/<name><ext>` the files are Go peer-up's:
//! - `<dir>/.<name>.pending`: the marker, JSON `{"deadline": "<RFC 3339>", "backup": "<file name>"}`.
//! - `<dir>/.<name>.pre-confirmed<ext>`: the config as it was before the apply.
//!
//! Order of writes, so that a crash at any point leaves something a restart can finish: apply
//! writes backup, marker, config; revert writes config, then removes marker and backup; confirm
//! removes marker, then backup. All writes are atomic with mode 0600, and apply, confirm and revert
//! each hold the config's lock (`<config>.lock`, as every config edit does) from start to end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use peerup_core::fsutil;
use serde::Deserialize;

use super::archive::sibling;

/// The marker file, `.<name>.pending`.
pub fn marker_path(config: &Path) -> PathBuf {
    sibling(config, "pending", false)
}

/// The backup of the config before the apply, `.<name>.pre-confirmed<ext>`.
pub fn backup_path(config: &Path) -> PathBuf {
    sibling(config, "pre-confirmed", true)
}

/// A pending apply, as stored in the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// When the change is reverted unless confirmed.
    pub deadline: Timestamp,
    /// The backup's file name, next to the config.
    pub backup: String,
}

impl Marker {
    /// Time left until the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        let left = self.deadline.duration_since(Timestamp::now());
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// Parses a marker's text; the error says what is wrong, never panics.
pub fn parse_marker(text: &str) -> Result<Marker> {
    #[derive(Deserialize)]
    struct Raw {
        deadline: String,
        backup: String,
    }
    let raw: Raw = serde_json::from_str(text).context("not the expected JSON object")?;
    let deadline: Timestamp = raw
        .deadline
        .parse()
        .with_context(|| format!("deadline {:?} is not an RFC 3339 time", raw.deadline))?;
    if raw.backup.is_empty() || raw.backup.contains('/') {
        bail!("backup {:?} is not a file name", raw.backup);
    }
    Ok(Marker { deadline, backup: raw.backup })
}

/// The pending apply of `config`, if any. A marker that cannot be parsed is an error naming the
/// file.
pub fn read(config: &Path) -> Result<Option<Marker>> {
    let path = marker_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_marker(&text)
            .map(Some)
            .with_context(|| format!("malformed pending-apply marker {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces `config` with `contents`, keeping the current config as the backup and writing a
/// marker with `now + timeout`. Refused while another apply is pending (or its marker is broken).
pub fn apply(config: &Path, contents: &[u8], timeout: Duration) -> Result<Marker> {
    // The backup must be the config this apply replaces, not one a concurrent edit is replacing.
    let _lock = fsutil::lock_exclusive(config)?;
    ensure_none(config)?;
    let marker_file = marker_path(config);
    let current =
        std::fs::read(config).with_context(|| format!("cannot read {}", config.display()))?;
    let backup = backup_path(config);
    let span = jiff::SignedDuration::try_from(timeout).context("confirm timeout too large")?;
    let marker = Marker {
        deadline: Timestamp::now().checked_add(span).context("confirm timeout too large")?,
        backup: backup.file_name().unwrap_or_default().to_string_lossy().into_owned(),
    };
    let json = serde_json::to_vec(
        &serde_json::json!({ "deadline": marker.deadline.to_string(), "backup": marker.backup }),
    )?;
    let written = fsutil::write_private_atomic(&backup, &current)
        .and_then(|()| fsutil::write_private_atomic(&marker_file, &json))
        .and_then(|()| fsutil::write_private_atomic(config, contents));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&marker_file);
        let _ = std::fs::remove_file(&backup);
        return Err(e.into());
    }
    Ok(marker)
}

/// Fails when an apply is pending for `config` (or its marker is broken).
pub fn ensure_none(config: &Path) -> Result<()> {
    let marker_file = marker_path(config);
    if marker_file.exists() {
        let when = match read(config) {
            Ok(Some(m)) => format!("reverts at {}", m.deadline),
            _ => format!("marker {}", marker_file.display()),
        };
        bail!(
            "a config apply is already pending ({when}); run 'config confirm' or wait for the revert"
        );
    }
    Ok(())
}

/// Confirms the pending apply: removes marker and backup.
pub fn confirm(config: &Path) -> Result<()> {
    // Under the lock, a confirm and a revert at the deadline cannot both happen.
    let _lock = fsutil::lock_exclusive(config)?;
    let marker_file = marker_path(config);
    if !marker_file.exists() {
        bail!("no config apply pending for {}", config.display());
    }
    // A broken marker is still a pending apply the user means to confirm.
    let backup = match read(config) {
        Ok(Some(m)) => config.with_file_name(m.backup),
        _ => backup_path(config),
    };
    remove(&marker_file)?;
    remove(&backup)
}

/// Puts the backup back over `config` and removes marker and backup. Returns `false` when there
/// was nothing to revert (no marker).
pub fn revert(config: &Path) -> Result<bool> {
    let _lock = fsutil::lock_exclusive(config)?;
    let marker_file = marker_path(config);
    if !marker_file.exists() {
        return Ok(false);
    }
    let backup = match read(config) {
        Ok(Some(m)) => config.with_file_name(m.backup),
        // Without a readable deadline, the safe choice is the config from before the apply.
        _ => backup_path(config),
    };
    let old = std::fs::read(&backup)
        .with_context(|| format!("cannot read the pre-apply backup {}", backup.display()))?;
    fsutil::write_private_atomic(config, &old)?;
    remove(&marker_file)?;
    remove(&backup)?;
    Ok(true)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_parsing_is_strict_and_never_panics() {
        let ok = parse_marker(
            r#"{"deadline":"2026-03-01T10:00:00.123456789Z","backup":".config.pre-confirmed.yaml"}"#,
        )
        .unwrap();
        assert_eq!(ok.backup, ".config.pre-confirmed.yaml");
        assert!(ok.deadline < Timestamp::now());
        assert!(ok.expired());
        let go = parse_marker(
            r#"{"deadline":"2026-03-01T10:00:00.5+01:00","backup":".config.pre-confirmed.yaml"}"#,
        );
        assert!(go.is_ok(), "Go writes RFC3339Nano with an offset: {go:?}");
        for (text, says) in [
            ("", "expected JSON"),
            ("not json", "expected JSON"),
            ("[]", "expected JSON"),
            (r#"{"deadline":"tomorrow","backup":"b"}"#, "\"tomorrow\" is not an RFC 3339"),
            (r#"{"deadline":"2026-03-01T10:00:00Z"}"#, "expected JSON"),
            (r#"{"deadline":"2026-03-01T10:00:00Z","backup":"../etc/x"}"#, "not a file name"),
            (r#"{"deadline":"2026-03-01T10:00:00Z","backup":""}"#, "not a file name"),
            ("\u{0}\u{ffff}{{", "expected JSON"),
        ] {
            let err = format!("{:#}", parse_marker(text).unwrap_err());
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn malformed_marker_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config.yaml");
        std::fs::write(marker_path(&c), "{oops").unwrap();
        let err = format!("{:#}", read(&c).unwrap_err());
        assert!(err.contains("malformed pending-apply marker") && err.contains(".config.pending"));
    }

    #[test]
    fn apply_confirm_and_revert() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config.yaml");
        fsutil::write_private_atomic(&c, b"old\n").unwrap();
        let err = confirm(&c).unwrap_err().to_string();
        assert!(err.contains("no config apply pending"), "{err}");
        assert!(!revert(&c).unwrap(), "nothing to revert");

        let m = apply(&c, b"new\n", Duration::from_secs(300)).unwrap();
        assert!(!m.expired() && m.remaining() > Duration::from_secs(290));
        assert_eq!(std::fs::read(&c).unwrap(), b"new\n");
        assert_eq!(std::fs::read(backup_path(&c)).unwrap(), b"old\n");
        assert_eq!(read(&c).unwrap(), Some(m));
        let err = apply(&c, b"newer\n", Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("already pending"), "{err}");
        assert_eq!(std::fs::read(&c).unwrap(), b"new\n", "a refused apply changes nothing");

        assert!(revert(&c).unwrap());
        assert_eq!(std::fs::read(&c).unwrap(), b"old\n");
        assert!(!marker_path(&c).exists() && !backup_path(&c).exists());

        apply(&c, b"new\n", Duration::from_secs(300)).unwrap();
        confirm(&c).unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), b"new\n");
        assert!(!marker_path(&c).exists() && !backup_path(&c).exists());
        assert!(!revert(&c).unwrap(), "a confirmed apply never reverts");
    }

    #[test]
    fn revert_with_a_broken_marker_uses_the_default_backup() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config.yaml");
        fsutil::write_private_atomic(&c, b"new\n").unwrap();
        fsutil::write_private_atomic(&backup_path(&c), b"old\n").unwrap();
        fsutil::write_private_atomic(&marker_path(&c), b"garbage").unwrap();
        assert!(revert(&c).unwrap());
        assert_eq!(std::fs::read(&c).unwrap(), b"old\n");
    }
}
