//! The messages of the leg protocols.
//!
//! - A *hello* names a peer: `version (1) | id length | id bytes`, then, from the relay to the
//!   target, the 16-byte token. The dialer's hello names the target; the relay's names the dialer.
//! - An *answer* is one status byte; the relay's OK to the dialer is followed by the token.
//! - On a leg, the token alone.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;

use super::LegError;

/// Length of a pairing token.
pub(crate) const TOKEN_LEN: usize = 16;
/// A pairing token.
pub(crate) type Token = [u8; TOKEN_LEN];
const VERSION: u8 = 1;
/// Longer peer IDs than this are refused (an Ed25519 one is 38 bytes; RSA keys are hashed).
const MAX_ID: usize = 64;

/// A fresh random token.
pub(crate) fn token() -> Result<Token, LegError> {
    let mut t = [0u8; TOKEN_LEN];
    getrandom::fill(&mut t).map_err(|e| LegError::Io(format!("no randomness: {e}")))?;
    Ok(t)
}

/// How a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    Ok = 0,
    /// One of the peers may not use the relay, or the target will not take the dialer.
    Refused = 1,
    /// The relay's limits are reached.
    Busy = 2,
    /// The target is not connected to the relay (or not over TCP).
    Unreachable = 3,
}

impl Status {
    fn from_byte(b: u8) -> Result<Self, LegError> {
        Ok(match b {
            0 => Self::Ok,
            1 => Self::Refused,
            2 => Self::Busy,
            3 => Self::Unreachable,
            _ => return Err(LegError::Malformed("unknown status")),
        })
    }

    /// The error the dialer reports for a refusal.
    pub(crate) fn error(self) -> LegError {
        LegError::Refused(match self {
            Self::Ok => "no",
            Self::Refused => "not allowed",
            Self::Busy => "the relay is at its limit",
            Self::Unreachable => "the peer is not connected to the relay over TCP",
        })
    }
}

/// Encodes a hello naming `peer`, with `token` if given.
pub(crate) fn encode_hello(peer: &PeerId, token: Option<&Token>) -> Vec<u8> {
    let id = peer.to_bytes();
    let mut out = Vec::with_capacity(2 + id.len() + TOKEN_LEN);
    out.push(VERSION);
    // Peer IDs are at most a few dozen bytes; `decode_hello` refuses anything longer.
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&id);
    out.extend_from_slice(token.map_or(&[][..], |t| &t[..]));
    out
}

/// Reads a hello; with `with_token`, the token that follows it.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(
    r: &mut R,
    with_token: bool,
) -> Result<(PeerId, Option<Token>), LegError> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await.map_err(|_| LegError::Malformed("truncated hello"))?;
    if head[0] != VERSION {
        return Err(LegError::Malformed("unknown hello version"));
    }
    let len = usize::from(head[1]);
    if len > MAX_ID {
        return Err(LegError::Malformed("peer ID too long"));
    }
    let mut rest = vec![0u8; len + if with_token { TOKEN_LEN } else { 0 }];
    r.read_exact(&mut rest).await.map_err(|_| LegError::Malformed("truncated hello"))?;
    let peer =
        PeerId::from_bytes(&rest[..len]).map_err(|_| LegError::Malformed("invalid peer ID"))?;
    let token = with_token.then(|| {
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&rest[len..]);
        t
    });
    Ok((peer, token))
}

