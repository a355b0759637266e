//! Applying config changes to the running daemon, and the commit-confirmed revert timer.
//!
//! [`Live`] owns what the config decides at run time: the exposed services, the names, the
//! authorized_keys file (and its watch, [`super::reload`]) and the relays. [`Live::reload`] reads
//! the config file again and changes only what differs; the rest (identity, listen addresses,
//! discovery, protocols, telemetry, turning gating on or off) is logged as needing a restart.
//! It runs when the file changes on disk, on `POST /v1/config/reload` (what `config apply` calls),
//! and after a revert. [`Live::spawn_watch`] also watches the pending-apply marker
//! ([`crate::config::pending`]) and reverts once its deadline passes; `config confirm` removes the
//! marker, so nothing is reverted after it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use peerup_core::gate::AccessList;
use peerup_core::service::{self, ServiceSpec};
use peerup_core::tunnel::Tunnel;
use peerup_core::{Multiaddr, relay_addr};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::ServiceInfo;
use super::reload::{Ticks, stamp};
use crate::config::load::load_node_file;
use crate::config::pending;
use crate::config::schema::{NodeConfig, ServiceEntry};
use crate::config::validate::{node_warnings, validate_node, with_lines};
use crate::core_config;

/// What the API shows of the config; swapped on every reload.
#[derive(Clone, Default)]
pub struct View {
    services: Arc<RwLock<Vec<ServiceInfo>>>,
    names: Arc<RwLock<BTreeMap<String, String>>>,
    keys_path: Arc<RwLock<PathBuf>>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = value;
}

impl View {
    /// The configured services (enabled or not).
    pub fn services(&self) -> Vec<ServiceInfo> {
        read(&self.services)
    }
    /// The config's names.
    pub fn names(&self) -> BTreeMap<String, String> {
        read(&self.names)
    }
    /// The authorized_keys file.
    pub fn keys_path(&self) -> PathBuf {
        read(&self.keys_path)
    }
}

/// What a reload did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Changes now in effect, by config key.
    pub applied: Vec<String>,
    /// Changes that take effect at the next start, by config key.
    pub needs_restart: Vec<String>,
}

/// The daemon's run-time config.
pub struct Live {
    tunnel: Tunnel,
    access: AccessList,
    cancel: CancellationToken,
    tracker: TaskTracker,
    view: View,
    path: PathBuf,
    state: tokio::sync::Mutex<State>,
}

struct State {
    current: NodeConfig,
    running: HashMap<String, (CancellationToken, ServiceSpec)>,
    keys_watch: Option<CancellationToken>,
}

fn spec(name: &str, entry: &ServiceEntry) -> Result<ServiceSpec> {
    Ok(ServiceSpec {
        name: name.to_string(),
        local_address: entry.local_address.clone(),
        allowed_peers: core_config::allowed_peers(entry.allowed_peers.as_ref()),
    })
}

fn infos(c: &NodeConfig) -> Vec<ServiceInfo> {
    c.services
        .iter()
        .map(|(name, s)| ServiceInfo {
            name: name.clone(),
            protocol: peerup_core::protocols::service(name),
            local_address: s.local_address.clone(),
            enabled: s.enabled,
        })
        .collect()
}

fn relays(c: &NodeConfig) -> Result<Vec<Multiaddr>> {
    c.relay
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| relay_addr::parse(a, None).with_context(|| format!("relay.addresses[{i}]")))
        .collect()
}

