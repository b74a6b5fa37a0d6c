//! Every background task of the service, owned: started through [`Tasks::spawn`], stopped by one
//! shutdown signal, and joined when the server stops ([`Tasks::shutdown`]).
//!
//! A task is its future raced against the signal: at shutdown it is dropped at its next await
//! point, as an aborted task would be, so periodic loops need no shutdown branch of their own.
//! A task spawned after the signal ends at its first poll.

use std::future::Future;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The service's background tasks; cheap to clone, every clone the same set.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    /// An empty set, not shut down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` on the current runtime until it ends or the shutdown signal, whichever first.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(self.until_shutdown(task));
    }

    /// [`spawn`](Self::spawn) on `runtime` (a call from a thread that belongs to another one).
    pub fn spawn_on(&self, task: impl Future<Output = ()> + Send + 'static, runtime: &Handle) {
        self.tracker.spawn_on(self.until_shutdown(task), runtime);
    }

    /// [`spawn`](Self::spawn) on the current thread's `LocalSet` (an HTTP worker's own work).
    pub fn spawn_local(&self, task: impl Future<Output = ()> + 'static) {
        self.tracker.spawn_local(self.until_shutdown(task));
    }

    fn until_shutdown<F: Future<Output = ()>>(&self, task: F) -> impl Future<Output = ()> {
        let shutdown = self.shutdown.clone();
        async move {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {}
                () = task => {}
            }
        }
    }

    /// Signals every task to stop and waits until each has ended.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks not yet ended.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_a_loop_and_joins_it_and_a_late_task_ends_at_once() {
        let tasks = Tasks::new();
        tasks.spawn(async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tasks.spawn(async {});
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), 1, "the loop runs, the short task ended");

        tasks.shutdown().await;
        assert_eq!(tasks.running(), 0);
        tasks.spawn(std::future::pending());
        tasks.shutdown().await;
        assert_eq!(
            tasks.running(),
            0,
            "a task spawned after the signal ends at once"
        );
    }
}
