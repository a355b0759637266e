//! The daemon API's routes. Every request needs `Authorization: Bearer <cookie>` (compared in
//! constant time); answers are `{"data": …}` on success and `{"error": "…"}` otherwise. Bad input
//! is a 4xx, never a 500; empty lists are `[]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use peerup_core::authorized_keys::{AuthorizedKeys, AuthorizedKeysError, Entry};
use peerup_core::gate::AccessList;
use peerup_core::node::Node;
use peerup_core::tunnel::Tunnel;
use peerup_core::{PeerId, StreamProtocol, pingpong};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

mod info;
mod runtime;
pub(crate) mod text;

use info::{paths, peers, status};
pub use runtime::Runtime;
use runtime::{connect, disconnect, expose, unexpose};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Most pings one request may ask for.
const MAX_PINGS: u32 = 100;

/// A service as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceInfo {
    /// Its name.
    pub name: String,
    /// Its stream protocol.
    pub protocol: String,
    /// Where it forwards to.
    pub local_address: String,
    /// Whether it is exposed.
    pub enabled: bool,
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The node.
    pub node: Node,
    /// The tunnel over it: services, proxies, revocations.
    pub tunnel: Tunnel,
    /// The live access list (reloaded on auth changes).
    pub access: AccessList,
    /// Whether connection gating is on.
    pub gating: bool,
    /// The config's services, names and authorized_keys file, as last applied.
    pub view: crate::daemon::live::View,
    /// Applies config changes (`POST /v1/config/reload`).
    pub live: Arc<crate::daemon::live::Live>,
    /// The ping-pong protocol.
    pub ping_protocol: StreamProtocol,
    /// When the daemon started.
    pub started: Instant,
    /// Cancelled by `POST /v1/shutdown`.
    pub cancel: CancellationToken,
    /// The bearer cookie.
    pub token: Arc<String>,
    /// Where the API's own tasks are tracked.
    pub tracker: tokio_util::task::TaskTracker,
    /// API requests by route and status.
    pub requests: crate::daemon::metrics::ApiRequests,
    /// Proxies and exposures made through the API (not persisted).
    pub runtime: Arc<std::sync::Mutex<Runtime>>,
}

/// An API failure: a status and a one-line message.
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl ApiError {
    pub(super) fn bad(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(super) fn data(v: impl Serialize) -> Response {
    Json(json!({ "data": v })).into_response()
}

/// Parses a JSON body into `T`, with a 400 naming what is wrong.
pub(super) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

fn parse_peer(s: &str) -> Result<PeerId, ApiError> {
    s.trim().parse().map_err(|e| ApiError::bad(format!("invalid peer ID {s:?}: {e}")))
}

/// The router with the cookie check and the body cap.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/services", get(services))
        .route("/v1/paths", get(paths))
        .route("/v1/peers", get(peers))
        .route("/v1/auth", get(auth_list).post(auth_add))
        .route("/v1/auth/{peer_id}", delete(auth_remove))
        .route("/v1/resolve", post(resolve))
        .route("/v1/ping", post(ping))
        .route("/v1/traceroute", post(traceroute))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/config/reload", post(config_reload))
        .route("/v1/connect", post(connect))
        .route("/v1/connect/{id}", delete(disconnect))
        .route("/v1/expose", post(expose))
        .route("/v1/expose/{name}", delete(unexpose))
        .route_layer(middleware::from_fn_with_state(
            state.requests.clone(),
            crate::daemon::metrics::count_requests,
        ))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(text::negotiate))
        .layer(middleware::from_fn_with_state(state.clone(), require_cookie))
        .with_state(state)
}

async fn require_cookie(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.as_bytes().ct_eq(s.token.as_bytes()).into() {
        next.run(req).await
    } else {
        ApiError(StatusCode::UNAUTHORIZED, "unauthorized: invalid or missing auth token".into())
            .into_response()
    }
}

async fn services(State(s): State<ApiState>) -> Response {
    let mut list: Vec<ServiceInfo> = s.view.services();
    list.extend(s.runtime().exposed.values().map(|(_, info)| info.clone()));
    data(list)
}

