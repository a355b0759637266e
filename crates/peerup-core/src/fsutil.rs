//! Private files: atomic writes with mode 0600, and the check that refuses secrets others can read.
//!
//! Every file peerup writes that matters (config, identity key, authorized_keys) goes through
//! [`write_private_atomic`], so a crash or a full disk never leaves half a file behind: the new text
//! goes to a temporary file in the same folder, is flushed to disk, and only then renamed over the old.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
/// then fsync of the folder so the rename itself is durable.
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".peerup-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(PRIVATE_MODE))
        .tempfile_in(dir)
        .map_err(|e| FsError::io(path, e))?;
    tmp.write_all(contents).map_err(|e| FsError::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| FsError::io(path, e))?;
    tmp.persist(path).map_err(|e| FsError::io(path, e.error))?;
    // Durability of the rename; not every filesystem supports fsync on a directory, so a failure
    // here is not worth failing the write for.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `path` exclusively with mode 0600 and writes `contents`; fails if it already exists.
/// Used for new secrets, where overwriting an existing file would destroy an identity.
pub fn create_private_new(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
        .map_err(|e| FsError::io(path, e))?;
    f.write_all(contents).map_err(|e| FsError::io(path, e))?;
    f.sync_all().map_err(|e| FsError::io(path, e))?;
    Ok(())
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
    fn create_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        create_private_new(&p, b"one").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert!(create_private_new(&p, b"two").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
    }
}
