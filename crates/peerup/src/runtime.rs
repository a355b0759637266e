//! The async runtime and shutdown: every command that runs a node runs it on [`block_on`], with a
//! token cancelled on SIGINT/SIGTERM and a tracker for its tasks ([`shutdown_on_signals`]), and
//! stops through [`shutdown`]. Neighbours: [`crate::core_config`] builds the node's config.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for tasks to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs `f` on a multi-threaded tokio runtime.
pub fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Runs `f`, which yields a value, on a current-thread runtime (one-shot client calls).
pub fn block_on_value<T, F: Future<Output = Result<T>>>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// A token cancelled on SIGINT or SIGTERM, and a tracker for every task.
pub fn shutdown_on_signals() -> Result<(CancellationToken, TaskTracker)> {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let t = token.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
            _ = term.recv() => tracing::info!("terminated; shutting down"),
            () = t.cancelled() => {}
        }
        t.cancel();
    });
    Ok((token, tracker))
}

/// Cancels, then waits up to [`SHUTDOWN_GRACE`] for tracked tasks.
pub async fn shutdown(token: &CancellationToken, tracker: &TaskTracker) {
    token.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}");
    }
}
