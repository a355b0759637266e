//! Relay legs: a relayed bulk connection as two plain TCP connections that the relay joins.
//!
//! A circuit (libp2p circuit relay v2) rides a yamux stream inside each end's TLS connection to
//! the relay, so every relayed byte is encrypted end to end, then again for each hop, and the
//! relay decrypts, demultiplexes, copies through 8 KiB buffers and re-encrypts it. The bulk path
//! needs none of that from the relay: its bytes are already TLS records between the two peers.
//! So a peerup relay also offers *legs*:
//!
//! 1. The dialing peer asks the relay, on a stream over its authenticated connection
//!    ([`OPEN`]), for a leg pair to the target peer. The relay checks that both may use it and
//!    that the target is connected, mints a random token for each side, and tells the target on
//!    a stream of its own ([`INCOMING`]): who is coming, and the target's token. The target
//!    takes such offers only from a relay it holds a reservation on, and only for a dialer it
//!    authorizes. Once the target agrees, the dialer gets its own token.
//! 2. Each peer opens a fresh TCP connection to the relay's TCP address, names [`SECURITY`] in
//!    multistream-select where a libp2p dial names `/tls/1.0.0`, and sends its token.
//! 3. The relay joins the dialer's connection to the target's and copies bytes between them
//!    until both directions end, within the same limits as a circuit (duration, bytes, how many
//!    at once in total and per peer). Connections that have not sent a token yet are bounded in
//!    total and per source address; a pair waiting for its legs counts against the dialer only,
//!    and against the target too once joined.
//! 4. Over the joined connection the two peers run the bulk path's handshake, exactly as on a
//!    circuit or a direct TCP connection ([`crate::tunnel::bulk`]): TLS 1.3 with libp2p certificates, so
//!    they are authenticated to each other by peer ID, and the relay sees only ciphertext.
//!
//! A relay that does not offer legs (an older peerup, Go peer-up, any libp2p relay) refuses
//! [`OPEN`] at negotiation; the bulk client then uses a circuit through it instead.

mod peer;
mod relay;
mod wire;

pub(crate) use peer::{open, spawn_answerer, tcp_addr};
pub(crate) use relay::{Legs, serve};

use std::time::Duration;

/// The stream protocol on which a peer asks a relay for a leg pair.
pub const OPEN: &str = crate::protocols::LEGS_OPEN;
/// The stream protocol on which a relay tells a peer that a leg pair awaits it.
pub const INCOMING: &str = crate::protocols::LEGS_INCOMING;
/// The security protocol name of a leg on a relay's TCP listener.
pub const SECURITY: &str = crate::protocols::LEGS_SECURITY;
/// Legs handed off by the relay's TCP listener, waiting to be taken.
pub(crate) const QUEUE: usize = 256;
/// A token unclaimed by both legs for this long is forgotten (and a leg that waited, closed).
pub const PAIRING_TIMEOUT: Duration = Duration::from_secs(5);

/// A leg pair could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegError {
    /// The relay or the peer answered with a refusal.
    #[error("relay leg refused: {0}")]
    Refused(&'static str),
    /// A malformed message.
    #[error("malformed relay leg message: {0}")]
    Malformed(&'static str),
    /// The relay could not be reached or the stream failed.
    #[error("relay leg: {0}")]
    Io(String),
}

impl From<std::io::Error> for LegError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}
