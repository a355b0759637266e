//! Private files: atomic writes with mode 0600, the check that refuses secrets others can read, the
//! lock around read-modify-writes, and Unix sockets that are owner-only from their first instant.
//!
//! Every file peerup writes that matters (config, identity key, authorized_keys) goes through
//! [`write_private_atomic`], so a crash or a full disk never leaves half a file behind: the new text
//! goes to a temporary file in the same folder, is flushed to disk, and only then renamed over the old.
//! A write that depends on what was read (add a peer, add a name) holds [`lock_exclusive`] from the
//! read to the rename, so that two writers never lose each other's change.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
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
    /// Group or other users may enter or change a folder that must be private.
    #[error(
        "{} is open to other users (mode {mode:04o}, expected 0700); fix with: chmod 700 {}",
        path.display(),
        path.display()
    )]
    InsecureDir {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A folder that must be private belongs to another user.
    #[error(
        "{} belongs to uid {owner}, not to this user (uid {me}); use a folder of your own",
        path.display()
    )]
    NotOwned {
        /// The folder.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective user ID of this process.
        me: u32,
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

/// Refuses a folder that is not private to this process's user: it must belong to the effective user
/// and give group and other users no permission at all (`mode & 0o077 == 0`, as 0700). Files whose
/// safety rests on their folder (the daemon's API socket) live only in such folders.
pub fn check_private_dir(dir: &Path) -> Result<(), FsError> {
    let meta = fs::metadata(dir).map_err(|e| FsError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(FsError::io(dir, io::Error::other("not a folder")));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(FsError::NotOwned { path: dir.to_path_buf(), owner: meta.uid(), me });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FsError::InsecureDir { path: dir.to_path_buf(), mode });
    }
    Ok(())
}

/// Binds a Unix socket at `path` that no other user can ever connect to, and fails if `path`
/// exists.
///
/// `bind` creates the socket file with the process's umask (often 0755, which lets anyone
/// connect), so binding in place and then calling `chmod` leaves a window in which another user
/// can connect. Changing the umask instead is process-wide and would race with other threads that
/// create files. So the socket is bound in a fresh folder of mode 0700 next to `path`, set to 0600
/// there, where nobody else can reach it, and only then hard-linked into place: the name appears
/// with mode 0600 or not at all. The link fails if `path` exists, so two processes binding at the
/// same time cannot replace each other's socket.
pub fn bind_private_socket(path: &Path) -> Result<UnixListener, FsError> {
    let dir = parent_dir(path);
    // A short name: a socket path may not exceed about 100 bytes.
    let private = tempfile::Builder::new()
        .prefix(".s-")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .map_err(|e| FsError::io(path, e))?;
    let inner = private.path().join("s");
    let listener = UnixListener::bind(&inner).map_err(|e| FsError::io(path, e))?;
    fs::set_permissions(&inner, fs::Permissions::from_mode(PRIVATE_MODE))
        .map_err(|e| FsError::io(path, e))?;
    fs::hard_link(&inner, path).map_err(|e| FsError::io(path, e))?;
    // The folder and the inner name go when `private` drops; the socket stays bound under `path`.
    let _ = fs::remove_file(&inner);
    Ok(listener)
}

/// An exclusive lock on a file's lock file, released when dropped (or when the process dies).
#[derive(Debug)]
#[must_use = "the lock is released when this is dropped"]
pub struct FileLock {
    _file: fs::File,
}

