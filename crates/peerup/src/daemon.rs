//! The daemon's management API: HTTP/1.1 over a Unix socket next to the config, with a bearer
//! cookie rotated on every start.
//!
//! - [`api`]: the routes, the `{"data":…}` / `{"error":…}` envelope and the cookie check.
//! - [`client`]: what the CLI uses to talk to a running daemon.
//! - [`metrics`]: the optional Prometheus endpoint.
//! - [`reload`]: hot reload of authorized_keys.
//! - [`live`]: config changes applied to the running daemon, and the commit-confirmed revert.
//! - [`groups`]: introductions of group members by the relay.
//! - [`systemd`]: READY, WATCHDOG and STOPPING notifications.
//! - This file: the socket and cookie files' lifecycle.

pub mod api;
pub mod client;
pub mod groups;
pub mod live;
pub mod metrics;
pub mod reload;
pub mod systemd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peerup_core::fsutil;
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the config folder.
pub const SOCKET_FILE: &str = "peerup.sock";
/// The cookie's file name in the config folder.
pub const COOKIE_FILE: &str = ".daemon-cookie";

/// Where a daemon's socket and cookie live.
#[derive(Debug, Clone)]
pub struct ApiPaths {
    /// The Unix socket.
    pub socket: PathBuf,
    /// The bearer token file.
    pub cookie: PathBuf,
}

impl ApiPaths {
    /// The files of the daemon whose config lives in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { socket: dir.join(SOCKET_FILE), cookie: dir.join(COOKIE_FILE) }
    }

    /// Binds the socket, owner-only from its first instant (see [`fsutil::bind_private_socket`]),
    /// in a folder that must be private to this user (0700): nobody else may reach the socket's
    /// name, nor swap it. A socket file that still answers means another daemon runs; one that does
    /// not is stale and replaced.
    pub async fn bind(&self) -> Result<UnixListener> {
        let dir = match self.socket.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fsutil::check_private_dir(dir).with_context(|| {
            format!("refusing to serve {}: its folder must be private", self.socket.display())
        })?;
        if self.socket.exists() {
            if UnixStream::connect(&self.socket).await.is_ok() {
                bail!(
                    "a daemon is already running (its socket {} answers); stop it with 'peerup daemon stop'",
                    self.socket.display()
                );
            }
            std::fs::remove_file(&self.socket)
                .with_context(|| format!("cannot remove stale socket {}", self.socket.display()))?;
        }
        let listener =
            fsutil::bind_private_socket(&self.socket).context("cannot bind the socket")?;
        listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(listener))
            .with_context(|| format!("cannot serve {}", self.socket.display()))
    }

    /// Writes a fresh random cookie (32 bytes, hex) with mode 0600 and returns it.
    pub fn new_cookie(&self) -> Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for the cookie: {e}"))?;
        let token = hex::encode(bytes);
        peerup_core::fsutil::write_private_atomic(&self.cookie, token.as_bytes())?;
        Ok(token)
    }

    /// Removes the socket and the cookie (clean stop).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.cookie);
    }
}
