//! `peerup daemon`: run the node in the foreground: hold relay reservations, expose the enabled
//! services, answer pings, until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hyper::Method;
use peerup_core::node::NodeEvent;
use peerup_core::tunnel::Tunnel;
use peerup_core::{PeerId, StreamProtocol, pingpong, relay_addr};
use tokio::sync::broadcast::error::RecvError;

use super::Ctx;
use crate::cli::DaemonCommand;
use crate::config::load::Loaded;
use crate::config::pending;
use crate::config::schema::NodeConfig;
use crate::config::{self, validate::validate_node};
use crate::core_config;
use crate::daemon::api::{self, ApiState};
use crate::daemon::live::{self, Live};
use crate::daemon::{ApiPaths, client};
use crate::outln;
use crate::output;
use crate::runtime;

pub(super) fn dispatch(cmd: Option<DaemonCommand>, ctx: &Ctx) -> Result<()> {
    let call_with = |method: Method,
                     path: &str,
                     body: Option<serde_json::Value>|
     -> Result<serde_json::Value> {
        let loaded = config::load_node(ctx.config_path())?;
        let paths = ApiPaths::in_dir(loaded.dir());
        runtime::block_on_value(client::call(&paths, method, path, body))
    };
    let call = |method: Method, path: &str| call_with(method, path, None);
    match cmd {
        None | Some(DaemonCommand::Start) => run(ctx),
        Some(DaemonCommand::Status(json)) => {
            let v = call(Method::GET, "/v1/status")?;
            if json.json {
                return output::json(&v);
            }
            let text = crate::daemon::api::text::render(&v);
            outln!("{}", text.trim_end())?;
            Ok(())
        }
        Some(DaemonCommand::Services(json)) => {
            let v = call(Method::GET, "/v1/services")?;
            if json.json {
                return output::json(&v);
            }
            for s in v.as_array().into_iter().flatten() {
                outln!(
                    "{}\t{}\t{}\t{}",
                    s["name"].as_str().unwrap_or_default(),
                    s["local_address"].as_str().unwrap_or_default(),
                    s["protocol"].as_str().unwrap_or_default(),
                    if s["enabled"].as_bool() == Some(true) { "enabled" } else { "disabled" }
                )?;
            }
            Ok(())
        }
        Some(DaemonCommand::Peers(json)) => {
            let v = call(Method::GET, "/v1/peers")?;
            if json.json {
                return output::json(&v);
            }
            for p in v.as_array().into_iter().flatten() {
                let n = p["addresses"].as_array().map_or(0, Vec::len);
                outln!(
                    "{}\t{}\t{n} addrs",
                    output::short_id(p["id"].as_str().unwrap_or_default()),
                    p["agent_version"].as_str().unwrap_or("unknown")
                )?;
            }
            Ok(())
        }
        Some(DaemonCommand::Paths(json)) => {
            let v = call(Method::GET, "/v1/paths")?;
            if json.json {
                return output::json(&v);
            }
            for p in v.as_array().into_iter().flatten() {
                let rtt = p["last_rtt_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.1}ms"));
                // Go's columns, then the address and since when the connection is open.
                outln!(
                    "{}\t{}\t{}\t{}\trtt={rtt}\t{}\t{}",
                    output::short_id(p["peer_id"].as_str().unwrap_or_default()),
                    p["path_type"].as_str().unwrap_or_default(),
                    p["transport"].as_str().unwrap_or_default(),
                    p["ip_version"].as_str().unwrap_or_default(),
                    p["address"].as_str().unwrap_or_default(),
                    p["connected_at"].as_str().unwrap_or_default()
                )?;
            }
            Ok(())
        }
        Some(DaemonCommand::Connect { peer, service, listen, allow_non_loopback, json }) => {
            let body = serde_json::json!({
                "peer": peer,
                "service": service,
                "listen": listen,
                "allow_non_loopback": allow_non_loopback,
            });
            let v = call_with(Method::POST, "/v1/connect", Some(body))?;
            if json.json {
                return output::json(&v);
            }
            outln!(
                "Proxy created: {} -> {peer}:{service} (listen: {})",
                v["id"].as_str().unwrap_or_default(),
                v["listen_address"].as_str().unwrap_or_default()
            )?;
            Ok(())
        }
        Some(DaemonCommand::Ping { target, count, interval, json }) => {
            let loaded = config::load_node(ctx.config_path())?;
            match super::ping::ping_via_daemon(loaded.dir(), &target, count, interval, json.json)? {
                Some(()) => Ok(()),
                None => anyhow::bail!(
                    "daemon not running: {}",
                    ApiPaths::in_dir(loaded.dir()).socket.display()
                ),
            }
        }
        Some(DaemonCommand::Disconnect { id }) => {
            call(Method::DELETE, &format!("/v1/connect/{id}"))?;
            outln!("Proxy disconnected.")?;
            Ok(())
        }
        Some(DaemonCommand::Stop) => {
            call(Method::POST, "/v1/shutdown")?;
            outln!("Shutdown requested.")?;
            Ok(())
        }
    }
}

