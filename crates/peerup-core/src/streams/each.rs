//! Serving each inbound stream of a protocol in a task of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::IncomingStream;

/// Handles each stream from `streams` in a task of its own, at most `limit` at once and each
/// within `timeout`, until `cancel` fires; `what` names the work in the logs.
pub(crate) fn serve_each<F, Fut, E>(
    mut streams: mpsc::Receiver<IncomingStream>,
    limit: usize,
    timeout: Duration,
    what: &'static str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    handle: F,
) where
    F: Fn(IncomingStream) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let limit = Arc::new(Semaphore::new(limit));
    let tasks = tracker.clone();
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                next = streams.recv() => next,
            };
            let Some(stream) = next else { return };
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let peer = stream.peer;
            let work = handle(stream);
            tasks.spawn(async move {
                match tokio::time::timeout(timeout, work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "{what} failed"),
                    Err(_) => tracing::debug!(%peer, "{what} timed out"),
                }
                drop(permit);
            });
        }
    });
}
