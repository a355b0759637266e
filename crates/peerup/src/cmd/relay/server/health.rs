//! The relay's HTTP endpoint, as in Go: `/healthz` (`health.enabled`) and `/metrics`
//! (`telemetry.metrics.enabled`), one server for both. With both on it listens on
//! `health.listen_address`; with metrics only, on `telemetry.metrics.listen_address`.
//!
//! `/healthz` answers only loopback clients (others get 403 `forbidden`), with
//! `{"status":"ok","uptime_seconds":N,"connected_peers":N}`. `/metrics` reuses the daemon's
//! endpoint ([`crate::daemon::metrics`]) over the node's [`peerup_core::metrics::Metrics`]:
//! reservations, circuits, relay legs and denials, and rust-libp2p's own.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::Result;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use peerup_core::node::Node;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::relay_schema::RelayConfig;
use crate::daemon::metrics;

/// Where `/healthz` listens when `health.listen_address` is empty.
const DEFAULT_HEALTH_LISTEN: &str = "127.0.0.1:9090";
/// Where `/metrics` listens when `telemetry.metrics.listen_address` is empty.
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9091";

#[derive(Clone)]
struct Health {
    node: Node,
    started: Instant,
}

/// The `/healthz` body.
#[derive(Debug, Serialize, PartialEq)]
struct Healthz {
    status: &'static str,
    uptime_seconds: u64,
    connected_peers: usize,
}

/// Only loopback clients may ask (as in Go): the endpoint is for the machine's own monitoring.
fn allowed(source: IpAddr) -> bool {
    match source {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

async fn healthz(State(h): State<Health>, ConnectInfo(from): ConnectInfo<SocketAddr>) -> Response {
    if !allowed(from.ip()) {
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    let connected_peers = match h.node.connections().await {
        Ok(c) => c.into_iter().map(|(peer, _)| peer).collect::<HashSet<_>>().len(),
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("node not answering: {e}\n"))
                .into_response();
        }
    };
    let body =
        Healthz { status: "ok", uptime_seconds: h.started.elapsed().as_secs(), connected_peers };
    axum::Json(body).into_response()
}

/// Starts the endpoint if either part is enabled; returns its address.
pub(super) async fn serve(
    config: &RelayConfig,
    node: &Node,
    started: Instant,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<SocketAddr>> {
    let (health, telemetry) = (&config.health, &config.telemetry.metrics);
    let mut app = Router::new();
    if telemetry.enabled {
        let mut registry = prometheus_client::registry::Registry::default();
        node.metrics().register(&mut registry);
        app = app.merge(metrics::router(registry));
    }
    if health.enabled {
        let state = Health { node: node.clone(), started };
        app = app.merge(Router::new().route("/healthz", any(healthz)).with_state(state));
    }
    let (key, listen) = if health.enabled {
        ("health.listen_address", or_default(&health.listen_address, DEFAULT_HEALTH_LISTEN))
    } else if telemetry.enabled {
        (
            "telemetry.metrics.listen_address",
            or_default(&telemetry.listen_address, DEFAULT_METRICS_LISTEN),
        )
    } else {
        return Ok(None);
    };
    metrics::serve_router(key, listen, app, cancel, tracker).await.map(Some)
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_are_answered() {
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("192.168.1.2", false),
            ("203.0.113.7", false),
            ("2001:db8::1", false),
            ("::ffff:10.0.0.1", false),
            ("0.0.0.0", false),
        ] {
            assert_eq!(allowed(ip.parse().unwrap()), ok, "{ip}");
        }
    }
}
