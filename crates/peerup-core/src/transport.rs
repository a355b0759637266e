//! The transports under the node: how bytes reach a peer, secured and multiplexed.
//!
//! - `tcp`: the swarm's TCP transport, with a hold on each socket (to reset a dead one).
//! - [`tls`]: libp2p's TLS 1.3 handshake with AES-GCM preferred: ciphers and certificates.
//! - [`mux`]: yamux with 256 KiB frames.
//! - `circuits`: the relay client's transport, shared so that others can dial circuits too.
//! - `upgrade`: what every swarm transport runs on a new connection: multistream-select, TLS
//!   or Noise, yamux; and the hook (`Handoffs`) through which a connection that names another
//!   protocol in place of a security protocol goes to whoever registered that protocol.
//! - `stack`: all of them together (TCP, QUIC, circuits, DNS), as one swarm transport.
//!
//! Nothing here knows what a handed-off connection is for: the tunnel layer above the node
//! registers its protocols (`crate::tunnel`) and takes the connections from there.

pub(crate) mod circuits;
pub(crate) mod counted;
pub mod mux;
mod stack;
pub(crate) mod tcp;
pub mod tls;
pub(crate) mod upgrade;

pub(crate) use stack::{Parts, stack};
pub(crate) use upgrade::{HandedOff, Handoffs, Via};

use futures::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A byte stream of any kind: a yamux stream, a TLS connection, a socket.
pub type BoxedIo = Box<dyn Io>;
