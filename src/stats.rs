//! The live view's numbers (`GET /api/v1/admin/stats`, drawn by `GET /dashboard`).
//!
//! One task samples the service once a second: the deltas of its own counters (read from the
//! metric objects, not from a `/metrics` render), the hot-key report, the client's topology and a
//! health probe of both backends. It renders one JSON snapshot, and every viewer is handed that
//! same snapshot: a request costs a clone of a shared buffer, whatever the number of dashboards
//! open, and the sampling costs O(nodes + top-K) a second whether anyone looks or not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use serde::Serialize;

use crate::feed::{
    CacheHealth, Feed, HotKeyEntry, HotReport, Overall, PostgresHealth, RedisStatus,
};
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// How often the snapshot is renewed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Hot keys and users shown.
const HOT_SHOWN: usize = 10;
/// The route patterns whose latency is the pages' latency.
const PAGE_ROUTES: [&str; 2] = ["/api/v1/users/{id}/posts", "/api/v1/users/{id}/feed"];

/// The latest snapshot, shared by every viewer.
pub struct Stats {
    latest: RwLock<Bytes>,
}

impl Stats {
    /// Stats with an empty first snapshot (`{}`) until the first sample.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: RwLock::new(Bytes::from_static(b"{}")),
        })
    }

    /// The latest snapshot, as JSON.
    pub fn latest(&self) -> Bytes {
        self.latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Samples every [`SAMPLE_EVERY`] until shutdown.
    pub fn spawn(self: &Arc<Self>, tasks: &Tasks, feed: Feed, metrics: Arc<Metrics>) {
        let stats = Arc::clone(self);
        tasks.spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(SAMPLE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = Counters::read(&metrics);
            loop {
                ticks.tick().await;
                let health = feed.health().await;
                let now = Counters::read(&metrics);
                let snapshot = Snapshot::of(&feed, &metrics, &health, &last, &now, started);
                last = now;
                match serde_json::to_vec(&snapshot) {
                    Ok(json) => {
                        *stats
                            .latest
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = json.into();
                    }
                    Err(error) => tracing::error!(%error, "stats snapshot did not serialize"),
                }
            }
        });
    }
}

/// The counters a snapshot is the difference of.
struct Counters {
    at: Instant,
    commands: HashMap<String, f64>,
    round_trips: HashMap<String, f64>,
    errors: HashMap<String, f64>,
    pages: HashMap<String, f64>,
    db_queries: f64,
    cache_errors: f64,
    page_latency: Buckets,
    fanout_lag: Buckets,
    list_hits: HashMap<String, f64>,
    list_misses: HashMap<String, f64>,
    /// Each node's breaker state: the `state` whose series is 1.
    breakers: HashMap<String, String>,
}

/// A histogram's cumulative bucket counts: `(upper bound, count)`, `+Inf` last.
#[derive(Default)]
struct Buckets(Vec<(f64, f64)>);

impl Counters {
    fn read(metrics: &Metrics) -> Self {
        Self {
            at: Instant::now(),
            commands: by_label(&metrics.redis_commands, "node"),
            round_trips: by_label(&metrics.redis_round_trips, "node"),
            errors: by_label(&metrics.redis_errors, "node"),
            pages: by_label(&metrics.pages, "cache"),
            db_queries: total(&by_label(&metrics.db_queries, "kind")),
            cache_errors: total(&by_label(&metrics.cache_errors, "kind")),
            page_latency: Buckets::of(&metrics.http_duration, |labels| {
                labels
                    .get("route")
                    .is_some_and(|route| PAGE_ROUTES.contains(&route.as_str()))
            }),
            fanout_lag: Buckets::of(&metrics.feed_fanout_lag, |_| true),
            list_hits: by_label(&metrics.list_hits, "user_id"),
            list_misses: by_label(&metrics.list_misses, "user_id"),
            breakers: breaker_states(metrics),
        }
    }
}

/// Each node's breaker state, from the gauge whose series is 1 for the current state.
fn breaker_states(metrics: &Metrics) -> HashMap<String, String> {
    let mut states = HashMap::new();
    for family in metrics.redis_breaker_state.collect() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                let pair = metric.get_label().iter().find(|p| p.name() == name)?;
                Some(pair.value().to_owned())
            };
            if metric.get_gauge().get_value() > 0.5 {
                if let (Some(node), Some(state)) = (label("node"), label("state")) {
                    states.insert(node, state);
                }
            }
        }
    }
    states
}

/// The sum of `values`: 0 (not the -0 of an empty `Iterator::sum`, which JSON would show).
fn total<'a>(values: impl IntoIterator<Item = (&'a String, &'a f64)>) -> f64 {
    values.into_iter().fold(0.0, |sum, (_, value)| sum + value)
}

