//! Call budgets and failure streaks: every call bounded by its time budget, a run of failures
//! on one node rebuilding the connection in the background (which reloads the topology).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster_async::ClusterConnection;
use redis::RedisError;

use super::breaker::{timeout_is_evidence, Admission, Outcome};
use super::{lock, ClusterCache, MIN_REBUILD_INTERVAL};
use crate::cache::error::CacheError;

/// Longest pause between reconnection attempts while the cluster is unreachable.
pub(super) const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

impl ClusterCache {
    /// Asks `node`'s breaker, then applies the time budget to `call` (`commands` commands, counted
    /// as one round trip), classifies the outcome, and keeps the failure streak and the breaker.
    /// A call the breaker refuses is never sent: it fails at once with [`CacheError::CircuitOpen`].
    pub(super) async fn guarded<T, F>(
        &self,
        node: &str,
        commands: usize,
        call: F,
    ) -> Result<T, CacheError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let metrics = &self.inner.metrics;
        let admission = self.inner.breakers.admit(node, metrics);
        if admission == Admission::Reject {
            let error = CacheError::CircuitOpen;
            metrics
                .cache_errors
                .with_label_values(&[error.kind()])
                .inc();
            tracing::debug!(node, "breaker open; the call is a miss");
            return Err(error);
        }
        if commands > 0 {
            self.count_round_trip(node, commands);
        }
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CacheError::Redis(error)),
            Err(_) => Err(CacheError::Timeout),
        };
        let reached = match &outcome {
            Err(error) if error.kind() == "timeout" => {
                timeout_is_evidence(sent.elapsed(), self.inner.timeout).then_some(Outcome::TimedOut)
            }
            Err(error) if error.is_unreachable() => Some(Outcome::Failed),
            _ => Some(Outcome::Answered),
        };
        // A late timeout is not recorded: a probe that ends so is replaced after its budget.
        if let Some(reached) = reached {
            self.inner
                .breakers
                .record(node, (admission, reached, sent), metrics);
        }
        match &outcome {
            Ok(_) => {
                lock(&self.inner.failure_streaks).remove(node);
            }
            Err(error) => {
                metrics.redis_errors.with_label_values(&[node]).inc();
                self.record_failure(error);
                let streak = {
                    let mut streaks = lock(&self.inner.failure_streaks);
                    let streak = streaks.entry(node.to_owned()).or_insert(0);
                    *streak += 1;
                    *streak
                };
                if streak >= self.inner.rebuild_after {
                    self.spawn_rebuild();
                }
            }
        }
        outcome
    }

    pub(super) fn record_failure(&self, error: &CacheError) {
        let kind = error.kind();
        self.inner
            .metrics
            .cache_errors
            .with_label_values(&[kind])
            .inc();
        tracing::warn!(kind, %error, "cache call failed; serving from PostgreSQL");
    }

    pub(super) fn connection_or_record(&self) -> Option<ClusterConnection> {
        let connection = self.connection();
        if connection.is_none() {
            self.inner
                .metrics
                .cache_errors
                .with_label_values(&[CacheError::Unavailable.kind()])
                .inc();
        }
        connection
    }

    /// Replaces the connection in the background (which reloads the slot map), retrying with
    /// backoff while the cluster does not answer. At most one rebuild runs at a time, and at most
    /// one starts per [`MIN_REBUILD_INTERVAL`].
    pub(super) fn spawn_rebuild(&self) {
        if self.inner.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let rebuild = async move {
            let since_last = lock(&inner.last_rebuild).map(|at| at.elapsed());
            if let Some(elapsed) = since_last.filter(|e| *e < MIN_REBUILD_INTERVAL) {
                tokio::time::sleep(MIN_REBUILD_INTERVAL - elapsed).await;
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                *lock(&inner.last_rebuild) = Some(Instant::now());
                match inner.open().await {
                    Ok(connection) => {
                        inner.install(connection);
                        inner.metrics.redis_reconnects.inc();
                        tracing::info!("Redis Cluster connection rebuilt");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Redis Cluster still unreachable");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                    }
                }
            }
            inner.rebuilding.store(false, Ordering::Release);
        };
        self.inner.tasks.spawn_on(rebuild, &self.inner.runtime);
    }

    /// Whether some node failed its last call (its failure streak is running) or has its breaker
    /// open. Not half-open: a node that stopped being a master (failed over) gets no call to
    /// probe it, and its breaker stays half-open until it is a master again.
    pub fn is_failing(&self) -> bool {
        !lock(&self.inner.failure_streaks).is_empty()
            || self
                .inner
                .breakers
                .not_closed()
                .iter()
                .any(|(_, state)| *state == super::breaker::BreakerState::Open)
    }
}
