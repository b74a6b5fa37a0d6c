//! Prometheus metrics: defined once, owned by one registry.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::UserId;

/// The `state` label values of `redis_breaker_state`.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// Label value that stands for every user past the label limit.
pub const OTHER_USERS: &str = "other";

/// A metric type, and how one is made from its name, help text and shape (labels, buckets).
trait Declare: prometheus::core::Collector + Clone + 'static {
    type Shape;
    fn declare(name: &str, help: &str, shape: Self::Shape) -> prometheus::Result<Self>;
}

impl Declare for IntCounter {
    type Shape = ();
    fn declare(name: &str, help: &str, (): ()) -> prometheus::Result<Self> {
        Self::new(name, help)
    }
}

impl Declare for IntGauge {
    type Shape = ();
    fn declare(name: &str, help: &str, (): ()) -> prometheus::Result<Self> {
        Self::new(name, help)
    }
}

impl Declare for IntCounterVec {
    type Shape = &'static [&'static str];
    fn declare(name: &str, help: &str, labels: Self::Shape) -> prometheus::Result<Self> {
        Self::new(Opts::new(name, help), labels)
    }
}

impl Declare for IntGaugeVec {
    type Shape = &'static [&'static str];
    fn declare(name: &str, help: &str, labels: Self::Shape) -> prometheus::Result<Self> {
        Self::new(Opts::new(name, help), labels)
    }
}

impl Declare for Histogram {
    type Shape = &'static [f64];
    fn declare(name: &str, help: &str, buckets: Self::Shape) -> prometheus::Result<Self> {
        Self::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
    }
}

