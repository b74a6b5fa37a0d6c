//! The feed's periodic housekeeping: the sweep of expired idempotency keys from PostgreSQL, and
//! the report of the in-process tier's size and the hottest keys to the metrics.

use std::time::Duration;

use super::{Feed, FeedError};
use crate::domain::IDEMPOTENCY_KEY_TTL;

/// Expired idempotency keys are kept this much longer than [`IDEMPOTENCY_KEY_TTL`] before the
/// sweep deletes them: a request that saw a key unexpired still finds its row a moment later.
const IDEMPOTENCY_SWEEP_GRACE: Duration = Duration::from_secs(3600);
/// Rows one sweep statement deletes, and statements one sweep runs at most.
const IDEMPOTENCY_SWEEP_BATCH: u32 = 1000;
const IDEMPOTENCY_SWEEP_MAX_BATCHES: u32 = 100;

impl Feed {
    /// Deletes idempotency keys that expired over an hour ago, in bounded batches; returns how
    /// many went. Until then an expired key is already ignored (the next request takes it over).
    ///
    /// # Errors
    /// PostgreSQL failures.
    pub async fn sweep_idempotency_keys(&self) -> Result<u64, FeedError> {
        let age = IDEMPOTENCY_KEY_TTL + IDEMPOTENCY_SWEEP_GRACE;
        let mut deleted = 0;
        for _ in 0..IDEMPOTENCY_SWEEP_MAX_BATCHES {
            let batch = self
                .store
                .delete_expired_idempotency_keys(age, IDEMPOTENCY_SWEEP_BATCH)
                .await?;
            deleted += batch;
            if batch < u64::from(IDEMPOTENCY_SWEEP_BATCH) {
                break;
            }
        }
        Ok(deleted)
    }

    /// Sweeps expired idempotency keys every `period` until shutdown.
    pub fn spawn_idempotency_sweeper(&self, period: Duration) {
        let feed = self.clone();
        self.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                match feed.sweep_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
                    Err(error) => {
                        tracing::warn!(%error, "idempotency key sweep failed; the next one retries");
                    }
                }
            }
        });
    }

    /// Publishes the in-process tier's size and the hottest keys to the metrics every `period`,
    /// until shutdown. Every rank up to `ranks` has its series, 0 while no key holds it.
    pub fn spawn_cache_reporter(&self, period: Duration, ranks: usize) {
        let feed = self.clone();
        self.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                if let Some(local) = feed.cache.local() {
                    local.report();
                }
                let Some(report) = feed.cache.hot_report() else {
                    continue;
                };
                let gauges = &feed.metrics.hot_key_reads;
                for rank in 0..ranks.max(report.keys.len()) {
                    let reads = report.keys.get(rank).map_or(0, |entry| entry.reads);
                    gauges
                        .with_label_values(&[&(rank + 1).to_string()])
                        .set(i64::try_from(reads).unwrap_or(i64::MAX));
                }
            }
        });
    }
}