fn run(ctx: &Ctx) -> Result<()> {
    let path = config::load::find_node_config(ctx.config_path())?;
    // A change left unconfirmed past its deadline (the daemon was down or killed) is undone first.
    live::revert_if_expired(&path)?;
    let loaded = match prepare(&path) {
        Ok(l) => l,
        // A pending change that cannot even start is undone now rather than at its deadline.
        Err(e) if pending::marker_path(&path).exists() => {
            tracing::error!(error = %format!("{e:#}"), "the config of the pending apply cannot start; reverting it now");
            pending::revert(&path)?;
            tracing::warn!(target: "audit", config = %path.display(), "config_revert: pending apply failed to start");
            prepare(&path)?
        }
        Err(e) => return Err(e),
    };
    runtime::block_on(async move {
        // The socket first: a second daemon stops here, before touching anything else.
        let api_paths = ApiPaths::in_dir(loaded.dir());
        let listener = api_paths.bind().await?;
        let result = serve(&loaded, &api_paths, listener).await;
        api_paths.remove();
        result
    })
}

/// Loads and checks the config as a start needs it.
fn prepare(path: &std::path::Path) -> Result<Loaded<NodeConfig>> {
    let loaded = config::load::load_node_file(path)?;
    if let Err(problems) = validate_node(&loaded.config) {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("invalid config {}: {}", loaded.path.display(), list.join("; "));
    }
    // What Go peer-up logs and skips is skipped here too, and said once at the default log level.
    for w in super::config_cmd::warnings(&loaded) {
        tracing::warn!(config = %loaded.path.display(), "{w} (entry ignored)");
    }
    Ok(loaded)
}