/// Writes an answer (with the token after an OK, if given) and flushes it.
pub(crate) async fn write_answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: Status,
    token: Option<&Token>,
) -> Result<(), LegError> {
    let mut out = vec![status as u8];
    if status == Status::Ok {
        out.extend_from_slice(token.map_or(&[][..], |t| &t[..]));
    }
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

/// Reads an answer; an OK is followed by a token when `with_token`.
pub(crate) async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
    with_token: bool,
) -> Result<Option<Token>, LegError> {
    let mut status = [0u8; 1];
    r.read_exact(&mut status).await.map_err(|_| LegError::Malformed("no answer"))?;
    match Status::from_byte(status[0])? {
        Status::Ok if with_token => {
            let mut t = [0u8; TOKEN_LEN];
            r.read_exact(&mut t).await.map_err(|_| LegError::Malformed("truncated token"))?;
            Ok(Some(t))
        }
        Status::Ok => Ok(None),
        refused => Err(refused.error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block<T>(f: impl Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn hello_round_trips_with_and_without_token() {
        let peer = PeerId::random();
        let t = token().unwrap();
        let bytes = encode_hello(&peer, Some(&t));
        assert_eq!(block(read_hello(&mut &bytes[..], true)).unwrap(), (peer, Some(t)));
        let bytes = encode_hello(&peer, None);
        assert_eq!(block(read_hello(&mut &bytes[..], false)).unwrap(), (peer, None));
    }

    #[test]
    fn malformed_hellos_are_errors() {
        let peer = PeerId::random();
        let good = encode_hello(&peer, None);
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        let mut too_long = good.clone();
        too_long[1] = 200;
        let mut bad_id = good.clone();
        bad_id[2] ^= 0xff;
        for (bytes, what) in [
            (&[][..], "truncated hello"),
            (&good[..good.len() - 1], "truncated hello"),
            (&bad_version[..], "unknown hello version"),
            (&too_long[..], "peer ID too long"),
            (&bad_id[..], "invalid peer ID"),
        ] {
            match block(read_hello(&mut &bytes[..], false)) {
                Err(LegError::Malformed(m)) => assert_eq!(m, what),
                other => panic!("{what}: {other:?}"),
            }
        }
        // A hello that should carry a token but stops short of it.
        assert!(block(read_hello(&mut &good[..], true)).is_err());
    }

    #[test]
    fn answers_round_trip_and_refusals_are_errors() {
        let t = token().unwrap();
        let mut buf = Vec::new();
        block(write_answer(&mut buf, Status::Ok, Some(&t))).unwrap();
        assert_eq!(block(read_answer(&mut &buf[..], true)).unwrap(), Some(t));
        let mut buf = Vec::new();
        block(write_answer(&mut buf, Status::Ok, None)).unwrap();
        assert_eq!(block(read_answer(&mut &buf[..], false)).unwrap(), None);
        for s in [Status::Refused, Status::Busy, Status::Unreachable] {
            let mut buf = Vec::new();
            block(write_answer(&mut buf, s, Some(&t))).unwrap();
            assert_eq!(buf, [s as u8], "no token after a refusal");
            assert!(matches!(block(read_answer(&mut &buf[..], true)), Err(LegError::Refused(_))));
        }
        assert!(matches!(block(read_answer(&mut &[7u8][..], false)), Err(LegError::Malformed(_))));
        assert!(matches!(
            block(read_answer(&mut &[0u8, 1][..], true)),
            Err(LegError::Malformed(_))
        ));
        assert_ne!(token().unwrap(), token().unwrap());
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_error_or_exactly_what_they_encode(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            with_token: bool,
        ) {
            let mut r = &bytes[..];
            if let Ok((peer, token)) = block(read_hello(&mut r, with_token)) {
                let used = bytes.len() - r.len();
                prop_assert_eq!(encode_hello(&peer, token.as_ref()), &bytes[..used]);
            }
        }

        #[test]
        fn a_hello_decodes_whatever_follows_it(
            token in any::<[u8; TOKEN_LEN]>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let peer = PeerId::random();
            let mut bytes = encode_hello(&peer, Some(&token));
            bytes.extend_from_slice(&tail);
            let mut r = &bytes[..];
            prop_assert_eq!(block(read_hello(&mut r, true)).unwrap(), (peer, Some(token)));
            prop_assert_eq!(r, &tail[..]);
        }
    }
}