impl Live {
    /// Takes over the config the daemon started with: exposes its enabled services and watches
    /// its authorized_keys.
    pub fn start(
        config: NodeConfig,
        path: &Path,
        tunnel: Tunnel,
        access: AccessList,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Live>> {
        let view = View::default();
        write(&view.services, infos(&config));
        write(&view.names, config.names.clone());
        write(&view.keys_path, config.security.authorized_keys_file.clone());
        let live = Live {
            tunnel,
            access,
            cancel,
            tracker,
            view,
            path: path.to_path_buf(),
            state: tokio::sync::Mutex::new(State {
                current: config.clone(),
                running: HashMap::new(),
                keys_watch: None,
            }),
        };
        let mut state = live.state.try_lock().context("config state busy at start")?;
        for (name, entry) in config.services.iter().filter(|(_, s)| s.enabled) {
            live.expose(&mut state, name, entry)?;
            crate::outln!("Exposing service {name} -> {}", entry.local_address)?;
        }
        if config.security.enable_connection_gating {
            live.watch_keys(&mut state, &config.security.authorized_keys_file);
        }
        drop(state);
        Ok(Arc::new(live))
    }

    /// What the API shows.
    pub fn view(&self) -> View {
        self.view.clone()
    }

    fn expose(&self, state: &mut State, name: &str, entry: &ServiceEntry) -> Result<()> {
        let spec = spec(name, entry)?;
        let token = self.cancel.child_token();
        service::expose(
            &self.tunnel,
            spec.clone(),
            self.access.clone(),
            token.clone(),
            &self.tracker,
        )?;
        state.running.insert(name.to_string(), (token, spec));
        Ok(())
    }

    fn unexpose(&self, state: &mut State, name: &str) {
        if let Some((token, _)) = state.running.remove(name) {
            token.cancel();
            // A running service's name is valid.
            let _ = service::withdraw(&self.tunnel, name);
        }
    }

    fn watch_keys(&self, state: &mut State, path: &Path) {
        if let Some(old) = state.keys_watch.take() {
            old.cancel();
        }
        let token = self.cancel.child_token();
        super::reload::spawn(
            path,
            self.access.clone(),
            self.tunnel.clone(),
            token.clone(),
            &self.tracker,
        );
        state.keys_watch = Some(token);
    }

    /// Reads the config file again and applies what changed. An invalid file changes nothing.
    pub async fn reload(&self) -> Result<Report> {
        let loaded = load_node_file(&self.path)?;
        let new = loaded.config;
        if let Err(ps) = validate_node(&new) {
            let list: Vec<String> = ps.iter().map(ToString::to_string).collect();
            bail!("invalid config {}: {}", self.path.display(), list.join("; "));
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        for w in with_lines(node_warnings(&new), &text) {
            tracing::warn!(config = %self.path.display(), "{w} (entry ignored)");
        }
        let new_relays = relays(&new)?;
        if new_relays.is_empty() {
            bail!("invalid config {}: no relay configured", self.path.display());
        }
        let mut state = self.state.lock().await;
        let old = state.current.clone();
        let mut report = Report::default();

        // Services: stop the removed and disabled, (re)start the new and changed.
        let wanted: BTreeMap<&String, &ServiceEntry> =
            new.services.iter().filter(|(_, s)| s.enabled).collect();
        let running: Vec<String> = state.running.keys().cloned().collect();
        for name in running {
            let keep = match (wanted.get(&name), state.running.get(&name)) {
                (Some(entry), Some((_, spec))) => {
                    let want = self::spec(&name, entry)?;
                    want.local_address == spec.local_address
                        && want.allowed_peers == spec.allowed_peers
                }
                _ => false,
            };
            if !keep {
                self.unexpose(&mut state, &name);
                if !wanted.contains_key(&name) {
                    tracing::info!(service = %name, "service stopped (config change)");
                    report.applied.push(format!("services.{name} stopped"));
                }
            }
        }
        for (name, entry) in wanted {
            if !state.running.contains_key(name) {
                self.expose(&mut state, name, entry)?;
                tracing::info!(service = %name, local_address = %entry.local_address, "service exposed (config change)");
                report.applied.push(format!("services.{name} exposed"));
            }
        }
        write(&self.view.services, infos(&new));

        if old.names != new.names {
            write(&self.view.names, new.names.clone());
            report.applied.push("names".into());
        }

        let sec = (&old.security, &new.security);
        if sec.0.enable_connection_gating != sec.1.enable_connection_gating {
            report.needs_restart.push("security.enable_connection_gating".into());
        } else if sec.1.enable_connection_gating
            && sec.0.authorized_keys_file != sec.1.authorized_keys_file
        {
            let keys = peerup_core::authorized_keys::AuthorizedKeys::load_strict(
                &sec.1.authorized_keys_file,
            )?;
            self.access.replace(&keys);
            self.watch_keys(&mut state, &sec.1.authorized_keys_file);
            write(&self.view.keys_path, sec.1.authorized_keys_file.clone());
            tracing::info!(target: "audit", file = %sec.1.authorized_keys_file.display(), "auth_change: authorized_keys file changed by config");
            report.applied.push("security.authorized_keys_file".into());
        }

        if relays(&old).ok().as_ref() != Some(&new_relays) {
            for id in new_relays.iter().filter_map(relay_addr::peer_id_of) {
                self.access.allow_always(id);
            }
            let change = self.tunnel.node().set_relays(new_relays).await?;
            report.applied.push(format!(
                "relay.addresses (+{} -{})",
                change.added.len(),
                change.removed.len()
            ));
        }

        for (key, changed) in [
            ("identity", old.identity != new.identity),
            ("network", old.network != new.network),
            ("discovery", old.discovery != new.discovery),
            ("protocols", old.protocols != new.protocols),
            ("telemetry", old.telemetry != new.telemetry),
            (
                "relay.reservation_interval",
                old.relay.reservation_interval != new.relay.reservation_interval,
            ),
        ] {
            if changed {
                report.needs_restart.push(key.into());
            }
        }
        for key in &report.needs_restart {
            tracing::warn!(%key, "config change needs a daemon restart to take effect");
        }
        tracing::info!(target: "audit", config = %self.path.display(), applied = ?report.applied, needs_restart = ?report.needs_restart, "config_reload");
        state.current = new;
        Ok(report)
    }

    /// Watches the config file (reloading on change) and the pending-apply marker (reverting when
    /// its deadline passes) until the daemon stops.
    pub fn spawn_watch(self: &Arc<Self>, cancel: CancellationToken, tracker: &TaskTracker) {
        let live = self.clone();
        let mut seen = stamp(&self.path);
        let mut marker_seen = None;
        let mut marker: Option<pending::Marker> = None;
        tracker.spawn(async move {
            let mut ticks = Ticks::new(cancel);
            while ticks.next().await {
                let marker_now = stamp(&pending::marker_path(&live.path));
                if marker_now != marker_seen {
                    marker_seen = marker_now;
                    marker = match pending::read(&live.path) {
                        Ok(m) => m,
                        Err(e) => {
                            // A broken marker still means a change nobody confirmed.
                            tracing::error!(error = %format!("{e:#}"), "reverting the pending config apply now");
                            Some(pending::Marker { deadline: jiff::Timestamp::UNIX_EPOCH, backup: String::new() })
                        }
                    };
                    if let Some(m) = &marker {
                        tracing::info!(deadline = %m.deadline, "config apply pending confirmation");
                    }
                }
                if marker.as_ref().is_some_and(pending::Marker::expired) {
                    marker = None;
                    match pending::revert(&live.path) {
                        Ok(true) => tracing::warn!(target: "audit", config = %live.path.display(), "config_revert: apply not confirmed by its deadline; previous config restored"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "config revert failed"),
                    }
                }
                let now = stamp(&live.path);
                if now != seen {
                    seen = now;
                    match live.reload().await {
                        Ok(r) => tracing::info!(applied = ?r.applied, needs_restart = ?r.needs_restart, "config reloaded"),
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "config changed but cannot be applied; keeping the running config"),
                    }
                }
            }
        });
    }
}

/// At start: reverts a pending apply whose deadline has passed (or whose marker is broken).
/// Returns whether it reverted.
pub fn revert_if_expired(path: &Path) -> Result<bool> {
    let expired = match pending::read(path) {
        Ok(Some(m)) if !m.expired() => {
            tracing::info!(deadline = %m.deadline, remaining = ?m.remaining(), "config apply pending confirmation; it reverts at the deadline");
            false
        }
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "treating the pending apply as expired");
            true
        }
    };
    if expired && pending::revert(path)? {
        tracing::warn!(target: "audit", config = %path.display(), "config_revert: apply not confirmed by its deadline; previous config restored at start");
        return Ok(true);
    }
    Ok(false)
}
