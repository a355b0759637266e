//! Shared by the core's integration tests: waiting on node events, with a timeout.

use std::time::Duration;

use peerup_core::node::NodeEvent;
use tokio::sync::broadcast;

/// How long a test waits for any one event.
pub const WAIT: Duration = Duration::from_secs(20);

/// The first event `pred` accepts, within [`WAIT`].
pub async fn wait_for(
    rx: &mut broadcast::Receiver<NodeEvent>,
    mut pred: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel closed: {e}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a node event")
}