/// A counter family's values by one label (summed over the others).
fn by_label(collector: &impl Collector, label: &str) -> HashMap<String, f64> {
    let mut values = HashMap::new();
    for family in collector.collect() {
        for metric in family.get_metric() {
            let key = metric
                .get_label()
                .iter()
                .find(|pair| pair.name() == label)
                .map(|pair| pair.value().to_owned())
                .unwrap_or_default();
            *values.entry(key).or_default() += metric.get_counter().get_value();
        }
    }
    values
}

impl Buckets {
    /// The buckets of every series of `collector` whose labels `keep` accepts, summed.
    fn of(collector: &impl Collector, keep: impl Fn(&HashMap<String, String>) -> bool) -> Self {
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for family in collector.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<String, String> = metric
                    .get_label()
                    .iter()
                    .map(|pair| (pair.name().to_owned(), pair.value().to_owned()))
                    .collect();
                if !keep(&labels) {
                    continue;
                }
                let histogram = metric.get_histogram();
                let buckets = histogram.get_bucket();
                if sums.is_empty() {
                    sums = buckets
                        .iter()
                        .map(|b| (b.upper_bound(), 0.0))
                        .chain([(f64::INFINITY, 0.0)])
                        .collect();
                }
                for (sum, bucket) in sums.iter_mut().zip(buckets) {
                    sum.1 += bucket.cumulative_count() as f64;
                }
                if let Some(last) = sums.last_mut() {
                    last.1 += histogram.get_sample_count() as f64;
                }
            }
        }
        Self(sums)
    }

    /// The `q` quantile of what was observed between `earlier` and `self`, interpolated inside
    /// its bucket as PromQL's `histogram_quantile` does; `None` when nothing was.
    fn quantile_since(&self, earlier: &Self, q: f64) -> Option<f64> {
        let counts: Vec<(f64, f64)> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, &(bound, count))| (bound, count - earlier.0.get(i).map_or(0.0, |b| b.1)))
            .collect();
        let total = counts.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &counts {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
                return Some(lower.0 + (bound - lower.0) * within);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }

    /// Observations between `earlier` and `self`.
    fn count_since(&self, earlier: &Self) -> f64 {
        let now = self.0.last().map_or(0.0, |b| b.1);
        let then = earlier.0.last().map_or(0.0, |b| b.1);
        now - then
    }
}

#[derive(Serialize)]
struct Snapshot {
    at: DateTime<Utc>,
    interval_secs: f64,
    instance: Instance,
    health: HealthView,
    nodes: Vec<NodeView>,
    hot: HotView,
    pages: PagesView,
    postgres: PostgresView,
    cache: CacheView,
    feed: FeedView,
}

#[derive(Serialize)]
struct Instance {
    version: &'static str,
    uptime_secs: u64,
}

#[derive(Serialize)]
struct HealthView {
    /// `ok`, `degraded`, `down` or `off`.
    redis: &'static str,
    /// `ok` or `down`.
    postgres: &'static str,
    /// `listening`, `down` or `off`.
    l1: &'static str,
    /// `ok`, `degraded` or `down`, as `GET /health`.
    overall: &'static str,
}

#[derive(Serialize)]
struct NodeView {
    node: String,
    /// `master` or `replica`.
    role: &'static str,
    /// A replica's master.
    master: Option<String>,
    slots: Vec<(u16, u16)>,
    /// Whether the master answered this second's ping (`None` for replicas, never pinged).
    up: Option<bool>,
    commands_per_sec: f64,
    round_trips_per_sec: f64,
    errors_per_sec: f64,
    /// The master's circuit breaker (`closed`, `open`, `half_open`); `None` for a replica (only
    /// masters are called).
    breaker: Option<String>,
    /// Takes the most Redis reads of the hottest slots (page hashes, boxes).
    hot: bool,
}

#[derive(Serialize)]
struct HotView {
    window_secs: u64,
    /// As `GET /api/v1/admin/hot` reports them (key, kind, reads, share, slot, node).
    keys: Vec<HotKeyEntry>,
    users: Vec<HotUserView>,
}

#[derive(Serialize)]
struct HotUserView {
    user_id: i64,
    reads: u64,
    /// Cached-list hits over list reads since the start (`None` before any, or past the label
    /// limit, where users share the `other` label).
    list_hit_ratio: Option<f64>,
    node: Option<String>,
}