fn load_keys(s: &ApiState) -> Result<AuthorizedKeys, ApiError> {
    AuthorizedKeys::load(&s.view.keys_path())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn auth_list(State(s): State<ApiState>) -> Result<Response, ApiError> {
    if !s.gating {
        return Ok(data(Vec::<Value>::new()));
    }
    let keys = load_keys(&s)?;
    let list: Vec<Value> = keys
        .entries()
        .map(|e| {
            json!({
                "peer_id": e.peer_id().to_string(),
                "comment": e.comment(),
                "verified": e.verified(),
                "expires_at": e.expires().map(|t| t.to_string()),
                "group": e.group(),
            })
        })
        .collect();
    Ok(data(list))
}

#[derive(Deserialize)]
struct AuthAdd {
    peer_id: String,
    comment: Option<String>,
}

fn gating_on(s: &ApiState) -> Result<(), ApiError> {
    if s.gating { Ok(()) } else { Err(ApiError::bad("connection gating is not enabled")) }
}

/// Edits authorized_keys: load, `edit`, save and swap the access list, all under the file's lock,
/// so that no other writer (the CLI, a group introduction, another request) can slip a stale copy
/// in between, and the access list is replaced in the order the file was written. Synchronous: the
/// lock is never held across an await.
fn edit_keys(
    s: &ApiState,
    edit: impl FnOnce(&mut AuthorizedKeys) -> Result<(), AuthorizedKeysError>,
) -> Result<(), ApiError> {
    let path = s.view.keys_path();
    let status = |e: AuthorizedKeysError| match e {
        AuthorizedKeysError::Duplicate(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
        AuthorizedKeysError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
        other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    };
    let _lock = AuthorizedKeys::lock(&path).map_err(status)?;
    let mut keys = load_keys(s)?;
    edit(&mut keys).map_err(status)?;
    keys.save(&path).map_err(status)?;
    s.access.replace(&keys);
    Ok(())
}

async fn auth_add(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    gating_on(&s)?;
    let req: AuthAdd = body(&bytes)?;
    let peer = parse_peer(&req.peer_id)?;
    edit_keys(&s, |keys| keys.add(Entry::new(peer, req.comment.as_deref())))?;
    tracing::info!(target: "audit", %peer, "auth_change: added");
    Ok(data(json!({ "status": "added" })))
}

async fn auth_remove(
    State(s): State<ApiState>,
    Path(peer_id): Path<String>,
) -> Result<Response, ApiError> {
    gating_on(&s)?;
    let peer = parse_peer(&peer_id)?;
    edit_keys(&s, |keys| keys.remove(&peer).map(drop))?;
    // Revoking access also ends what the peer has open.
    let _ = s.tunnel.disconnect(peer).await;
    tracing::info!(target: "audit", %peer, "auth_change: removed");
    Ok(data(json!({ "status": "removed" })))
}

/// A peer ID, or a name in `names:` (a peer ID is never looked up as a name, as in `resolve_peer`).
pub(super) fn resolve_name(s: &ApiState, name: &str) -> Result<(PeerId, &'static str), ApiError> {
    if let Ok(p) = name.parse() {
        return Ok((p, "peer_id"));
    }
    match s.view.names().get(name) {
        Some(id) => Ok((parse_peer(id)?, "local_config")),
        None => {
            Err(ApiError(StatusCode::NOT_FOUND, format!("cannot resolve {name:?}: name not found")))
        }
    }
}

#[derive(Deserialize)]
struct ResolveReq {
    name: String,
}

async fn resolve(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: ResolveReq = body(&bytes)?;
    let (peer, source) = resolve_name(&s, &req.name)?;
    Ok(data(json!({ "name": req.name, "peer_id": peer.to_string(), "source": source })))
}

#[derive(Deserialize)]
struct PingReq {
    peer: String,
    count: Option<u32>,
    interval_ms: Option<u64>,
}

async fn ping(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: PingReq = body(&bytes)?;
    let (peer, _) = resolve_name(&s, &req.peer).map_err(|e| ApiError::bad(e.1))?;
    let count = req.count.filter(|c| *c > 0).unwrap_or(4);
    if count > MAX_PINGS {
        return Err(ApiError::bad(format!("count exceeds maximum ({MAX_PINGS})")));
    }
    let interval = Duration::from_millis(req.interval_ms.filter(|i| *i > 0).unwrap_or(1000));
    let mut results = Vec::new();
    let mut rtts = Vec::new();
    for seq in 1..=count {
        if seq > 1 {
            tokio::time::sleep(interval).await;
        }
        match pingpong::ping(&s.node, peer, s.ping_protocol.clone()).await {
            Ok((rtt, path)) => {
                let ms = rtt.as_secs_f64() * 1000.0;
                rtts.push(ms);
                results.push(json!({ "seq": seq, "peer_id": peer.to_string(), "rtt_ms": ms, "path": path.kind(), "error": null }));
            }
            Err(e) => results.push(json!({ "seq": seq, "peer_id": peer.to_string(), "rtt_ms": null, "path": null, "error": e.to_string() })),
        }
    }
    if rtts.is_empty() {
        let last =
            results.last().and_then(|r| r["error"].as_str()).unwrap_or("no reply").to_string();
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach peer {:?}: {last}", req.peer),
        ));
    }
    let received = rtts.len() as u32;
    let stats = json!({
        "sent": count,
        "received": received,
        "lost": count - received,
        "loss_pct": f64::from(count - received) * 100.0 / f64::from(count),
        "min_ms": rtts.iter().copied().fold(f64::INFINITY, f64::min),
        "avg_ms": rtts.iter().sum::<f64>() / rtts.len() as f64,
        "max_ms": rtts.iter().copied().fold(0.0, f64::max),
    });
    Ok(data(json!({ "results": results, "stats": stats })))
}

