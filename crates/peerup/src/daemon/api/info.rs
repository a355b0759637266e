//! The read-only views of the running node: `GET /v1/status`, `/v1/peers` and `/v1/paths`.

use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use peerup_core::netinfo::{self, Findings, NatMapping};
use peerup_core::node::{NodeError, PeerState};
use peerup_core::protocols::AGENT_PREFIX;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, data};

/// The agent prefix relay servers announce.
const RELAY_AGENT_PREFIX: &str = "relay-server/";

fn unavailable(e: NodeError) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The address each peer observed for our QUIC socket (one per peer). QUIC dials from its
/// listening socket, so these compare like with like; TCP observations name throwaway ports.
fn quic_observations(peers: &[PeerState]) -> Vec<SocketAddr> {
    peers
        .iter()
        .filter_map(|p| {
            p.connections
                .iter()
                .filter_map(|c| c.observed.as_ref())
                .filter(|o| o.iter().any(|x| matches!(x, peerup_core::multiaddr::Protocol::QuicV1)))
                .find_map(netinfo::socket_of)
        })
        .collect()
}

pub(super) async fn status(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let listen = s.node.listen_addrs().await.map_err(unavailable)?;
    let external = s.node.external_addrs().await.map_err(unavailable)?;
    let peers = s.node.peers().await.map_err(unavailable)?;
    let (relay, local): (Vec<_>, Vec<_>) =
        listen.iter().map(ToString::to_string).partition(|a| a.contains("/p2p-circuit"));
    let addresses = netinfo::local_addresses();
    let observed = quic_observations(&peers);
    let mapping = netinfo::classify_mapping(&addresses, &observed);
    let findings = Findings {
        mapping: (mapping != NatMapping::Unknown).then_some(mapping),
        has_external: !external.is_empty() || !observed.is_empty(),
        addresses,
        ..Findings::default()
    };
    let grade = findings.grade();
    Ok(data(json!({
        "peer_id": s.node.peer_id().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "connected_peers": peers.len(),
        "listen_addresses": local,
        "relay_addresses": relay,
        "external_addresses": external.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "services_count": s.view.services().iter().filter(|x| x.enabled).count(),
        "has_global_ipv4": findings.has_global_v4(),
        "has_global_ipv6": findings.has_global_v6(),
        "nat_type": mapping.as_str(),
        "is_relaying": s.node.is_relaying(),
        "reachability": {
            "grade": grade.grade.to_string(),
            "label": grade.label,
            "description": grade.description,
        },
    })))
}

#[derive(Deserialize)]
pub(super) struct PeersQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn peers(
    State(s): State<ApiState>,
    q: Result<Query<PeersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text())))?;
    let peers = s.node.peers().await.map_err(unavailable)?;
    let ours = |agent: &Option<String>| {
        agent
            .as_deref()
            .is_some_and(|a| a.starts_with(AGENT_PREFIX) || a.starts_with(RELAY_AGENT_PREFIX))
    };
    let list: Vec<Value> = peers
        .iter()
        .filter(|p| q.all || ours(&p.agent))
        .map(|p| {
            let addrs: Vec<String> =
                p.connections.iter().map(|c| c.path.remote_addr.to_string()).collect();
            let mut v = json!({ "id": p.peer.to_string(), "addresses": addrs });
            if let Some(agent) = &p.agent {
                v["agent_version"] = json!(agent);
            }
            v
        })
        .collect();
    Ok(data(list))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

pub(super) async fn paths(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let peers = s.node.peers().await.map_err(unavailable)?;
    let mut list = Vec::new();
    for p in &peers {
        for c in &p.connections {
            let a = c.path.remote_addr.to_string();
            let transport = if c.path.is_quic() {
                "quic"
            } else if a.contains("/tcp/") {
                "tcp"
            } else {
                "unknown"
            };
            let ip_version = if a.starts_with("/ip6/") {
                "ipv6"
            } else if a.starts_with("/ip4/") {
                "ipv4"
            } else {
                "unknown"
            };
            let mut v = json!({
                "peer_id": p.peer.to_string(),
                "path_type": c.path.kind(),
                "address": a,
                "connected_at": rfc3339(c.since),
                "transport": transport,
                "ip_version": ip_version,
            });
            if let Some(rtt) = p.last_rtt {
                v["last_rtt_ms"] = json!(rtt.as_secs_f64() * 1000.0);
            }
            list.push(v);
        }
    }
    Ok(data(list))
}
