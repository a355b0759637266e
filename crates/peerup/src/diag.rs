//! Diagnostics' results in the one JSON shape that both `peerup traceroute` (`cmd/ping.rs`) and
//! the daemon's `POST /v1/traceroute` (`daemon/api.rs`) answer with.

use std::time::Duration;

use peerup_core::PeerId;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A trace as JSON, the same shape from the CLI and the daemon API.
pub fn trace_json(
    target: &str,
    peer: PeerId,
    trace: &peerup_core::diag::Trace,
) -> serde_json::Value {
    let hops: Vec<serde_json::Value> = trace
        .hops
        .iter()
        .map(|h| {
            serde_json::json!({
                "hop": h.hop,
                "peer_id": h.peer.to_string(),
                "address": h.address,
                "rtt_ms": h.rtt.as_ref().ok().map(|d| ms(*d)),
                "error": h.rtt.as_ref().err(),
            })
        })
        .collect();
    serde_json::json!({
        "target": target,
        "target_id": peer.to_string(),
        "path": if trace.relayed { "RELAYED" } else { "DIRECT" },
        "hops": hops,
    })
}
