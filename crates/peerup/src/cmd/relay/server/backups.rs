//! `relay setup --fresh`: before the relay's files are replaced, a snapshot of them goes to
//! `backups/<UTC YYYY-MM-DD_HHMMSS>[_NN]/` in the relay's folder, as Go's setup does (`_01`…`_99`
//! when one was already taken in the same second). The folder is private, the files 0600 and
//! written atomically.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use peerup_core::fsutil;

/// The snapshots' folder, inside the relay's.
pub(super) const BACKUPS_DIR: &str = "backups";

/// A new, empty snapshot folder named after `now`.
fn new_snapshot_dir(relay_dir: &Path, now: Timestamp) -> Result<PathBuf> {
    let backups = relay_dir.join(BACKUPS_DIR);
    fsutil::create_private_dir(&backups)?;
    let stamp = now.strftime("%Y-%m-%d_%H%M%S").to_string();
    for n in 0..100 {
        let name = if n == 0 { stamp.clone() } else { format!("{stamp}_{n:02}") };
        let dir = backups.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("too many snapshots at {stamp} in {}", backups.display())
}

/// Copies those of `files` that exist into a new snapshot folder; returns it, or `None` when
/// none exists.
pub(super) fn snapshot(
    relay_dir: &Path,
    files: &[PathBuf],
    now: Timestamp,
) -> Result<Option<PathBuf>> {
    let present: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    if present.is_empty() {
        return Ok(None);
    }
    let dir = new_snapshot_dir(relay_dir, now)?;
    for f in present {
        let name = f.file_name().with_context(|| format!("no file name in {}", f.display()))?;
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        fsutil::write_private_atomic(&dir.join(name), &bytes)?;
    }
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn snapshots_are_named_by_the_second_and_numbered_on_collision() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, missing) = (tmp.path().join("a.yaml"), tmp.path().join("missing.key"));
        std::fs::write(&a, "one").unwrap();
        let now: Timestamp = "2026-12-07T23:05:09Z".parse().unwrap();
        let first = snapshot(tmp.path(), &[a.clone(), missing.clone()], now).unwrap().unwrap();
        assert_eq!(first, tmp.path().join("backups/2026-12-07_230509"));
        assert_eq!(std::fs::read_to_string(first.join("a.yaml")).unwrap(), "one");
        assert!(!first.join("missing.key").exists());
        let mode = std::fs::metadata(first.join("a.yaml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(&a, "two").unwrap();
        let second = snapshot(tmp.path(), std::slice::from_ref(&a), now).unwrap().unwrap();
        assert_eq!(second, tmp.path().join("backups/2026-12-07_230509_01"));
        assert_eq!(std::fs::read_to_string(second.join("a.yaml")).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(first.join("a.yaml")).unwrap(), "one");

        assert_eq!(snapshot(tmp.path(), &[missing], now).unwrap(), None, "nothing to keep");
    }
}
