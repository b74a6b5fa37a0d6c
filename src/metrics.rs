//! Prometheus metrics: defined once, owned by one registry.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::UserId;

/// Label value that stands for every user past the label limit.
pub const OTHER_USERS: &str = "other";

/// All metrics of the service.
pub struct Metrics {
    registry: Registry,
    user_labels: UserLabels,
    /// Page-of-ids cache hits per user (`user_id` bounded).
    pub list_hits: IntCounterVec,
    /// Page-of-ids cache misses per user (`user_id` bounded).
    pub list_misses: IntCounterVec,
    /// Post objects found in the cache.
    pub object_hits: IntCounter,
    /// Post objects not found in the cache (read from PostgreSQL).
    pub object_misses: IntCounter,
    /// How each page request was served: hit, partial, miss or bypass.
    pub pages: IntCounterVec,
    /// HTTP requests by method, route pattern and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by method, route pattern and status.
    pub http_duration: HistogramVec,
    /// Failed cache operations by kind (timeout, unavailable, io, moved, cluster_down, decode, ...).
    pub cache_errors: IntCounterVec,
    /// Writes whose listing invalidation failed after its retry (pages then live out their TTL).
    pub cache_invalidation_failures: IntCounter,
    /// Round trips (pipelines) sent to each Redis node.
    pub redis_round_trips: IntCounterVec,
    /// Commands sent to each Redis node.
    pub redis_commands: IntCounterVec,
    /// Failed round trips to each Redis node (errors and timeouts).
    pub redis_errors: IntCounterVec,
    /// Times the cluster connection was rebuilt.
    pub redis_reconnects: IntCounter,
    /// Nodes one multi-key cache operation touched.
    pub cache_nodes_per_op: Histogram,
    /// Keys in one per-node batch.
    pub cache_keys_per_batch: Histogram,
    /// PostgreSQL queries by kind.
    pub db_queries: IntCounterVec,
    /// Requests that waited for another request's PostgreSQL read of the same thing, by kind.
    pub coalesced_waits: IntCounterVec,
    /// Requests answered 503 `overloaded` because `DB_MAX_INFLIGHT` were already on PostgreSQL.
    pub db_shed: IntCounter,
    /// Boxes (inboxes and the author's outbox) one new or deleted post was written to.
    pub feed_fanout_size: Histogram,
    /// Time from a post's commit to the end of its fan-out.
    pub feed_fanout_lag: Histogram,
    /// Home-feed pages by where their ids came from: inbox, pulled (celebrity outboxes), database.
    pub feed_sources: IntCounterVec,
    /// Celebrity outboxes read by home-feed pages.
    pub feed_celebrity_pulls: IntCounter,
    /// Boxes rebuilt from PostgreSQL, by kind (inbox, outbox).
    pub feed_rebuilds: IntCounterVec,
    /// Boxes dropped because a fan-out to them failed (they are rebuilt on their next read).
    pub feed_fanout_repairs: IntCounter,
    /// Requests refused with 429, by limit (writes_per_user, writes_per_address, reads_per_address).
    pub rate_limited: IntCounterVec,
    /// Keys each rate limiter holds after its last cleanup (its memory), by limit.
    pub rate_limiter_keys: IntGaugeVec,
    /// In-process tier hits, by kind (page, post, outbox).
    pub l1_hits: IntCounterVec,
    /// In-process tier misses (absent, expired or invalidated), by kind.
    pub l1_misses: IntCounterVec,
    /// In-process tier entries removed, by cause (size, expired, invalidated).
    pub l1_evictions: IntCounterVec,
    /// Bytes the in-process tier holds (approximate: values plus a fixed cost per entry).
    pub l1_bytes: IntGauge,
    /// Entries the in-process tier holds.
    pub l1_entries: IntGauge,
    /// 1 while the invalidation channel is subscribed (the tier serves), else 0.
    pub l1_listening: IntGauge,
    /// Invalidation messages published, by outcome (sent, failed).
    pub invalidations_sent: IntCounterVec,
    /// Invalidation messages received from the channel (this instance's own included).
    pub invalidations_received: IntCounter,
    /// Time from an invalidation's publish to its receipt (clocks of both instances).
    pub invalidation_lag: Histogram,
    /// Times the invalidation channel went down (every entry was dropped).
    pub invalidation_channel_drops: IntCounter,
    /// Cached pages refreshed in the background shortly before they expired.
    pub early_refreshes: IntCounterVec,
    /// Reads in the hot-key window of the hottest keys, by rank (1 is the hottest): at most
    /// `HOT_TOP_K` series whatever clients ask for. Which key holds a rank is in
    /// `GET /api/v1/admin/hot` (a key label would let clients mint series).
    pub hot_key_reads: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    ///
    /// `user_label_limit` bounds the distinct `user_id` label values; later users share `"other"`.
    pub fn new(user_label_limit: usize) -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid literals");
            registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("metric names are valid literals");
            registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
            metric
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("metric names and buckets are valid literals");
            registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
            metric
        };

        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("metric names are valid literals");
            registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
            metric
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid literals");
            registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
            metric
        };

        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route pattern",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("metric names and labels are valid literals");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("each metric is registered once");

        let rate_limiter_keys = IntGaugeVec::new(
            Opts::new(
                "rate_limiter_keys",
                "Users or client addresses each rate limiter holds after its last cleanup",
            ),
            &["limit"],
        )
        .expect("metric names and labels are valid literals");
        registry
            .register(Box::new(rate_limiter_keys.clone()))
            .expect("each metric is registered once");

        Self {
            user_labels: UserLabels::new(user_label_limit),
            list_hits: counter_vec(
                "post_list_cache_hits_total",
                "Total hits for post list cache",
                &["user_id"],
            ),
            list_misses: counter_vec(
                "post_list_cache_misses_total",
                "Total misses for post list cache",
                &["user_id"],
            ),
            object_hits: counter(
                "post_object_cache_hits_total",
                "Total hits for post object cache",
            ),
            object_misses: counter(
                "post_object_cache_misses_total",
                "Total misses for post object cache",
            ),
            pages: counter_vec(
                "feed_pages_total",
                "Pages of posts served, by how the cache served them",
                &["cache"],
            ),
            http_requests: counter_vec(
                "http_requests_total",
                "HTTP requests by route pattern and status",
                &["method", "route", "status"],
            ),
            http_duration,
            cache_errors: counter_vec(
                "cache_errors_total",
                "Cache operations that failed and were served from PostgreSQL, by kind",
                &["kind"],
            ),
            redis_round_trips: counter_vec(
                "redis_round_trips_total",
                "Round trips (pipelines or single commands) sent to each Redis node",
                &["node"],
            ),
            redis_commands: counter_vec(
                "redis_commands_total",
                "Commands sent to each Redis node",
                &["node"],
            ),
            redis_errors: counter_vec(
                "redis_errors_total",
                "Round trips to each Redis node that failed or timed out",
                &["node"],
            ),
            redis_reconnects: counter(
                "redis_reconnects_total",
                "Times the Redis Cluster connection was rebuilt",
            ),
            cache_nodes_per_op: histogram(
                "cache_nodes_per_operation",
                "Redis nodes touched by one multi-key cache operation",
                vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
            ),
            cache_keys_per_batch: histogram(
                "cache_keys_per_batch",
                "Keys in one per-node pipeline",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 100.0],
            ),
            db_queries: counter_vec("db_queries_total", "PostgreSQL queries by kind", &["query"]),
            cache_invalidation_failures: counter(
                "cache_invalidation_failures_total",
                "Writes whose cached pages could not be invalidated; they expire within CACHE_LIST_TTL_SECS",
            ),
            coalesced_waits: counter_vec(
                "coalesced_waits_total",
                "Misses that waited for a concurrent request's PostgreSQL read instead of their own",
                &["kind"],
            ),
            db_shed: counter(
                "db_shed_total",
                "Requests shed (503 overloaded) because DB_MAX_INFLIGHT were waiting on PostgreSQL",
            ),
            feed_fanout_size: histogram(
                "feed_fanout_size",
                "Boxes one new or deleted post was written to (inboxes and the author's outbox)",
                vec![1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
            ),
            feed_fanout_lag: histogram(
                "feed_fanout_lag_seconds",
                "Time from a post's commit until its fan-out to followers' inboxes ended",
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            ),
            feed_sources: counter_vec(
                "feed_sources_total",
                "Home-feed pages by where their ids came from",
                &["source"],
            ),
            feed_celebrity_pulls: counter(
                "feed_celebrity_pulls_total",
                "Celebrity outboxes read by home-feed pages",
            ),
            feed_rebuilds: counter_vec(
                "feed_rebuilds_total",
                "Inboxes and outboxes rebuilt from PostgreSQL",
                &["box"],
            ),
            feed_fanout_repairs: counter(
                "feed_fanout_repairs_total",
                "Boxes dropped after a failed fan-out, to be rebuilt on their next read",
            ),
            rate_limited: counter_vec(
                "http_rate_limited_total",
                "Requests refused with 429 by a rate limit, by limit",
                &["limit"],
            ),
            rate_limiter_keys,
            l1_hits: counter_vec(
                "l1_hits_total",
                "In-process tier hits, by kind of entry",
                &["kind"],
            ),
            l1_misses: counter_vec(
                "l1_misses_total",
                "In-process tier misses (absent, expired or invalidated), by kind of entry",
                &["kind"],
            ),
            l1_evictions: counter_vec(
                "l1_evictions_total",
                "In-process tier entries removed, by cause",
                &["cause"],
            ),
            l1_bytes: gauge("l1_bytes", "Bytes the in-process tier holds (approximate)"),
            l1_entries: gauge("l1_entries", "Entries the in-process tier holds"),
            l1_listening: gauge(
                "l1_listening",
                "1 while the invalidation channel is subscribed and the in-process tier serves",
            ),
            invalidations_sent: counter_vec(
                "l1_invalidations_sent_total",
                "Invalidation messages published to the other instances, by outcome",
                &["outcome"],
            ),
            invalidations_received: counter(
                "l1_invalidations_received_total",
                "Invalidation messages received from the channel",
            ),
            invalidation_lag: histogram(
                "l1_invalidation_lag_seconds",
                "Time from an invalidation's publish to its receipt",
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ],
            ),
            invalidation_channel_drops: counter(
                "l1_channel_drops_total",
                "Times the invalidation channel went down and the in-process tier was emptied",
            ),
            early_refreshes: counter_vec(
                "cache_early_refreshes_total",
                "Cached pages refreshed in the background before they expired, by outcome",
                &["outcome"],
            ),
            hot_key_reads: gauge_vec(
                "hot_key_reads",
                "Reads in the hot-key window of the hottest cache keys, by rank (1 is the hottest; the keys are in /api/v1/admin/hot)",
                &["rank"],
            ),
            registry,
        }
    }

    /// Creates the series of `node` in the per-node Redis counters at 0, once the cluster's topology
    /// names it: a `rate()` or an alert then sees 0 instead of "no data" until the node's first error.
    pub fn node_known(&self, node: &str) {
        zero_series(&self.redis_round_trips, [node]);
        zero_series(&self.redis_commands, [node]);
        zero_series(&self.redis_errors, [node]);
    }

    /// The `user_id` label value for a user: its id while fewer than the limit are tracked, else "other".
    pub fn user_label(&self, user: UserId) -> String {
        self.user_labels.label(user)
    }

    /// The registry's content in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Creates the series of each label value in `values` at 0 (a counter that already exists keeps its
/// count). The Prometheus instrumentation guide asks for label values known in advance to exist
/// from the start: until then `rate()` and alerts see "no data", not 0, and a first error makes a
/// new series appear instead of a counter move. Each owner of a label's values calls this once it
/// knows them (error kinds at connect, nodes as the topology names them, outcomes at construction).
pub fn zero_series<'a>(vec: &IntCounterVec, values: impl IntoIterator<Item = &'a str>) {
    for value in values {
        vec.with_label_values(&[value]);
    }
}

/// Bounded set of users that get their own label value.
struct UserLabels {
    limit: usize,
    seen: Mutex<HashSet<UserId>>,
}

impl UserLabels {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn label(&self, user: UserId) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&user) || (seen.len() < self.limit && seen.insert(user)) {
            user.to_string()
        } else {
            OTHER_USERS.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_labels_stop_growing_at_the_limit() {
        let metrics = Metrics::new(2);
        let labels: Vec<String> = [1, 2, 3, 1, 4]
            .into_iter()
            .map(|id| metrics.user_label(UserId::from_trusted(id)))
            .collect();
        assert_eq!(labels, ["1", "2", "other", "1", "other"]);
    }
}
