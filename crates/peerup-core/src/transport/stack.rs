//! Every transport of a swarm, as one: QUIC v1, TCP ([`super::tcp`]) and relayed circuits
//! ([`super::circuits`]), each TCP or circuit connection secured by TLS (AES-GCM preferred) or
//! Noise and multiplexed by peerup's yamux, all behind DNS resolution. The node's swarm and the
//! doctor's probe swarm are built on it.

use futures::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::identity::Keypair;
use libp2p::{PeerId, Transport};

use super::circuits::{self, Circuits};
use super::tcp::{self, Sockets};
use super::{Handoffs, tls};

/// What the transports are built from, besides the key.
pub(crate) struct Parts {
    /// TLS for TCP connections and circuits.
    pub(crate) tls: tls::Config,
    /// Where the TCP sockets are registered.
    pub(crate) sockets: Sockets,
    /// The relay client's transport (its behaviour goes in the swarm).
    pub(crate) circuits: Circuits,
    /// Protocols whose inbound connections go elsewhere instead of the swarm.
    pub(crate) handoffs: Handoffs,
}

/// The transport could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StackError {
    /// Noise could not be set up.
    #[error("Noise: {0}")]
    Noise(#[from] libp2p::noise::Error),
    /// The system's DNS configuration could not be read.
    #[error("DNS: {0}")]
    Dns(#[from] std::io::Error),
}

/// QUIC, then TCP, then circuits (the order in which a dial tries them), behind DNS.
pub(crate) fn stack(
    key: &Keypair,
    parts: Parts,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, StackError> {
    let Parts { tls, sockets, circuits, handoffs } = parts;
    let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
    let tcp = tcp::transport(key, tls.clone(), sockets, handoffs.clone())?;
    let relayed = circuits::transport(key, tls, circuits, handoffs)?;
    let all = quic.or_transport(tcp).or_transport(relayed).map(|out, _| match out {
        Either::Left(Either::Left(c) | Either::Right(c)) | Either::Right(c) => c,
    });
    Ok(libp2p::dns::tokio::Transport::system(all)?.boxed())
}
