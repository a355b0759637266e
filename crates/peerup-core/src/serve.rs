//! Accept → limit → spawn: one loop for everything that serves what it accepts, each in a task of
//! its own (services, proxies, ping-pong, the bulk acceptor, the relay legs and punch answerers,
//! the pairing rendezvous, group introductions, the demo).
//!
//! [`each`] takes whatever arrives from an [`Accept`] source (a channel of inbound streams or
//! connections, a TCP listener), lets the caller refuse it before it costs a task, holds a place
//! among at most [`Limits::at_once`] (waiting for one, or dropping what arrives while all are
//! taken), and runs the work in a tracked task that ends when `cancel` fires or after
//! [`Limits::timeout`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A pause after a failed `accept` (out of file descriptors, typically), so that the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Where the things to serve come from.
pub trait Accept: Send + 'static {
    /// One thing to serve.
    type Item: Send + 'static;
    /// The next one; `None` when the source is closed.
    fn next(&mut self) -> impl Future<Output = Option<Self::Item>> + Send;
}

impl<T: Send + 'static> Accept for mpsc::Receiver<T> {
    type Item = T;

    async fn next(&mut self) -> Option<T> {
        self.recv().await
    }
}

/// A listener never closes: a failed accept is logged and tried again after a pause.
impl Accept for TcpListener {
    type Item = (TcpStream, SocketAddr);

    async fn next(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            match self.accept().await {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

/// What a task's work ends with: nothing, or a result whose error is logged (at debug: the
/// work's own code logs what matters to an operator).
pub trait Outcome {
    /// Logs a failure of `what`.
    fn log(self, what: &str);
}

impl Outcome for () {
    fn log(self, _: &str) {}
}

impl<E: std::fmt::Display> Outcome for Result<(), E> {
    fn log(self, what: &str) {
        if let Err(e) = self {
            tracing::debug!(error = %e, "{what} failed");
        }
    }
}

/// What happens to what arrives while every place is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for a place (the source's own queue backs up meanwhile).
    Wait,
    /// Drop it (its stream or socket closes).
    Drop,
}

/// How much [`each`] serves at once, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tasks at once.
    pub at_once: usize,
    /// Beyond that.
    pub when_full: WhenFull,
    /// Each task's time limit; `None` = as long as it takes.
    pub timeout: Option<Duration>,
}

impl Limits {
    /// At most `at_once` tasks, the rest waiting, no time limit.
    pub fn waiting(at_once: usize) -> Self {
        Self { at_once, when_full: WhenFull::Wait, timeout: None }
    }

    /// At most `at_once` tasks, the rest dropped, no time limit.
    pub fn dropping(at_once: usize) -> Self {
        Self { at_once, when_full: WhenFull::Drop, timeout: None }
    }

    /// The same, each task within `timeout`.
    pub fn within(self, timeout: Duration) -> Self {
        Self { timeout: Some(timeout), ..self }
    }
}

/// Serves each item from `source` in a task of its own until `cancel` fires or the source closes.
/// `admit` looks at an item first and returns its work, or `None` to refuse it (dropped at once,
/// before it takes a place); `what` names the work in the logs.
pub fn each<A, F, Fut>(
    mut source: A,
    limits: Limits,
    what: &'static str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    mut admit: F,
) where
    A: Accept,
    F: FnMut(A::Item) -> Option<Fut> + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Outcome,
{
    let places = Arc::new(Semaphore::new(limits.at_once));
    let tasks = tracker.clone();
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = source.next() => next,
            };
            let Some(item) = next else { return };
            let Some(work) = admit(item) else { continue };
            let permit = match limits.when_full {
                WhenFull::Wait => tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    p = places.clone().acquire_owned() => p.ok(),
                },
                WhenFull::Drop => places.clone().try_acquire_owned().ok(),
            };
            let Some(permit) = permit else {
                tracing::debug!("{what}: {} at once already; one dropped", limits.at_once);
                continue;
            };
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let timeout = limits.timeout.unwrap_or(Duration::MAX);
                tokio::select! {
                    () = cancel.cancelled() => {}
                    done = tokio::time::timeout(timeout, work) => match done {
                        Ok(outcome) => outcome.log(what),
                        Err(_) => tracing::debug!("{what} timed out"),
                    }
                }
                drop(permit);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts of the tasks `each` ran: how many started, and how many are running now.
    #[derive(Clone, Default)]
    struct Counts {
        ran: Arc<AtomicUsize>,
        now: Arc<AtomicUsize>,
    }

    /// Serves `items` numbers with `limits`; each task holds until `gate` gives it a permit.
    /// Odd numbers are refused when `refuse_odd`.
    fn start(
        items: usize,
        limits: Limits,
        refuse_odd: bool,
    ) -> (Counts, Arc<Semaphore>, TaskTracker, CancellationToken) {
        let (tx, rx) = mpsc::channel(items.max(1));
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let (counts, gate) = (Counts::default(), Arc::new(Semaphore::new(0)));
        let (c, g) = (counts.clone(), gate.clone());
        each(rx, limits, "test", &tracker, cancel.clone(), move |i: usize| {
            if refuse_odd && i % 2 == 1 {
                return None;
            }
            let (c, g) = (c.clone(), g.clone());
            Some(async move {
                c.ran.fetch_add(1, Ordering::SeqCst);
                c.now.fetch_add(1, Ordering::SeqCst);
                let _ = g.acquire().await.map(|p| p.forget());
                c.now.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for i in 0..items {
            tx.try_send(i).expect("room for every item");
        }
        tracker.close();
        (counts, gate, tracker, cancel)
    }

    /// Lets the runtime run everything that can run now.
    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn waits_for_a_place_and_serves_everything() {
        let (counts, gate, tracker, _cancel) = start(20, Limits::waiting(3), false);
        settle().await;
        assert_eq!(counts.now.load(Ordering::SeqCst), 3, "three at once, the rest waiting");
        gate.add_permits(20);
        tracker.wait().await;
        assert_eq!(counts.ran.load(Ordering::SeqCst), 20, "every one served in the end");
    }

    #[tokio::test]
    async fn drops_what_arrives_while_full() {
        let (counts, gate, tracker, _cancel) = start(10, Limits::dropping(2), false);
        settle().await;
        gate.add_permits(10);
        tracker.wait().await;
        assert_eq!(counts.ran.load(Ordering::SeqCst), 2, "the eight that came while full dropped");
    }

    #[tokio::test]
    async fn refused_items_take_no_place() {
        let (counts, gate, tracker, _cancel) = start(10, Limits::dropping(5), true);
        settle().await;
        gate.add_permits(10);
        tracker.wait().await;
        assert_eq!(counts.ran.load(Ordering::SeqCst), 5, "the five even ones, none dropped");
    }

    #[tokio::test]
    async fn a_task_ends_at_its_timeout_or_at_cancel() {
        let limits = Limits::waiting(1).within(Duration::from_millis(20));
        let (_, _, tracker, _cancel) = start(1, limits, false);
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the task ended at its timeout");
        let (_, _, tracker, cancel) = start(1, Limits::waiting(1), false);
        settle().await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the task ended at cancel");
    }
}
