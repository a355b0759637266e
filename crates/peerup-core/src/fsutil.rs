//! Private files: atomic writes with mode 0600, and the check that refuses secrets others can read.
//!
//! Every file peerup writes that matters (config, identity key, authorized_keys) goes through
//! [`write_private_atomic`], so a crash or a full disk never leaves half a file behind: the new text
//! goes to a temporary file in the same folder, is flushed to disk, and only then renamed over the old.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The only mode peerup gives to the files it writes.
pub const PRIVATE_MODE: u32 = 0o600;

/// A file failed the private-permission check or could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// Group or other users can read or write a file that must be private.
    #[error(
        "{} has insecure permissions {mode:04o} (expected 0600); fix with: chmod 600 {}",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An I/O error on the file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl FsError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// Refuses a file that any user but its owner may read or write (`mode & 0o077 != 0`).
pub fn check_private(path: &Path) -> Result<(), FsError> {
    let meta = fs::metadata(path).map_err(|e| FsError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FsError::InsecurePermissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// Writes `contents` to `path` atomically with mode 0600: temp file in the same folder, fsync, rename,
/// then fsync of the folder so the rename itself is durable. A reader (or a crash at any instant)
/// sees the old file or the new one, whole.
///
/// A writer killed before its rename leaves its temp file behind; the next write in the same folder
/// removes it, so they never accumulate.
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let tmp = write_temp(path, dir, contents)?;
    tmp.persist(path).map_err(|e| FsError::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Creates `path` with mode 0600 and `contents`; fails if it already exists. Used for new secrets,
/// where overwriting an existing file would destroy an identity. Like [`write_private_atomic`], the
/// file appears whole or not at all: it is written to a temp file first and then linked into place
/// without replacing anything.
pub fn create_private_new(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let tmp = write_temp(path, dir, contents)?;
    tmp.persist_noclobber(path).map_err(|e| FsError::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The prefix of every temp file: `.peerup-<pid>-<random>.tmp`. The writer's process ID in the name
/// tells a dead writer's leftover from a live writer's file in progress.
const TEMP_PREFIX: &str = ".peerup-";
const TEMP_SUFFIX: &str = ".tmp";

/// A temp file in `dir` holding `contents`, flushed to disk, mode 0600.
fn write_temp(
    path: &Path,
    dir: &Path,
    contents: &[u8],
) -> Result<tempfile::NamedTempFile, FsError> {
    remove_stale_temps(dir);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .suffix(TEMP_SUFFIX)
        .permissions(fs::Permissions::from_mode(PRIVATE_MODE))
        .tempfile_in(dir)
        .map_err(|e| FsError::io(path, e))?;
    tmp.write_all(contents).map_err(|e| FsError::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| FsError::io(path, e))?;
    Ok(tmp)
}

/// Durability of a rename; not every filesystem supports fsync on a directory, so a failure here is
/// not worth failing the write for.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes the temp files in `dir` left by writers that died before their rename (a crash, a
/// SIGKILL): those whose process no longer exists. Best effort, and only where `/proc` tells which
/// processes live; a live writer's temp file is never touched. A writer in another PID namespace
/// sharing the folder could look dead; its rename then fails with an error, and no file is torn.
fn remove_stale_temps(dir: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else { continue };
        if !proc.join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process ID in a temp file's name, if it is one of ours.
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
    rest.split_once('-')?.0.parse().ok()
}

/// Creates a folder (and its parents) with mode 0700 if it does not exist yet.
pub fn create_private_dir(dir: &Path) -> Result<(), FsError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| FsError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn atomic_write_replaces_content_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(mode(&p), 0o600);
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn check_private_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        fs::write(&p, "x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = check_private(&p).unwrap_err().to_string();
        assert!(err.contains("0640") && err.contains("chmod 600"), "{err}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&p).unwrap();
    }

    #[test]
    fn a_dead_writers_temp_file_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // PID 0 is never a process in /proc; our own PID is alive; other names are not ours.
        let dead = dir.path().join(".peerup-0-abc123.tmp");
        let live = dir.path().join(format!(".peerup-{}-xyz.tmp", std::process::id()));
        let other = dir.path().join(".peerup-notes.tmp");
        for f in [&dead, &live, &other] {
            fs::write(f, "partial").unwrap();
        }
        write_private_atomic(&p, b"new").unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
        assert_eq!(temp_owner(".peerup-42-a.tmp"), Some(42));
        assert_eq!(temp_owner(".peerup-x-a.tmp"), None);
    }

    #[test]
    fn create_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        create_private_new(&p, b"one").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert!(create_private_new(&p, b"two").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        // The refused write left no temp file behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