impl Declare for HistogramVec {
    type Shape = (&'static [f64], &'static [&'static str]);
    fn declare(name: &str, help: &str, (buckets, labels): Self::Shape) -> prometheus::Result<Self> {
        Self::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
    }
}

/// Makes a metric and registers it in `registry`.
fn register<M: Declare>(registry: &Registry, name: &str, help: &str, shape: M::Shape) -> M {
    let metric =
        M::declare(name, help, shape).expect("metric names, labels and buckets are valid literals");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// Declares the [`Metrics`] struct and its constructor from one table: each metric once, as its
/// field (with its doc), type, Prometheus name, help text and shape.
macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = ($name:literal, $help:literal, $shape:expr $(,)?),)*) => {
        /// All metrics of the service.
        pub struct Metrics {
            registry: Registry,
            user_labels: UserLabels,
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Metrics {
            /// Registers every metric in a fresh registry.
            ///
            /// `user_label_limit` bounds the distinct `user_id` label values; later users share
            /// `"other"`.
            pub fn new(user_label_limit: usize) -> Self {
                let registry = Registry::new();
                Self {
                    user_labels: UserLabels::new(user_label_limit),
                    $($field: register::<$ty>(&registry, $name, $help, $shape),)*
                    registry,
                }
            }
        }
    };
}

// A declarative table, longer than a function may be: one entry a metric.
metrics! {
    /// Page-of-ids cache hits per user (`user_id` bounded).
    list_hits: IntCounterVec = (
        "post_list_cache_hits_total",
        "Total hits for post list cache",
        &["user_id"],
    ),
    /// Page-of-ids cache misses per user (`user_id` bounded).
    list_misses: IntCounterVec = (
        "post_list_cache_misses_total",
        "Total misses for post list cache",
        &["user_id"],
    ),
    /// Post objects found in the cache.
    object_hits: IntCounter = (
        "post_object_cache_hits_total",
        "Total hits for post object cache",
        (),
    ),
    /// Post objects not found in the cache (read from PostgreSQL).
    object_misses: IntCounter = (
        "post_object_cache_misses_total",
        "Total misses for post object cache",
        (),
    ),
    /// How each page request was served: hit, partial, miss or bypass.
    pages: IntCounterVec = (
        "feed_pages_total",
        "Pages of posts served, by how the cache served them",
        &["cache"],
    ),
    /// HTTP requests by method, route pattern and status.
    http_requests: IntCounterVec = (
        "http_requests_total",
        "HTTP requests by route pattern and status",
        &["method", "route", "status"],
    ),
    /// HTTP latency by method, route pattern and status.
    http_duration: HistogramVec = (
        "http_request_duration_seconds",
        "HTTP request latency by route pattern",
        (
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0] as &[_],
            &["method", "route", "status"] as &[_],
        ),
    ),
    /// Failed cache operations by kind (timeout, unavailable, io, moved, cluster_down, decode, ...).
    cache_errors: IntCounterVec = (
        "cache_errors_total",
        "Cache operations that failed and were served from PostgreSQL, by kind",
        &["kind"],
    ),
    /// Writes whose listing invalidation failed after its retry (pages then live out their TTL).
    cache_invalidation_failures: IntCounter = (
        "cache_invalidation_failures_total",
        "Writes whose cached pages could not be invalidated; they expire within CACHE_LIST_TTL_SECS",
        (),
    ),
    /// Round trips (pipelines) sent to each Redis node.
    redis_round_trips: IntCounterVec = (
        "redis_round_trips_total",
        "Round trips (pipelines or single commands) sent to each Redis node",
        &["node"],
    ),
    /// Commands sent to each Redis node.
    redis_commands: IntCounterVec = (
        "redis_commands_total",
        "Commands sent to each Redis node",
        &["node"],
    ),
    /// Failed round trips to each Redis node (errors and timeouts).
    redis_errors: IntCounterVec = (
        "redis_errors_total",
        "Round trips to each Redis node that failed or timed out",
        &["node"],
    ),
    /// Each node's circuit breaker: 1 for its current state (closed, open, half_open), 0 for the
    /// others; one series per state for every node the topology named.
    redis_breaker_state: IntGaugeVec = (
        "redis_breaker_state",
        "Circuit breaker of each Redis node: 1 for its current state (closed, open, half_open), else 0",
        &["node", "state"],
    ),
    /// Calls failed at once because their node's breaker was open.
    redis_breaker_rejections: IntCounterVec = (
        "redis_breaker_rejections_total",
        "Calls to a Redis node failed at once (a miss) because its circuit breaker was open",
        &["node"],
    ),
    /// Times each node's breaker opened (a failed half-open probe counts again).
    redis_breaker_opens: IntCounterVec = (
        "redis_breaker_opens_total",
        "Times the circuit breaker of each Redis node opened",
        &["node"],
    ),
    /// Times the cluster connection was rebuilt.
    redis_reconnects: IntCounter = (
        "redis_reconnects_total",
        "Times the Redis Cluster connection was rebuilt",
        (),
    ),
    /// Nodes one multi-key cache operation touched.
    cache_nodes_per_op: Histogram = (
        "cache_nodes_per_operation",
        "Redis nodes touched by one multi-key cache operation",
        &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
    ),
    /// Keys in one per-node batch.
    cache_keys_per_batch: Histogram = (
        "cache_keys_per_batch",
        "Keys in one per-node pipeline",
        &[1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 100.0],
    ),
    /// PostgreSQL queries by kind.
    db_queries: IntCounterVec = ("db_queries_total", "PostgreSQL queries by kind", &["query"]),
    /// Requests that waited for another request's PostgreSQL read of the same thing, by kind.
    coalesced_waits: IntCounterVec = (
        "coalesced_waits_total",
        "Misses that waited for a concurrent request's PostgreSQL read instead of their own",
        &["kind"],
    ),
    /// Requests answered 503 `overloaded` because `DB_MAX_INFLIGHT` were already on PostgreSQL.
    db_shed: IntCounter = (
        "db_shed_total",
        "Requests shed (503 overloaded) because DB_MAX_INFLIGHT were waiting on PostgreSQL",
        (),
    ),
    /// Boxes (inboxes and the author's outbox) one new or deleted post was written to.
    feed_fanout_size: Histogram = (
        "feed_fanout_size",
        "Boxes one new or deleted post was written to (inboxes and the author's outbox)",
        &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
    ),
    /// Time from a post's commit to the end of its fan-out.
    feed_fanout_lag: Histogram = (
        "feed_fanout_lag_seconds",
        "Time from a post's commit until its fan-out to followers' inboxes ended",
        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
    ),
    /// Home-feed pages by where their ids came from: inbox, pulled (celebrity outboxes), database.
    feed_sources: IntCounterVec = (
        "feed_sources_total",
        "Home-feed pages by where their ids came from",
        &["source"],
    ),
    /// Celebrity outboxes read by home-feed pages.
    feed_celebrity_pulls: IntCounter = (
        "feed_celebrity_pulls_total",
        "Celebrity outboxes read by home-feed pages",
        (),
    ),
    /// Boxes rebuilt from PostgreSQL, by kind (inbox, outbox).
    feed_rebuilds: IntCounterVec = (
        "feed_rebuilds_total",
        "Inboxes and outboxes rebuilt from PostgreSQL",
        &["box"],
    ),
    /// Boxes dropped because a fan-out to them failed (they are rebuilt on their next read).
    feed_fanout_repairs: IntCounter = (
        "feed_fanout_repairs_total",
        "Boxes dropped after a failed fan-out, to be rebuilt on their next read",
        (),
    ),
    /// Requests refused with 429, by limit (writes_per_user, writes_per_address, reads_per_address).
    rate_limited: IntCounterVec = (
        "http_rate_limited_total",
        "Requests refused with 429 by a rate limit, by limit",
        &["limit"],
    ),
    /// Keys each rate limiter holds after its last cleanup (its memory), by limit.
    rate_limiter_keys: IntGaugeVec = (
        "rate_limiter_keys",
        "Users or client addresses each rate limiter holds after its last cleanup",
        &["limit"],
    ),
    /// In-process tier hits, by kind (page, post, outbox).
    l1_hits: IntCounterVec = ("l1_hits_total", "In-process tier hits, by kind of entry", &["kind"]),
    /// In-process tier misses (absent, expired or invalidated), by kind.
    l1_misses: IntCounterVec = (
        "l1_misses_total",
        "In-process tier misses (absent, expired or invalidated), by kind of entry",
        &["kind"],
    ),
    /// In-process tier entries removed, by cause (size, expired, invalidated).
    l1_evictions: IntCounterVec = (
        "l1_evictions_total",
        "In-process tier entries removed, by cause",
        &["cause"],
    ),
    /// Bytes the in-process tier holds (approximate: values plus a fixed cost per entry).
    l1_bytes: IntGauge = ("l1_bytes", "Bytes the in-process tier holds (approximate)", ()),
    /// Entries the in-process tier holds.
    l1_entries: IntGauge = ("l1_entries", "Entries the in-process tier holds", ()),
    /// 1 while the invalidation channel is subscribed (the tier serves), else 0.
    l1_listening: IntGauge = (
        "l1_listening",
        "1 while the invalidation channel is subscribed and the in-process tier serves",
        (),
    ),
    /// Invalidation messages published, by outcome (sent, failed).
    invalidations_sent: IntCounterVec = (
        "l1_invalidations_sent_total",
        "Invalidation messages published to the other instances, by outcome",
        &["outcome"],
    ),
    /// Invalidation messages received from the channel (this instance's own included).
    invalidations_received: IntCounter = (
        "l1_invalidations_received_total",
        "Invalidation messages received from the channel",
        (),
    ),
    /// Time from an invalidation's publish to its receipt (clocks of both instances).
    invalidation_lag: Histogram = (
        "l1_invalidation_lag_seconds",
        "Time from an invalidation's publish to its receipt",
        &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
    ),
    /// Times the invalidation channel went down (every entry was dropped).
    invalidation_channel_drops: IntCounter = (
        "l1_channel_drops_total",
        "Times the invalidation channel went down and the in-process tier was emptied",
        (),
    ),
    /// Cached pages refreshed in the background shortly before they expired.
    early_refreshes: IntCounterVec = (
        "cache_early_refreshes_total",
        "Cached pages refreshed in the background before they expired, by outcome",
        &["outcome"],
    ),
    /// Reads in the hot-key window of the hottest keys, by rank (1 is the hottest): at most
    /// `HOT_TOP_K` series whatever clients ask for. Which key holds a rank is in
    /// `GET /api/v1/admin/hot` (a key label would let clients mint series).
    hot_key_reads: IntGaugeVec = (
        "hot_key_reads",
        "Reads in the hot-key window of the hottest cache keys, by rank (1 is the hottest; the keys are in /api/v1/admin/hot)",
        &["rank"],
    ),
}

impl Metrics {
    /// Creates the series of `node` in the per-node Redis counters at 0, once the cluster's topology
    /// names it: a `rate()` or an alert then sees 0 instead of "no data" until the node's first error.
    pub fn node_known(&self, node: &str) {
        zero_series(&self.redis_round_trips, [node]);
        zero_series(&self.redis_commands, [node]);
        zero_series(&self.redis_errors, [node]);
        zero_series(&self.redis_breaker_rejections, [node]);
        zero_series(&self.redis_breaker_opens, [node]);
    }

    /// Sets `node`'s breaker series: 1 for `state` (one of [`BREAKER_STATES`]), 0 for the others,
    /// so every state's series of a known node exists.
    pub fn breaker_state_is(&self, node: &str, state: &str) {
        for each in BREAKER_STATES {
            self.redis_breaker_state
                .with_label_values(&[node, each])
                .set(i64::from(each == state));
        }
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
