//! The optional Prometheus endpoint (`telemetry.metrics`): the node's metrics and the API's own,
//! served as `GET /metrics` on a TCP address (loopback by default).

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `method`, route `path` (the template, e.g. `/v1/auth/{peer_id}`) and `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    method: String,
    path: String,
    status: u16,
}

/// API requests by route and status.
pub type ApiRequests = Family<ApiLabels, Counter>;

/// Counts each request under its route template.
pub async fn count_requests(
    State(counter): State<ApiRequests>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path =
        req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let resp = next.run(req).await;
    counter.get_or_create(&ApiLabels { method, path, status: resp.status().as_u16() }).inc();
    resp
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /metrics` of `registry`, to serve alone or beside other routes (the relay's `/healthz`).
pub fn router(registry: Registry) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(Arc::new(registry))
}

/// Binds `listen` (named `key` in the config, for the error) and serves `app` until `cancel`
/// fires, with each request's source address available (`ConnectInfo`). Returns the bound address.
pub async fn serve_router(
    key: &str,
    listen: &str,
    app: Router,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("{key}: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
    tracker.spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(addr)
}

/// Binds `listen` and serves `/metrics` until `cancel` fires. Returns the bound address.
pub async fn serve(
    listen: &str,
    registry: Registry,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<std::net::SocketAddr> {
    serve_router("telemetry.metrics.listen_address", listen, router(registry), cancel, tracker)
        .await
}
