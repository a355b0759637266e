//! Diagnostics: a traceroute over the path a connection actually takes (direct, or through a relay).

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use crate::node::{Node, NodeError};
use crate::streams::OpenStreamError;
use crate::{pingpong, relay_addr};

/// One hop of a trace.
#[derive(Debug, Clone)]
pub struct Hop {
    /// 1 for the relay (when relayed), then the target.
    pub hop: u32,
    /// The hop's peer.
    pub peer: PeerId,
    /// The address it is reached at.
    pub address: String,
    /// Its round trip, or why it could not be measured.
    pub rtt: Result<Duration, String>,
}

/// The hops to a peer.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Whether the path goes through a relay.
    pub relayed: bool,
    /// The hops, nearest first.
    pub hops: Vec<Hop>,
}

/// Round trip of one protocol negotiation: a stream for a protocol nobody speaks is refused after
/// exactly one exchange.
pub async fn probe_rtt(node: &Node, peer: PeerId) -> Result<Duration, String> {
    let start = Instant::now();
    match node.open_stream(peer, StreamProtocol::new(crate::protocols::RTT_PROBE)).await {
        Ok(_) | Err(NodeError::OpenStream(OpenStreamError::Unsupported(_))) => Ok(start.elapsed()),
        Err(e) => Err(e.to_string()),
    }
}

/// Connects to `peer` with a ping (its RTT is the last hop's), then measures the relay's RTT when
/// the path is relayed.
pub async fn traceroute(node: &Node, peer: PeerId, ping: StreamProtocol) -> Trace {
    let (rtt, path) = match pingpong::ping(node, peer, ping).await {
        Ok((rtt, path)) => (Ok(rtt), Some(path)),
        Err(e) => (Err(e.to_string()), None),
    };
    let relayed = path.as_ref().is_some_and(|p| p.relayed);
    let mut hops = Vec::new();
    if let Some(p) = path.as_ref().filter(|p| p.relayed) {
        // The circuit address is <relay address>/p2p/<relay>/p2p-circuit/p2p/<target>.
        let relay_part: Multiaddr =
            p.remote_addr.iter().take_while(|x| !matches!(x, Protocol::P2pCircuit)).collect();
        if let Some(relay) = relay_addr::peer_id_of(&relay_part) {
            let rtt = probe_rtt(node, relay).await;
            hops.push(Hop { hop: 1, peer: relay, address: relay_part.to_string(), rtt });
        }
    }
    let address = path.map(|p| p.remote_addr.to_string()).unwrap_or_default();
    hops.push(Hop { hop: hops.len() as u32 + 1, peer, address, rtt });
    Trace { relayed, hops }
}