/// Archives the config the daemon started with as last-known-good, unless it is a change still
/// waiting for `config confirm` (that one is archived when confirmed).
fn archive_started(path: &std::path::Path, started_with: &[u8]) {
    if pending::marker_path(path).exists() {
        tracing::info!("config not archived as last-known-good: its apply is not confirmed yet");
        return;
    }
    match config::archive::archive(path, started_with) {
        Ok(Some(a)) => tracing::info!(archive = %a.display(), "config archived as last-known-good"),
        Ok(None) => tracing::debug!("config unchanged since the newest archive"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot archive the config"),
    }
}

/// Runs the node and the API until SIGINT/SIGTERM or `POST /v1/shutdown`.
async fn serve(
    loaded: &Loaded<NodeConfig>,
    api_paths: &ApiPaths,
    listener: tokio::net::UnixListener,
) -> Result<()> {
    let (cancel, tracker) = runtime::shutdown_on_signals()?;
    let mut core = core_config::node_config(loaded, true)?;
    // As in Go peer-up, the resource limits and the rendezvous record are the daemon's (the
    // one-shot tools need neither).
    core.resource_limits = loaded.config.network.resource_limits_enabled;
    let rendezvous = loaded.config.discovery.rendezvous.trim();
    core.rendezvous = (!rendezvous.is_empty()).then(|| rendezvous.to_string());
    if loaded.config.telemetry.audit.enabled {
        crate::logging::enable_audit();
    }
    let access = core.access.clone();
    let (tunnel, mut events) = Tunnel::spawn(core, cancel.clone(), &tracker)?;
    let node = tunnel.node().clone();
    outln!("Peer ID: {}", node.peer_id())?;

    let started_with = std::fs::read(&loaded.path)
        .with_context(|| format!("cannot read {}", loaded.path.display()))?;
    let c = &loaded.config;
    let live = Live::start(
        c.clone(),
        &loaded.path,
        tunnel.clone(),
        access.clone(),
        cancel.clone(),
        tracker.clone(),
    )?;
    let ping_protocol = StreamProtocol::try_from_owned(c.protocols.ping_pong.id.clone())
        .context("protocols.ping_pong.id")?;
    if c.protocols.ping_pong.enabled {
        pingpong::serve(&node, ping_protocol.clone(), access.clone(), cancel.clone(), &tracker);
    }

    let relay_ids: Vec<PeerId> = c
        .relay
        .addresses
        .iter()
        .filter_map(|a| relay_addr::parse(a, None).ok())
        .filter_map(|a| relay_addr::peer_id_of(&a))
        .collect();
    crate::daemon::groups::spawn(loaded.path.clone(), relay_ids, &node, cancel.clone(), &tracker);

    let state = ApiState {
        node: node.clone(),
        tunnel: tunnel.clone(),
        access: access.clone(),
        gating: c.security.enable_connection_gating,
        view: live.view(),
        live: live.clone(),
        ping_protocol,
        started: Instant::now(),
        cancel: cancel.clone(),
        token: Arc::new(api_paths.new_cookie()?),
        tracker: tracker.clone(),
        runtime: Arc::default(),
        requests: crate::daemon::metrics::ApiRequests::default(),
    };
    if c.telemetry.metrics.enabled {
        let mut registry = prometheus_client::registry::Registry::default();
        node.metrics().register(&mut registry);
        registry.register("peerup_daemon_requests", "Daemon API requests", state.requests.clone());
        let listen = match c.telemetry.metrics.listen_address.as_str() {
            "" => "127.0.0.1:9091",
            other => other,
        };
        let addr =
            crate::daemon::metrics::serve(listen, registry, cancel.clone(), &tracker).await?;
        outln!("Metrics: http://{addr}/metrics")?;
    }
    let server = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(cancel.clone().cancelled_owned());
    tracker.spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "daemon API stopped");
        }
    });
    outln!("API: {}", api_paths.socket.display())?;
    crate::daemon::systemd::ready(node.clone(), cancel.clone(), &tracker);
    if std::fs::read(&loaded.path).ok().as_deref() == Some(started_with.as_slice()) {
        archive_started(&loaded.path, &started_with);
    }
    live.spawn_watch(cancel.clone(), &tracker);

    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            e = events.recv() => e,
        };
        match event {
            Ok(NodeEvent::ReservationAccepted { relay, renewal: false }) => {
                outln!("Reservation accepted by relay {relay}")?;
            }
            Ok(NodeEvent::ReservationLost { relay, reason }) => {
                outln!("Reservation lost on relay {relay} ({reason}); reconnecting")?;
            }
            Ok(NodeEvent::RelayRefused { relay }) => {
                let msg = peerup_core::relay::refusal_message(&relay, &node.peer_id());
                outln!("Refused: {msg}")?;
            }
            Ok(NodeEvent::HolePunched { peer }) => outln!("Direct connection with {peer}")?,
            Ok(NodeEvent::NetworkChanged(change)) => outln!("Network change: {change}")?,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
    crate::daemon::systemd::stopping();
    runtime::shutdown(&cancel, &tracker).await;
    Ok(())
}