#[derive(Serialize)]
struct PagesView {
    per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Shares of this second's pages by `X-Cache` tier.
    by_cache: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct PostgresView {
    queries_per_sec: f64,
    queries_per_page: Option<f64>,
}

#[derive(Serialize)]
struct CacheView {
    errors_per_sec: f64,
    reconnects: u64,
    l1_bytes: i64,
    l1_entries: i64,
    l1_listening: bool,
}

#[derive(Serialize)]
struct FeedView {
    fanout_lag_p99_ms: Option<f64>,
    fanouts_per_sec: f64,
}

impl Snapshot {
    fn of(
        feed: &Feed,
        metrics: &Metrics,
        health: &crate::feed::Health,
        last: &Counters,
        now: &Counters,
        started: Instant,
    ) -> Self {
        let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
        let report = feed.hot_report();
        let hottest = hottest_node(&report);
        let (pages, pages_total) = PagesView::of(last, now, secs);
        let queries = (now.db_queries - last.db_queries).max(0.0);
        Self {
            at: Utc::now(),
            interval_secs: secs,
            instance: Instance {
                version: env!("CARGO_PKG_VERSION"),
                uptime_secs: started.elapsed().as_secs(),
            },
            health: HealthView::of(feed, metrics, health),
            nodes: node_views(feed, health, last, now, secs, hottest.as_deref()),
            hot: HotView {
                window_secs: report.window_secs,
                keys: report.keys.iter().take(HOT_SHOWN).cloned().collect(),
                users: hot_users(&report, now),
            },
            pages,
            postgres: PostgresView {
                queries_per_sec: queries / secs,
                queries_per_page: (pages_total > 0.0).then(|| queries / pages_total),
            },
            cache: CacheView {
                errors_per_sec: (now.cache_errors - last.cache_errors).max(0.0) / secs,
                reconnects: metrics.redis_reconnects.get(),
                l1_bytes: metrics.l1_bytes.get(),
                l1_entries: metrics.l1_entries.get(),
                l1_listening: metrics.l1_listening.get() == 1,
            },
            feed: FeedView {
                fanout_lag_p99_ms: ms(now.fanout_lag.quantile_since(&last.fanout_lag, 0.99)),
                fanouts_per_sec: now.fanout_lag.count_since(&last.fanout_lag) / secs,
            },
        }
    }
}

impl HealthView {
    fn of(feed: &Feed, metrics: &Metrics, health: &crate::feed::Health) -> Self {
        Self {
            redis: match health.redis_status() {
                RedisStatus::Up => "ok",
                RedisStatus::Degraded => "degraded",
                RedisStatus::Down => "down",
                RedisStatus::Disabled => "off",
            },
            postgres: match health.postgres {
                PostgresHealth::Up(_) => "ok",
                PostgresHealth::Down(_) => "down",
            },
            l1: match (feed.local_tier_on(), metrics.l1_listening.get() == 1) {
                (false, _) => "off",
                (true, true) => "listening",
                (true, false) => "down",
            },
            overall: match health.overall() {
                Overall::Ok => "ok",
                Overall::Degraded => "degraded",
                Overall::Down => "down",
            },
        }
    }
}

impl PagesView {
    /// This interval's pages, and how many there were.
    fn of(last: &Counters, now: &Counters, secs: f64) -> (Self, f64) {
        let page_deltas: BTreeMap<String, f64> = now
            .pages
            .iter()
            .map(|(tier, &count)| {
                let before = last.pages.get(tier).copied().unwrap_or(0.0);
                (tier.clone(), (count - before).max(0.0))
            })
            .collect();
        let pages_total = total(&page_deltas);
        let by_cache = page_deltas
            .into_iter()
            .map(|(tier, count)| {
                let share = if pages_total > 0.0 {
                    count / pages_total
                } else {
                    0.0
                };
                (tier, share)
            })
            .collect();
        let view = Self {
            per_sec: pages_total / secs,
            p50_ms: ms(now.page_latency.quantile_since(&last.page_latency, 0.5)),
            p99_ms: ms(now.page_latency.quantile_since(&last.page_latency, 0.99)),
            by_cache,
        };
        (view, pages_total)
    }
}

/// The per-second rate of `key`'s counter between the two readings.
fn rate(now: &HashMap<String, f64>, last: &HashMap<String, f64>, key: &str, secs: f64) -> f64 {
    let delta = now.get(key).copied().unwrap_or(0.0) - last.get(key).copied().unwrap_or(0.0);
    delta.max(0.0) / secs
}

/// The node taking the most reads of the hottest slots: the page hashes and boxes read from
/// Redis (post objects spread over every slot by design and are not counted by slot).
fn hottest_node(report: &HotReport) -> Option<String> {
    let mut reads_by_node: HashMap<&str, u64> = HashMap::new();
    for entry in &report.slots {
        if let Some(node) = &entry.node {
            *reads_by_node.entry(node).or_default() += entry.reads;
        }
    }
    reads_by_node
        .into_iter()
        .max_by_key(|&(node, reads)| (reads, std::cmp::Reverse(node)))
        .map(|(node, _)| node.to_owned())
}

/// Every node of the client's shards, masters with their ping, sorted by address.
fn node_views(
    feed: &Feed,
    health: &crate::feed::Health,
    last: &Counters,
    now: &Counters,
    secs: f64,
    hottest: Option<&str>,
) -> Vec<NodeView> {
    let pings: HashMap<String, bool> = match &health.redis {
        CacheHealth::Masters(masters) => masters
            .iter()
            .map(|m| (m.node.clone(), m.outcome.is_ok()))
            .collect(),
        _ => HashMap::new(),
    };
    let mut nodes = Vec::new();
    for shard in feed.shards() {
        let view = |node: &str, role, master: Option<String>, slots, up| NodeView {
            node: node.to_owned(),
            role,
            master,
            slots,
            up,
            commands_per_sec: rate(&now.commands, &last.commands, node, secs),
            round_trips_per_sec: rate(&now.round_trips, &last.round_trips, node, secs),
            errors_per_sec: rate(&now.errors, &last.errors, node, secs),
            // Only masters are called: a replica's breaker is what it was when it last was one.
            breaker: (role == "master")
                .then(|| now.breakers.get(node).cloned())
                .flatten(),
            hot: hottest == Some(node),
        };
        let up = pings.get(&shard.master).copied();
        nodes.push(view(&shard.master, "master", None, shard.slots.clone(), up));
        for replica in &shard.replicas {
            nodes.push(view(
                replica,
                "replica",
                Some(shard.master.clone()),
                Vec::new(),
                None,
            ));
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    nodes
}

/// The hottest users, with their cached-list hit ratio since the start.
fn hot_users(report: &HotReport, now: &Counters) -> Vec<HotUserView> {
    report
        .users
        .iter()
        .take(HOT_SHOWN)
        .map(|user| {
            let label = user.user_id.get().to_string();
            let hits = now.list_hits.get(&label).copied();
            let misses = now.list_misses.get(&label).copied();
            let list_hit_ratio = match (hits, misses) {
                (None, None) => None,
                (hits, misses) => {
                    let (hits, misses) = (hits.unwrap_or(0.0), misses.unwrap_or(0.0));
                    (hits + misses > 0.0).then(|| hits / (hits + misses))
                }
            };
            HotUserView {
                user_id: user.user_id.get(),
                reads: user.reads,
                list_hit_ratio,
                node: user.node.clone(),
            }
        })
        .collect()
}

/// Seconds as milliseconds, rounded to a microsecond.
fn ms(seconds: Option<f64>) -> Option<f64> {
    seconds.map(|s| (s * 1e6).round() / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(counts: &[(f64, f64)]) -> Buckets {
        Buckets(counts.to_vec())
    }

    #[test]
    fn quantiles_come_from_the_observations_between_two_samples() {
        let earlier = buckets(&[
            (0.001, 10.0),
            (0.01, 10.0),
            (0.1, 10.0),
            (f64::INFINITY, 10.0),
        ]);
        // 100 new observations: 50 up to 1 ms, 49 in (1, 10] ms, 1 in (10, 100] ms.
        let now = buckets(&[
            (0.001, 60.0),
            (0.01, 109.0),
            (0.1, 110.0),
            (f64::INFINITY, 110.0),
        ]);
        let p50 = now.quantile_since(&earlier, 0.5).unwrap();
        assert!((p50 - 0.001).abs() < 1e-12, "p50 {p50}");
        let p99 = now.quantile_since(&earlier, 0.99).unwrap();
        assert!((p99 - 0.01).abs() < 1e-12, "p99 {p99}");
        let p995 = now.quantile_since(&earlier, 0.995).unwrap();
        assert!(p995 > 0.01 && p995 < 0.1, "p99.5 {p995}");
        assert_eq!(now.count_since(&earlier), 100.0);
        assert_eq!(
            earlier.quantile_since(&earlier, 0.5),
            None,
            "nothing observed"
        );
    }

    #[test]
    fn an_observation_past_the_last_bound_reads_as_that_bound() {
        let earlier = buckets(&[(0.5, 0.0), (f64::INFINITY, 0.0)]);
        let now = buckets(&[(0.5, 0.0), (f64::INFINITY, 3.0)]);
        assert_eq!(now.quantile_since(&earlier, 0.99), Some(0.5));
    }
}
