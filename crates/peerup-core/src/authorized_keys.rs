//! The `authorized_keys` file: the SSH-style list of peers allowed to connect.
//!
//! The file is kept as its original lines so that edits change only the line they touch: comments,
//! blank lines, unknown attributes and the exact text of other entries survive every rewrite.
//! Writes are atomic and mode 0600 (see [`crate::fsutil`]), and every read-modify-write holds
//! [`AuthorizedKeys::lock`] (or goes through [`AuthorizedKeys::update`]), so that concurrent writers
//! (the CLI, the daemon's API, group introductions) never undo each other's change. Unlike the Go
//! original, lines with attributes are valid, and `expires=` is enforced by
//! [`AuthorizedKeys::is_authorized`].

mod entry;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use libp2p::PeerId;

pub use entry::{ATTR_EXPIRES, ATTR_GROUP, ATTR_HMAC_PROOF, ATTR_VERIFIED, Entry, LineErrorKind};

use crate::fsutil::{self, FileLock, FsError};

/// The header written into a new file.
pub const HEADER: &str = "# authorized_keys - peers allowed to connect, one per line\n\
# Format: <peer-id> [key=value ...] [# comment]\n";

/// An invalid line and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: LineErrorKind,
}

/// Reading, checking or editing the file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizedKeysError {
    /// The peer is already in the file.
    #[error("peer already authorized: {0}")]
    Duplicate(PeerId),
    /// The peer is not in the file.
    #[error("peer not found: {0}")]
    NotFound(PeerId),
    /// The file has invalid lines and a strict load was asked for.
    #[error("{} has invalid lines: {}", path.display(), join(errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every invalid line.
        errors: Vec<LineError>,
    },
    /// An attribute value is malformed.
    #[error(transparent)]
    Attribute(#[from] LineErrorKind),
    /// Permission or I/O problem.
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn join(errors: &[LineError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[derive(Debug, Clone)]
enum Parsed {
    /// Blank or comment-only.
    Other,
    Entry(Entry),
    Invalid(LineErrorKind),
}

#[derive(Debug, Clone)]
struct Line {
    raw: String,
    parsed: Parsed,
}

/// An `authorized_keys` file in memory.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    lines: Vec<Line>,
}

impl AuthorizedKeys {
    /// Parses text. Never fails: invalid lines are kept and reported by [`Self::errors`].
    pub fn parse(text: &str) -> Self {
        let mut first_seen: HashMap<PeerId, usize> = HashMap::new();
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, raw)| {
                let parsed = match Entry::parse(raw) {
                    Ok(None) => Parsed::Other,
                    Ok(Some(e)) => match first_seen.get(&e.peer_id()) {
                        Some(&first_line) => Parsed::Invalid(LineErrorKind::Duplicate {
                            peer: e.peer_id(),
                            first_line,
                        }),
                        None => {
                            first_seen.insert(e.peer_id(), i + 1);
                            Parsed::Entry(e)
                        }
                    },
                    Err(kind) => Parsed::Invalid(kind),
                };
                // Trailing CRs go (a file saved with CRLF, or stray CRs): written back, a CR kept
                // at the end of a line would meet the `\n` and be read as a CRLF next time.
                Line { raw: raw.trim_end_matches('\r').to_string(), parsed }
            })
            .collect();
        Self { lines }
    }

    /// Loads a file; a missing file is an empty list. The file must be private (mode 0600).
    pub fn load(path: &Path) -> Result<Self, AuthorizedKeysError> {
        match fs::read_to_string(path) {
            Ok(text) => {
                fsutil::check_private(path)?;
                Ok(Self::parse(&text))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(FsError::Io { path: path.to_path_buf(), source: e }.into()),
        }
    }

    /// Loads a file and refuses it if any line is invalid: what the connection gate uses, so that a
    /// typo never silently drops or widens access.
    pub fn load_strict(path: &Path) -> Result<Self, AuthorizedKeysError> {
        let keys = Self::load(path)?;
        let errors = keys.errors();
        if errors.is_empty() {
            Ok(keys)
        } else {
            Err(AuthorizedKeysError::Invalid { path: path.to_path_buf(), errors })
        }
    }

    /// Every invalid line.
    pub fn errors(&self) -> Vec<LineError> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.parsed {
                Parsed::Invalid(kind) => Some(LineError { line: i + 1, kind: kind.clone() }),
                _ => None,
            })
            .collect()
    }

    /// The valid entries, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| match &l.parsed {
            Parsed::Entry(e) => Some(e),
            _ => None,
        })
    }

    /// The entry of a peer.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        self.entries().find(|e| e.peer_id() == *peer)
    }

    /// Whether a peer is listed and its authorization has not expired at `now`.
    pub fn is_authorized(&self, peer: &PeerId, now: Timestamp) -> bool {
        self.get(peer).is_some_and(|e| !e.is_expired(now))
    }

    /// Appends an entry; fails if the peer is already listed.
    pub fn add(&mut self, entry: Entry) -> Result<(), AuthorizedKeysError> {
        if self.get(&entry.peer_id()).is_some() {
            return Err(AuthorizedKeysError::Duplicate(entry.peer_id()));
        }
        self.lines.push(Line { raw: entry.to_string(), parsed: Parsed::Entry(entry) });
        Ok(())
    }

    /// Removes a peer's line.
    pub fn remove(&mut self, peer: &PeerId) -> Result<Entry, AuthorizedKeysError> {
        let idx = self.index_of(peer)?;
        match self.lines.remove(idx).parsed {
            Parsed::Entry(e) => Ok(e),
            _ => Err(AuthorizedKeysError::NotFound(*peer)),
        }
    }

    /// Sets an attribute on a peer's entry, rewriting only that line.
    pub fn set_attr(
        &mut self,
        peer: &PeerId,
        key: &str,
        value: &str,
    ) -> Result<(), AuthorizedKeysError> {
        let idx = self.index_of(peer)?;
        let line = &mut self.lines[idx];
        if let Parsed::Entry(e) = &mut line.parsed {
            e.set_attr(key, value)?;
            line.raw = e.to_string();
        }
        Ok(())
    }

    fn index_of(&self, peer: &PeerId) -> Result<usize, AuthorizedKeysError> {
        self.lines
            .iter()
            .position(|l| matches!(&l.parsed, Parsed::Entry(e) if e.peer_id() == *peer))
            .ok_or(AuthorizedKeysError::NotFound(*peer))
    }

    /// The file text: untouched lines exactly as read, one `\n` after each.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.raw);
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), AuthorizedKeysError> {
        Ok(fsutil::write_private_atomic(path, self.render().as_bytes())?)
    }

    /// The exclusive lock for a read-modify-write of the file at `path` (an flock on
    /// `authorized_keys.lock` next to it): take it before [`Self::load`] and hold it until after
    /// [`Self::save`]. Waits while another writer holds it; never take it twice in one thread.
    pub fn lock(path: &Path) -> Result<FileLock, AuthorizedKeysError> {
        Ok(fsutil::lock_exclusive(path)?)
    }

    /// Loads the file, applies `edit`, and saves the result, all under [`Self::lock`]. Nothing is
    /// written when `edit` fails. Returns what `edit` returned and the file as saved.
    pub fn update<T, E: From<AuthorizedKeysError>>(
        path: &Path,
        edit: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<(T, Self), E> {
        let _lock = Self::lock(path)?;
        let mut keys = Self::load(path)?;
        let out = edit(&mut keys)?;
        keys.save(path)?;
        Ok((out, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const A: &str = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";
    const B: &str = "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt";

    fn text() -> String {
        format!(
            "# my peers\n\n{A}    group=0a1b2c3d   custom=keep  #   laptop\n# trailing comment\n{B} expires=2000-01-01T00:00:00Z # old\n"
        )
    }

    #[test]
    fn stray_carriage_returns_are_dropped_so_a_save_is_stable() {
        // Found by fuzzing: "X\r\r" rendered as "X\r\r\n", which read back as "X\r" (one CR less
        // on every save).
        for text in [format!("{A}\r\r"), format!("{A}\r\n# c\r\r\n"), "\r".to_string()] {
            let keys = AuthorizedKeys::parse(&text);
            let once = keys.render();
            assert_eq!(AuthorizedKeys::parse(&once).render(), once, "{text:?}");
            assert!(!once.contains('\r'), "{once:?}");
        }
    }

    #[test]
    fn lines_with_attributes_are_valid() {
        let keys = AuthorizedKeys::parse(&text());
        assert!(keys.errors().is_empty(), "{:?}", keys.errors());
        assert_eq!(keys.entries().count(), 2);
        assert_eq!(keys.render(), text());
    }

    #[test]
    fn expiry_is_enforced() {
        let keys = AuthorizedKeys::parse(&text());
        let now = Timestamp::now();
        assert!(keys.is_authorized(&A.parse().unwrap(), now));
        assert!(!keys.is_authorized(&B.parse().unwrap(), now));
        assert!(keys.get(&B.parse().unwrap()).is_some());
    }

    #[test]
    fn edits_touch_only_their_line() {
        let mut keys = AuthorizedKeys::parse(&text());
        keys.set_attr(&B.parse().unwrap(), ATTR_VERIFIED, "sha256:63dcdd01").unwrap();
        let rendered = keys.render();
        assert!(rendered.contains(&format!("{A}    group=0a1b2c3d   custom=keep  #   laptop\n")));
        assert!(rendered.contains(&format!(
            "{B}  expires=2000-01-01T00:00:00Z  verified=sha256:63dcdd01  # old\n"
        )));
        keys.remove(&A.parse().unwrap()).unwrap();
        assert_eq!(
            keys.render(),
            format!(
                "# my peers\n\n# trailing comment\n{B}  expires=2000-01-01T00:00:00Z  verified=sha256:63dcdd01  # old\n"
            )
        );
        assert!(matches!(keys.remove(&A.parse().unwrap()), Err(AuthorizedKeysError::NotFound(_))));
        assert!(matches!(
            keys.set_attr(&B.parse().unwrap(), ATTR_EXPIRES, "soon"),
            Err(AuthorizedKeysError::Attribute(_))
        ));
    }

    #[test]
    fn add_rejects_duplicates() {
        let mut keys = AuthorizedKeys::parse(&text());
        let err = keys.add(Entry::new(A.parse().unwrap(), None)).unwrap_err();
        assert!(matches!(err, AuthorizedKeysError::Duplicate(_)));
        let mut empty = AuthorizedKeys::parse(HEADER);
        empty.add(Entry::new(A.parse().unwrap(), Some("home"))).unwrap();
        assert_eq!(empty.render(), format!("{HEADER}{A}  # home\n"));
    }

    #[test]
    fn invalid_and_duplicate_lines_are_reported_with_numbers() {
        let keys = AuthorizedKeys::parse(&format!("{A}\nbogus\n{A} # again\n"));
        let errs = keys.errors();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].line, 2);
        assert_eq!(errs[1].line, 3);
        assert!(errs[1].to_string().contains("first on line 1"), "{}", errs[1]);
        assert_eq!(keys.entries().count(), 1);
    }

    #[test]
    fn strict_load_refuses_invalid_files_and_save_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("authorized_keys");
        assert_eq!(AuthorizedKeys::load(&p).unwrap().entries().count(), 0);
        AuthorizedKeys::parse(&format!("{A}\ngarbage\n")).save(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let err = AuthorizedKeys::load_strict(&p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(AuthorizedKeys::load(&p).unwrap_err().to_string().contains("chmod 600"));
    }

    /// Threads that each add their own peer and add and remove a second one, all at once, leave
    /// exactly the peers they added: no writer writes back a file that lacks another's change.
    /// Without the lock, most runs lose several of the adds (or bring back a removed peer).
    #[test]
    fn concurrent_updates_lose_nothing() {
        const THREADS: usize = 12;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("authorized_keys");
        fsutil::write_private_atomic(&p, HEADER.as_bytes()).unwrap();
        let keep: Vec<PeerId> = (0..THREADS).map(|_| PeerId::random()).collect();
        let gone: Vec<PeerId> = (0..THREADS).map(|_| PeerId::random()).collect();
        let barrier = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for (k, g) in keep.iter().zip(&gone) {
                let (p, barrier) = (&p, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    AuthorizedKeys::update(p, |keys| keys.add(Entry::new(*g, Some("temporary"))))
                        .unwrap();
                    AuthorizedKeys::update(p, |keys| keys.add(Entry::new(*k, None))).unwrap();
                    AuthorizedKeys::update(p, |keys| keys.remove(g))
                        .unwrap_or_else(|e| panic!("another writer lost this peer: {e}"));
                });
            }
        });
        let keys = AuthorizedKeys::load_strict(&p).unwrap();
        let mut have: Vec<PeerId> = keys.entries().map(Entry::peer_id).collect();
        let mut want = keep.clone();
        have.sort();
        want.sort();
        assert_eq!(have, want, "{}", keys.render());
        assert!(keys.render().starts_with(HEADER));
    }

    #[test]
    fn a_failed_update_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("authorized_keys");
        fsutil::write_private_atomic(&p, text().as_bytes()).unwrap();
        let err = AuthorizedKeys::update(&p, |keys| keys.add(Entry::new(A.parse().unwrap(), None)))
            .unwrap_err();
        assert!(matches!(err, AuthorizedKeysError::Duplicate(_)));
        assert_eq!(fs::read_to_string(&p).unwrap(), text());
        assert!(fsutil::lock_path(&p).exists());
    }
}
