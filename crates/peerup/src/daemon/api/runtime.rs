//! Proxies and services created through the API at run time (`/v1/connect`, `/v1/expose`); they
//! live until removed or until the daemon stops, and are not written to the config.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use peerup_core::PeerId;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, ServiceInfo, body, data, resolve_name};
use crate::proxy::{self, ProxyEvent, Report};

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
    /// Listen on an address other machines can reach (a LAN address, `0.0.0.0`); without it only
    /// loopback addresses are accepted.
    #[serde(default)]
    allow_non_loopback: bool,
}

/// The proxy's listen address: `ip:port`, and a loopback IP unless `allow_non_loopback`. A proxy
/// carries whoever connects to it to the peer's service with this node's identity, so listening
/// where others can connect hands the service to them.
fn listen_address(listen: &str, allow_non_loopback: bool) -> Result<SocketAddr, ApiError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| ApiError::bad(format!("invalid listen address {listen:?}: use ip:port")))?;
    if !allow_non_loopback && !addr.ip().to_canonical().is_loopback() {
        return Err(ApiError::bad(format!(
            "listen address {addr} is not loopback: anyone who can reach it would use the peer's \
             service as this node; use 127.0.0.1 or [::1], or set allow_non_loopback: true"
        )));
    }
    Ok(addr)
}

pub(super) async fn connect(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: ConnectReq = body(&bytes)?;
    let (peer, _) = resolve_name(&s, &req.peer).map_err(|e| ApiError::bad(e.1))?;
    peerup_core::label::validate(&req.service).map_err(|e| ApiError::bad(e.to_string()))?;
    let addr = listen_address(&req.listen, req.allow_non_loopback)?;
    let listener = proxy::listen(addr)
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
    let report = logged(id.clone());
    proxy::serve(listener, s.tunnel.clone(), peer, req.service.clone(), report, token, &s.tracker);
    Ok(data(json!({ "id": id, "listen_address": local.to_string() })))
}

/// Logs what happens to each of the proxy `id`'s connections: the daemon's stdout is for its own
/// status lines, not a line per proxied connection.
fn logged(id: String) -> Report {
    Arc::new(move |event| match event {
        ProxyEvent::Opened { n, path, took } => tracing::info!(
            proxy = %id,
            n,
            path = path.kind(),
            via = %path.remote_addr,
            ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            "proxy connection opened"
        ),
        ProxyEvent::Failed { n, error } => {
            tracing::warn!(proxy = %id, n, %error, "proxy connection failed")
        }
        ProxyEvent::Broke { n, error } => {
            tracing::warn!(proxy = %id, n, %error, "proxy connection broke")
        }
    })
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
    /// Peer IDs allowed to use the service (as `services.<name>.allowed_peers` in the config);
    /// absent = every authorized peer.
    #[serde(default)]
    allowed_peers: Option<Vec<String>>,
}

/// The peers of `allowed_peers`, each a peer ID; a 400 naming the first that is not.
fn allowed_peers(list: Option<&[String]>) -> Result<Option<HashSet<PeerId>>, ApiError> {
    list.map(|l| {
        l.iter()
            .enumerate()
            .map(|(i, p)| {
                p.trim().parse().map_err(|e| {
                    ApiError::bad(format!("allowed_peers[{i}]: invalid peer ID {p:?}: {e}"))
                })
            })
            .collect()
    })
    .transpose()
}

pub(super) async fn expose(State(s): State<ApiState>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: ExposeReq = body(&bytes)?;
    peerup_core::label::validate(&req.name).map_err(|e| ApiError::bad(e.to_string()))?;
    crate::config::validate::check_local_address(&req.local_address).map_err(|e| {
        ApiError::bad(format!("invalid local_address {:?}: {e}", req.local_address))
    })?;
    let allowed = allowed_peers(req.allowed_peers.as_deref())?;
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
        allowed_peers: allowed,
    };
    peerup_core::service::expose(&s.tunnel, spec, s.access.clone(), token.clone(), &s.tracker)
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
    // A name the API accepted is valid; one that is not was never offered either.
    let _ = peerup_core::service::withdraw(&s.tunnel, &name);
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
            prop_assert!(!req.allow_non_loopback, "loopback only unless asked");
            let expose = json!({ "name": b, "local_address": a }).to_string();
            let req = parses_or_refuses::<ExposeReq>(expose.as_bytes()).unwrap();
            prop_assert_eq!((req.name, req.local_address, req.allowed_peers), (b.clone(), a.clone(), None));
            let expose = json!({ "name": b, "local_address": a, "allowed_peers": [a] }).to_string();
            let req = parses_or_refuses::<ExposeReq>(expose.as_bytes()).unwrap();
            prop_assert_eq!(req.allowed_peers, Some(vec![a.clone()]));
            // Any listen string and any allowed_peers entry: a value or a 400 naming it, never a panic.
            for allow in [false, true] {
                if let Err(ApiError(status, msg)) = listen_address(&a, allow) {
                    prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                    prop_assert!(msg.contains("listen address"), "{}", msg);
                }
            }
            if let Err(ApiError(status, msg)) = allowed_peers(Some(std::slice::from_ref(&b))) {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                prop_assert!(msg.starts_with("allowed_peers[0]: invalid peer ID"), "{}", msg);
            }
        }
    }

    #[test]
    fn a_proxy_listens_on_loopback_unless_asked() {
        for (listen, allow, ok) in [
            ("127.0.0.1:0", false, true),
            ("127.0.0.2:8080", false, true),
            ("[::1]:0", false, true),
            ("[::ffff:127.0.0.1]:0", false, true),
            ("0.0.0.0:0", false, false),
            ("[::]:2222", false, false),
            ("192.168.1.10:2222", false, false),
            ("[::ffff:10.0.0.1]:0", false, false),
            ("0.0.0.0:0", true, true),
            ("192.168.1.10:2222", true, true),
            ("localhost:22", true, false),
        ] {
            match listen_address(listen, allow) {
                Ok(a) => assert!(ok, "{listen} (allow {allow}) was accepted as {a}"),
                Err(ApiError(status, msg)) => {
                    assert!(!ok, "{listen} (allow {allow}) was refused: {msg}");
                    assert_eq!(status, StatusCode::BAD_REQUEST);
                    if listen.parse::<SocketAddr>().is_ok() {
                        assert!(msg.contains("allow_non_loopback: true"), "{msg}");
                    }
                }
            }
        }
    }

    #[test]
    fn allowed_peers_are_peer_ids() {
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(allowed_peers(None).ok(), Some(None));
        let set = allowed_peers(Some(&[a.to_string(), format!(" {b} ")])).ok().flatten();
        assert_eq!(set, Some(HashSet::from([a, b])));
        assert_eq!(allowed_peers(Some(&[])).ok(), Some(Some(HashSet::new())));
        let Err(ApiError(status, msg)) = allowed_peers(Some(&[a.to_string(), "home".into()]))
        else {
            panic!("a name is not a peer ID");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.starts_with("allowed_peers[1]: invalid peer ID \"home\""), "{msg}");
    }
}