/// The lock file of `path`: `<path>.lock` in the same folder (`authorized_keys.lock`).
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes an exclusive `flock` on [`lock_path`]`(path)` (created with mode 0600 if missing), waiting
/// while another process or thread holds it.
///
/// Every read-modify-write of a file that several writers share (authorized_keys and the config:
/// the CLI, the daemon's API, group introductions) holds it from the read to the rename, so that
/// one writer never writes back a version that lacks another's change. The lock is on a sibling
/// file because the atomic rename replaces the file itself with a new inode. Readers need not take
/// it (they see a whole file either way), and nothing stops an editor that does not know it. The
/// lock file is left in place: removing it would let two writers lock two different files.
pub fn lock_exclusive(path: &Path) -> Result<FileLock, FsError> {
    let lock = lock_path(path);
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_MODE)
        .open(&lock)
        .map_err(|e| FsError::io(&lock, e))?;
    file.lock().map_err(|e| FsError::io(&lock, e))?;
    Ok(FileLock { _file: file })
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

    #[test]
    fn a_private_dir_is_owned_and_closed_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("conf");
        create_private_dir(&d).unwrap();
        check_private_dir(&d).unwrap();
        for open in [0o755, 0o750, 0o701] {
            fs::set_permissions(&d, fs::Permissions::from_mode(open)).unwrap();
            let err = check_private_dir(&d).unwrap_err().to_string();
            assert!(err.contains(&format!("{open:04o}")) && err.contains("chmod 700"), "{err}");
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        // A folder of another user: "/" unless we are root, else one given away.
        let foreign = if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            d.clone()
        } else {
            PathBuf::from("/")
        };
        let err = check_private_dir(&foreign).unwrap_err();
        assert!(matches!(err, FsError::NotOwned { .. }), "{err}");
        assert!(err.to_string().contains("use a folder of your own"), "{err}");
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        assert!(check_private_dir(&file).is_err());
    }

    #[test]
    fn a_private_socket_answers_and_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api.sock");
        let listener = bind_private_socket(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        // Only the socket is left: the private folder it was bound in is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let _client = std::os::unix::net::UnixStream::connect(&p).unwrap();
        listener.accept().unwrap();
        let err = bind_private_socket(&p).unwrap_err();
        assert!(
            matches!(&err, FsError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A watcher that stats the socket's path as fast as it can, while the socket is bound and
    /// removed over and over, never sees it with any mode but 0600. Binding in place and then
    /// calling chmod (with the usual umask 022) shows the watcher 0755 hundreds of times.
    #[test]
    fn a_private_socket_is_never_seen_with_another_mode() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        const ROUNDS: usize = 1000;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api.sock");
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut seen, mut bad, mut other) = (0u64, 0u64, Vec::new());
                while !done.load(Ordering::Relaxed) {
                    if let Ok(m) = fs::symlink_metadata(&p) {
                        seen += 1;
                        let mode = m.permissions().mode() & 0o777;
                        if mode != 0o600 {
                            bad += 1;
                            if other.len() < 5 {
                                other.push(format!("{mode:04o}"));
                            }
                        }
                    }
                }
                (seen, bad, other)
            })
        };
        for _ in 0..ROUNDS {
            let l = bind_private_socket(&p).unwrap();
            fs::remove_file(&p).unwrap();
            drop(l);
        }
        done.store(true, Ordering::Relaxed);
        let (seen, bad, other) = watcher.join().unwrap();
        assert_eq!(bad, 0, "{bad} of {seen} looks saw the socket with another mode: {other:?}");
        assert!(seen > 0, "the watcher never saw the socket; the test proves nothing");
    }

    /// Threads that each add to a shared counter file with a read-modify-write under the lock lose
    /// no increment. Without the lock, writers overwrite each other's increments.
    #[test]
    fn read_modify_writes_under_the_lock_lose_nothing() {
        const THREADS: usize = 8;
        const EACH: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("counter");
        write_private_atomic(&p, b"0").unwrap();
        let barrier = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..EACH {
                        let _lock = lock_exclusive(&p).unwrap();
                        let n: usize = fs::read_to_string(&p).unwrap().parse().unwrap();
                        write_private_atomic(&p, (n + 1).to_string().as_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(fs::read_to_string(&p).unwrap(), (THREADS * EACH).to_string());
        assert_eq!(lock_path(&p), dir.path().join("counter.lock"));
        assert_eq!(mode(&lock_path(&p)), 0o600);
    }
}