#[derive(Deserialize)]
struct TraceReq {
    peer: String,
}

async fn traceroute(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: TraceReq = body(&bytes)?;
    let (peer, _) = resolve_name(&s, &req.peer).map_err(|e| ApiError::bad(e.1))?;
    let trace = peerup_core::diag::traceroute(&s.node, peer, s.ping_protocol.clone()).await;
    if let Some(Err(e)) = trace.hops.last().map(|h| &h.rtt) {
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach peer {:?}: {e}", req.peer),
        ));
    }
    Ok(data(crate::diag::trace_json(&req.peer, peer, &trace)))
}

/// Re-reads the config file and applies what changed (what `config apply` asks for).
async fn config_reload(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let report = s
        .live
        .reload()
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(data(report))
}

async fn shutdown(State(s): State<ApiState>) -> Response {
    let cancel = s.cancel.clone();
    // Answer first, then stop.
    s.tracker.spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    data(json!({ "status": "shutting down" }))
}

#[cfg(test)]
mod tests {
    //! Hostile JSON bodies: any bytes give the handler's type or a 400 with a message; never a panic.
    //! (scripts/api-fuzz sends schema-shaped requests to a running daemon on top of this.)

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// `body::<T>` on `bytes`: the value, or a 400 that says what is wrong.
    pub(in crate::daemon) fn parses_or_refuses<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        match body::<T>(&Bytes::copy_from_slice(bytes)) {
            Ok(v) => Some(v),
            Err(ApiError(status, msg)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert!(msg.starts_with("invalid JSON body: ") && msg.len() > 19, "{msg}");
                None
            }
        }
    }

    proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_with_a_message(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            parses_or_refuses::<AuthAdd>(&bytes);
            parses_or_refuses::<ResolveReq>(&bytes);
            parses_or_refuses::<PingReq>(&bytes);
            parses_or_refuses::<TraceReq>(&bytes);
        }

        #[test]
        fn json_shaped_bodies_round_trip_or_are_refused(
            peer_id in ".{0,60}",
            comment in proptest::option::of(".{0,30}"),
            count: Option<u32>,
            interval_ms: Option<u64>,
            wrong_type: bool,
        ) {
            let add = json!({ "peer_id": peer_id, "comment": comment }).to_string();
            let req = parses_or_refuses::<AuthAdd>(add.as_bytes()).unwrap();
            prop_assert_eq!((&req.peer_id, &req.comment), (&peer_id, &comment));
            let ping = if wrong_type {
                json!({ "peer": peer_id, "count": "4" })
            } else {
                json!({ "peer": peer_id, "count": count, "interval_ms": interval_ms })
            };
            match parses_or_refuses::<PingReq>(ping.to_string().as_bytes()) {
                Some(req) => prop_assert_eq!((req.peer, req.count, req.interval_ms), (peer_id.clone(), count, interval_ms)),
                None => prop_assert!(wrong_type),
            }
            // The peer ID itself: a PeerId or a 400 naming the input.
            if let Err(ApiError(status, msg)) = parse_peer(&peer_id) {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                prop_assert!(msg.contains("invalid peer ID"));
            }
        }
    }
}
