//! Proxies and services created through the API at run time (`/v1/connect`, `/v1/expose`); they
//! live until removed or until the daemon stops, and are not written to the config.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, ServiceInfo, body, data, resolve_name};

/// What the API created at run time.
#[derive(Default)]
pub struct Runtime {
    next_proxy: u64,
    pub(super) proxies: BTreeMap<String, (CancellationToken, String)>,
    pub(super) exposed: BTreeMap<String, (CancellationToken, ServiceInfo)>,
}

impl ApiState {
    pub(super) fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
struct ConnectReq {
    peer: String,
    service: String,
    listen: String,
}

pub(super) async fn connect(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: ConnectReq = body(&bytes)?;
    let (peer, _) = resolve_name(&s, &req.peer).map_err(|e| ApiError::bad(e.1))?;
    peerup_core::label::validate(&req.service).map_err(|e| ApiError::bad(e.to_string()))?;
    let addr: std::net::SocketAddr = req.listen.parse().map_err(|_| {
        ApiError::bad(format!("invalid listen address {:?}: use ip:port", req.listen))
    })?;
    let listener = crate::cmd::proxy::listen(addr)
        .map_err(|e| ApiError(StatusCode::CONFLICT, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let token = s.cancel.child_token();
    let id = {
        let mut rt = s.runtime();
        rt.next_proxy += 1;
        let id = format!("proxy-{}", rt.next_proxy);
        rt.proxies.insert(id.clone(), (token.clone(), local.to_string()));
        id
    };
    crate::cmd::proxy::serve_listener(
        listener,
        s.node.clone(),
        peer,
        req.service.clone(),
        token,
        &s.tracker,
    );
    Ok(data(json!({ "id": id, "listen_address": local.to_string() })))
}

pub(super) async fn disconnect(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (token, _) = s
        .runtime()
        .proxies
        .remove(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("proxy not found: {id}")))?;
    token.cancel();
    Ok(data(json!({ "status": "disconnected" })))
}

#[derive(Deserialize)]
struct ExposeReq {
    name: String,
    local_address: String,
}

pub(super) async fn expose(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: ExposeReq = body(&bytes)?;
    peerup_core::label::validate(&req.name).map_err(|e| ApiError::bad(e.to_string()))?;
    crate::config::validate::check_local_address(&req.local_address).map_err(|e| {
        ApiError::bad(format!("invalid local_address {:?}: {e}", req.local_address))
    })?;
    let taken = s.view.services().iter().any(|x| x.name == req.name && x.enabled)
        || s.runtime().exposed.contains_key(&req.name);
    if taken {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("service already registered: {}", req.name),
        ));
    }
    let token = s.cancel.child_token();
    let spec = peerup_core::service::ServiceSpec {
        name: req.name.clone(),
        local_address: req.local_address.clone(),
        allowed_peers: None,
    };
    peerup_core::service::expose(&s.node, spec, s.access.clone(), token.clone(), &s.tracker)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let info = ServiceInfo {
        name: req.name.clone(),
        protocol: peerup_core::protocols::service(&req.name),
        local_address: req.local_address,
        enabled: true,
    };
    s.runtime().exposed.insert(req.name, (token, info));
    Ok(data(json!({ "status": "exposed" })))
}

pub(super) async fn unexpose(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (token, _) = s.runtime().exposed.remove(&name).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("service not exposed through the API: {name}"))
    })?;
    token.cancel();
    if let Ok(protocol) = peerup_core::service::protocol_for(&name) {
        s.node.stop_accepting(&protocol);
    }
    Ok(data(json!({ "status": "unexposed" })))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::daemon::api::tests::parses_or_refuses;

    proptest! {
        #[test]
        fn connect_and_expose_bodies_round_trip_or_are_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            a in ".{0,30}",
            b in ".{0,30}",
        ) {
            parses_or_refuses::<ConnectReq>(&bytes);
            parses_or_refuses::<ExposeReq>(&bytes);
            let connect = json!({ "peer": a, "service": b, "listen": a }).to_string();
            let req = parses_or_refuses::<ConnectReq>(connect.as_bytes()).unwrap();
            prop_assert_eq!((req.peer, req.service, req.listen), (a.clone(), b.clone(), a.clone()));
            let expose = json!({ "name": b, "local_address": a }).to_string();
            let req = parses_or_refuses::<ExposeReq>(expose.as_bytes()).unwrap();
            prop_assert_eq!((req.name, req.local_address), (b, a));
        }
    }
}
