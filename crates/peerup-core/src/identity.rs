//! The node identity: an Ed25519 keypair stored exactly as Go peer-up stores it.
//!
//! The key file holds the raw bytes of libp2p's protobuf `PrivateKey` message
//! (`08 01` = key type Ed25519, `12 40` = 64 data bytes, then the 32-byte seed and 32-byte public
//! key): 68 bytes, no PEM, no base64, mode 0600. The peer ID is the identity multihash of the
//! protobuf-encoded public key, `12D3KooW…` in base58.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::fsutil::{self, FsError};

/// Length of an Ed25519 key in libp2p's protobuf encoding.
pub const ED25519_KEY_FILE_LEN: usize = 68;

/// A key file could not be read, created or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file does not exist.
    #[error("no identity key at {}; run 'peerup init' to create one", .0.display())]
    Missing(PathBuf),
    /// The key file has the wrong size.
    #[error(
        "key file {} is {len} bytes; expected {ED25519_KEY_FILE_LEN} (a protobuf-encoded Ed25519 key)",
        path.display()
    )]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The bytes are not a valid protobuf-encoded Ed25519 key.
    #[error("key file {} is not a valid libp2p Ed25519 key: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// Permission or I/O problem.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Decodes a key file's bytes.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Keypair, IdentityError> {
    if bytes.len() != ED25519_KEY_FILE_LEN {
        return Err(IdentityError::WrongLength { path: path.to_path_buf(), len: bytes.len() });
    }
    let key = Keypair::from_protobuf_encoding(bytes).map_err(|e| IdentityError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(IdentityError::Malformed {
            path: path.to_path_buf(),
            reason: "not an Ed25519 key".into(),
        });
    }
    Ok(key)
}

/// Loads an existing key, refusing it if group or others can access the file.
pub fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IdentityError::Missing(path.to_path_buf()));
        }
        Err(e) => return Err(FsError::Io { path: path.to_path_buf(), source: e }.into()),
    };
    fsutil::check_private(path)?;
    decode(path, &bytes)
}

/// Generates a new Ed25519 key and writes it to `path` (mode 0600). Fails if the file exists, so an
/// identity is never overwritten by accident.
pub fn generate(path: &Path) -> Result<Keypair, IdentityError> {
    let key = Keypair::generate_ed25519();
    let bytes = key.to_protobuf_encoding().map_err(|e| IdentityError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    fsutil::create_private_new(path, &bytes)?;
    Ok(key)
}

/// Loads the key at `path`, or creates one if there is none. Returns whether it was created.
pub fn load_or_generate(path: &Path) -> Result<(Keypair, bool), IdentityError> {
    match load(path) {
        Ok(k) => Ok((k, false)),
        Err(IdentityError::Missing(_)) => Ok((generate(path)?, true)),
        Err(e) => Err(e),
    }
}

/// The peer ID of a keypair.
pub fn peer_id(key: &Keypair) -> PeerId {
    key.public().to_peer_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // RFC 8032 §7.1, test 1: secret seed and its public key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The Go original's key file, built byte by byte from the protobuf definition:
    /// field 1 (Type, varint) = 1 (Ed25519); field 2 (Data, bytes) = seed ‖ public key.
    fn go_key_file() -> Vec<u8> {
        let mut b = vec![0x08, 0x01, 0x12, 0x40];
        b.extend(hex(SEED));
        b.extend(hex(PUBLIC));
        b
    }

    /// The peer ID from its definition: identity multihash (code 0x00, length) of the protobuf
    /// public key (`08 01 12 20` ‖ 32 bytes), in base58btc.
    fn expected_peer_id() -> String {
        let mut pk = vec![0x08, 0x01, 0x12, 0x20];
        pk.extend(hex(PUBLIC));
        let mut mh = vec![0x00, pk.len() as u8];
        mh.extend(pk);
        bs58::encode(mh).into_string()
    }

    #[test]
    fn go_format_key_loads_to_the_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let bytes = go_key_file();
        assert_eq!(bytes.len(), ED25519_KEY_FILE_LEN);
        fsutil::create_private_new(&path, &bytes).unwrap();
        let key = load(&path).unwrap();
        let id = peer_id(&key).to_string();
        assert_eq!(id, expected_peer_id());
        // Computed independently (Python, base58 by hand) from the same definition.
        assert_eq!(id, "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV");
        // And we write the same 68 bytes back.
        assert_eq!(key.to_protobuf_encoding().unwrap(), bytes);
    }

    #[test]
    fn generated_key_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let (key, created) = load_or_generate(&path).unwrap();
        assert!(created);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len() as usize, ED25519_KEY_FILE_LEN);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let (again, created) = load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(peer_id(&key), peer_id(&again));
        assert!(peer_id(&key).to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn bad_key_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        fsutil::create_private_new(&short, &go_key_file()[..67]).unwrap();
        let err = load(&short).unwrap_err().to_string();
        assert!(err.contains("67 bytes") && err.contains("expected 68"), "{err}");

        let garbage = dir.path().join("garbage.key");
        fsutil::create_private_new(&garbage, &[0xAB; 68]).unwrap();
        let err = load(&garbage).unwrap_err().to_string();
        assert!(err.contains("not a valid libp2p Ed25519 key"), "{err}");

        // A seed whose public half does not match is refused, not silently re-derived.
        let mut mismatched = go_key_file();
        mismatched[67] ^= 1;
        let bad = dir.path().join("mismatch.key");
        fsutil::create_private_new(&bad, &mismatched).unwrap();
        assert!(load(&bad).is_err());

        let open = dir.path().join("open.key");
        fsutil::create_private_new(&open, &go_key_file()).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&open).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        let missing = load(&dir.path().join("none")).unwrap_err().to_string();
        assert!(missing.contains("peerup init"), "{missing}");
    }
}
