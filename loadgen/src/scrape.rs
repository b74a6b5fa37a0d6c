//! The service's side of a run: `/metrics` read before and after the measured phase.
//!
//! Only counters and histogram buckets are used, as differences, so the service may have served
//! anything before the run. Names are the service's (see `src/metrics.rs` of hotfeed):
//! `feed_pages_total{cache}`, `db_queries_total{query}`, `redis_commands_total{node}`,
//! `redis_round_trips_total{node}`, `redis_errors_total{node}`, `cache_errors_total{kind}`, and of
//! the home feed `feed_sources_total{source}`, `feed_celebrity_pulls_total`,
//! `feed_rebuilds_total{box}`, `feed_fanout_repairs_total` and the histograms
//! `feed_fanout_size` and `feed_fanout_lag_seconds`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{ensure, Context as _};
use serde::Serialize;

/// A metric's label set.
type Labels = BTreeMap<String, String>;

/// One scrape: metric name -> every series of it, as `(labels, value)`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    series: HashMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    /// Reads `{base}/metrics`.
    ///
    /// # Errors
    /// The endpoint did not answer 200 (a static server has none), or holds no samples.
    pub async fn fetch(client: &reqwest::Client, base: &str) -> anyhow::Result<Self> {
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        ensure!(
            response.status().is_success(),
            "GET {url} answered {}",
            response.status()
        );
        let text = response.text().await.context("reading /metrics")?;
        let scrape = Self::parse(&text);
        ensure!(
            !scrape.series.is_empty(),
            "GET {url} holds no Prometheus samples"
        );
        Ok(scrape)
    }

    /// Parses the Prometheus text format; lines it cannot read are skipped.
    pub fn parse(text: &str) -> Self {
        let mut series: HashMap<String, Vec<_>> = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, labels, value)) = parse_sample(line) else {
                continue;
            };
            series.entry(name).or_default().push((labels, value));
        }
        Self { series }
    }

    /// Sum of `name` over all its series, per value of `label` (missing metric: empty map).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (labels, value) in self.series.get(name).into_iter().flatten() {
            let key = labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_default() += value;
        }
        out
    }

    /// Sum of `name` over the series whose labels include every `(label, value)` of `matching`;
    /// `None` when no series matches (the metric or that label set was never recorded).
    pub fn get(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (labels, value) in self.series.get(name).into_iter().flatten() {
            let selected = matching
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
            if selected {
                *found.get_or_insert(0.0) += value;
            }
        }
        found
    }

    /// Sum of `name` over the series whose labels include every `(label, value)` of `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(labels, _)| {
                matching
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// `name{a="x",b="y"} 12` -> (name, labels, value). Timestamps after the value are ignored.
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let (head, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                Some((&line[open + 1..close], &line[close + 1..])),
            )
        }
        None => (line.split_whitespace().next()?, None),
    };
    let (labels, value_part) = match rest {
        Some((inside, after)) => (parse_labels(inside)?, after),
        None => (BTreeMap::new(), &line[head.len()..]),
    };
    let value = value_part.split_whitespace().next()?.parse().ok()?;
    Some((head.trim().to_owned(), labels, value))
}

fn parse_labels(inside: &str) -> Option<Labels> {
    let mut labels = BTreeMap::new();
    let mut rest = inside.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

/// What the service did during the measured phase, from two scrapes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceDelta {
    /// Pages served, by `X-Cache` outcome (lowercase, as the `cache` label).
    pub pages: BTreeMap<String, u64>,
    /// PostgreSQL queries by kind.
    pub db_queries: BTreeMap<String, u64>,
    /// All PostgreSQL queries divided by all pages served.
    pub db_queries_per_page: f64,
    /// One row per Redis node that was sent anything.
    pub redis_nodes: Vec<NodeLoad>,
    /// Failed cache operations by kind (each served from PostgreSQL).
    pub cache_errors: BTreeMap<String, u64>,
    /// HTTP responses of the page route, by status.
    pub page_responses: BTreeMap<String, u64>,
    /// HTTP responses of `POST /api/v1/posts` (loadgen's writes), by status.
    pub write_responses: BTreeMap<String, u64>,
    /// Home-feed pages by where their ids came from: `inbox`, `pulled`, `database`.
    pub feed_sources: BTreeMap<String, u64>,
    /// Celebrity outboxes read by home-feed pages.
    pub celebrity_pulls: u64,
    /// Inboxes and outboxes rebuilt from PostgreSQL, by kind.
    pub feed_rebuilds: BTreeMap<String, u64>,
    /// Boxes dropped because a fan-out to them failed.
    pub fanout_repairs: u64,
    /// Boxes each post written during the run went to (its outbox, and inboxes unless its author
    /// is a celebrity); `None` when no post was fanned out.
    pub fanout_size: Option<Estimate>,
    /// From a post's commit to the end of its fan-out, in milliseconds; `None` when no post was
    /// fanned out.
    pub fanout_lag_ms: Option<Estimate>,
}

/// What a Prometheus histogram recorded between two scrapes.
///
/// `mean` is exact (the sum over the count); the percentiles are estimated from the bucket counts,
/// interpolating linearly inside the bucket that holds them, as PromQL's `histogram_quantile`
/// does, so they are only as precise as the service's buckets: `p50_le` and `p99_le` are the upper
/// bounds of those buckets, what the counts say for certain (`None`: above the last finite bound,
/// which is then what `p50` or `p99` reads).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p50_le: Option<f64>,
    pub p99_le: Option<f64>,
}

impl Estimate {
    /// The histogram `name` (its `_bucket`, `_sum` and `_count` series) between two scrapes, each
    /// value multiplied by `scale` (1000 turns seconds into milliseconds); `None` if nothing was
    /// observed in between.
    pub fn between(before: &Scrape, after: &Scrape, name: &str, scale: f64) -> Option<Self> {
        let moved = |series: &str| {
            after.get(series, &[]).unwrap_or(0.0) - before.get(series, &[]).unwrap_or(0.0)
        };
        let count = moved(&format!("{name}_count")).round();
        if count < 1.0 {
            return None;
        }
        let bucket = format!("{name}_bucket");
        let old = before.by_label(&bucket, "le");
        let mut buckets: Vec<(f64, f64)> = after
            .by_label(&bucket, "le")
            .into_iter()
            .filter_map(|(le, cumulative)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let moved = cumulative - old.get(&le).copied().unwrap_or(0.0);
                Some((bound, moved.max(0.0)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (p50, p50_le) = bucket_quantile(&buckets, 0.50);
        let (p99, p99_le) = bucket_quantile(&buckets, 0.99);
        let bound = |le: f64| le.is_finite().then_some(scale * le);
        Some(Self {
            count: count as u64,
            mean: scale * moved(&format!("{name}_sum")) / count,
            p50: scale * p50,
            p99: scale * p99,
            p50_le: bound(p50_le),
            p99_le: bound(p99_le),
        })
    }
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets sorted by bound, and the bound of
/// the bucket holding it: linear inside that bucket, from the previous bound (0 for the first
/// bucket); a rank in the `+Inf` bucket answers the highest finite bound.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> (f64, f64) {
    let Some(&(_, total)) = buckets.last() else {
        return (0.0, f64::INFINITY);
    };
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank && cumulative > below {
            if bound.is_infinite() {
                return (lower, bound);
            }
            let estimate = lower + (bound - lower) * (rank - below) / (cumulative - below);
            return (estimate, bound);
        }
        (lower, below) = (bound, cumulative);
    }
    (lower, f64::INFINITY)
}

/// The Redis work one node received.
#[derive(Debug, Clone, Serialize)]
pub struct NodeLoad {
    pub node: String,
    pub commands: u64,
    pub round_trips: u64,
    pub errors: u64,
    /// This node's share of all commands sent.
    pub command_share: f64,
}

/// The route pattern of the posts listing, as the service labels it.
pub const PAGE_ROUTE: &str = "/api/v1/users/{id}/posts";

/// The route pattern loadgen's writes go to.
pub const WRITE_ROUTE: &str = "/api/v1/posts";

impl ServiceDelta {
    /// What moved between `before` and `after`; `page_route` is the route pattern of the listing
    /// the run read (e.g. [`PAGE_ROUTE`]).
    pub fn between(before: &Scrape, after: &Scrape, page_route: &str) -> Self {
        let delta = |name: &str, label: &str| -> BTreeMap<String, u64> {
            let old = before.by_label(name, label);
            after
                .by_label(name, label)
                .into_iter()
                .map(|(key, new)| {
                    let moved = (new - old.get(&key).copied().unwrap_or(0.0)).max(0.0);
                    (key, moved.round() as u64)
                })
                .filter(|(_, moved)| *moved > 0)
                .collect()
        };
        let pages = delta("feed_pages_total", "cache");
        let db_queries = delta("db_queries_total", "query");
        let commands = delta("redis_commands_total", "node");
        let round_trips = delta("redis_round_trips_total", "node");
        let errors = delta("redis_errors_total", "node");
        let total_commands: u64 = commands.values().sum();
        let mut nodes: Vec<&String> = commands
            .keys()
            .chain(round_trips.keys())
            .chain(errors.keys())
            .collect();
        nodes.sort();
        nodes.dedup();
        let redis_nodes = nodes
            .into_iter()
            .map(|node| {
                let get = |m: &BTreeMap<String, u64>| m.get(node).copied().unwrap_or(0);
                NodeLoad {
                    node: node.clone(),
                    commands: get(&commands),
                    round_trips: get(&round_trips),
                    errors: get(&errors),
                    command_share: ratio(get(&commands), total_commands),
                }
            })
            .collect();
        let responses = |method: &str, route: &str| -> BTreeMap<String, u64> {
            let old = status_counts(before, method, route);
            status_counts(after, method, route)
                .into_iter()
                .map(|(status, new)| {
                    let moved = new.saturating_sub(old.get(&status).copied().unwrap_or(0));
                    (status, moved)
                })
                .filter(|(_, moved)| *moved > 0)
                .collect()
        };
        let counter = |name: &str| {
            let moved = after.get(name, &[]).unwrap_or(0.0) - before.get(name, &[]).unwrap_or(0.0);
            moved.max(0.0).round() as u64
        };
        Self {
            db_queries_per_page: ratio(db_queries.values().sum(), pages.values().sum()),
            pages,
            db_queries,
            redis_nodes,
            cache_errors: delta("cache_errors_total", "kind"),
            page_responses: responses("GET", page_route),
            write_responses: responses("POST", WRITE_ROUTE),
            feed_sources: delta("feed_sources_total", "source"),
            celebrity_pulls: counter("feed_celebrity_pulls_total"),
            feed_rebuilds: delta("feed_rebuilds_total", "box"),
            fanout_repairs: counter("feed_fanout_repairs_total"),
            fanout_size: Estimate::between(before, after, "feed_fanout_size", 1.0),
            fanout_lag_ms: Estimate::between(before, after, "feed_fanout_lag_seconds", 1000.0),
        }
    }

    /// Pages served in all.
    pub fn total_pages(&self) -> u64 {
        self.pages.values().sum()
    }
}

fn status_counts(scrape: &Scrape, method: &str, route: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (labels, value) in scrape
        .series
        .get("http_requests_total")
        .into_iter()
        .flatten()
    {
        if labels.get("route").map(String::as_str) == Some(route)
            && labels.get("method").map(String::as_str) == Some(method)
        {
            let status = labels.get("status").cloned().unwrap_or_default();
            *out.entry(status).or_default() += value.round() as u64;
        }
    }
    out
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"
# HELP feed_pages_total Pages of posts served
# TYPE feed_pages_total counter
feed_pages_total{cache="hit"} 10
feed_pages_total{cache="miss"} 2
db_queries_total{query="user_posts_page"} 2
redis_commands_total{node="127.0.0.1:7100"} 100
redis_round_trips_total{node="127.0.0.1:7100"} 10
http_requests_total{method="GET",route="/api/v1/users/{id}/posts",status="200"} 12
http_requests_total{method="GET",route="/metrics",status="200"} 3
post_object_cache_hits_total 500
"#;
    const AFTER: &str = r#"
feed_pages_total{cache="hit"} 40
feed_pages_total{cache="miss"} 2
feed_pages_total{cache="partial"} 5
db_queries_total{query="user_posts_page"} 2
db_queries_total{query="posts_by_ids"} 5
redis_commands_total{node="127.0.0.1:7100"} 400
redis_commands_total{node="127.0.0.1:7101"} 100
redis_round_trips_total{node="127.0.0.1:7100"} 40
redis_round_trips_total{node="127.0.0.1:7101"} 35
redis_errors_total{node="127.0.0.1:7101"} 1
http_requests_total{method="GET",route="/api/v1/users/{id}/posts",status="200"} 47
http_requests_total{method="GET",route="/metrics",status="200"} 4
post_object_cache_hits_total 2000
"#;

    #[test]
    fn the_delta_counts_only_what_moved() {
        let delta =
            ServiceDelta::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER), PAGE_ROUTE);
        assert_eq!(
            delta.pages,
            BTreeMap::from([("hit".into(), 30), ("partial".into(), 5)])
        );
        assert_eq!(delta.total_pages(), 35);
        assert_eq!(
            delta.db_queries,
            BTreeMap::from([("posts_by_ids".into(), 5)])
        );
        assert!((delta.db_queries_per_page - 5.0 / 35.0).abs() < 1e-12);
        assert_eq!(delta.page_responses, BTreeMap::from([("200".into(), 35)]));
        let nodes: Vec<(&str, u64, u64, u64)> = delta
            .redis_nodes
            .iter()
            .map(|n| (n.node.as_str(), n.commands, n.round_trips, n.errors))
            .collect();
        assert_eq!(
            nodes,
            [
                ("127.0.0.1:7100", 300, 30, 0),
                ("127.0.0.1:7101", 100, 35, 1)
            ]
        );
        assert!((delta.redis_nodes[0].command_share - 0.75).abs() < 1e-12);
    }

    const FEED_BEFORE: &str = r#"
feed_sources_total{source="inbox"} 5
feed_celebrity_pulls_total 7
feed_fanout_lag_seconds_bucket{le="0.001"} 10
feed_fanout_lag_seconds_bucket{le="0.0025"} 10
feed_fanout_lag_seconds_bucket{le="0.005"} 10
feed_fanout_lag_seconds_bucket{le="+Inf"} 10
feed_fanout_lag_seconds_sum 0.005
feed_fanout_lag_seconds_count 10
feed_fanout_size_bucket{le="1"} 10
feed_fanout_size_bucket{le="10"} 10
feed_fanout_size_bucket{le="100"} 10
feed_fanout_size_bucket{le="+Inf"} 10
feed_fanout_size_sum 10
feed_fanout_size_count 10
http_requests_total{method="POST",route="/api/v1/posts",status="201"} 10
"#;
    /// 100 more posts: 60 fanned out within 1 ms, 30 within 2.5 ms, 9 within 5 ms, 1 slower.
    const FEED_AFTER: &str = r#"
feed_sources_total{source="inbox"} 45
feed_sources_total{source="pulled"} 20
feed_sources_total{source="database"} 3
feed_celebrity_pulls_total 47
feed_rebuilds_total{box="inbox"} 2
feed_fanout_repairs_total 0
feed_fanout_lag_seconds_bucket{le="0.001"} 70
feed_fanout_lag_seconds_bucket{le="0.0025"} 100
feed_fanout_lag_seconds_bucket{le="0.005"} 109
feed_fanout_lag_seconds_bucket{le="+Inf"} 110
feed_fanout_lag_seconds_sum 0.205
feed_fanout_lag_seconds_count 110
feed_fanout_size_bucket{le="1"} 10
feed_fanout_size_bucket{le="10"} 60
feed_fanout_size_bucket{le="100"} 110
feed_fanout_size_bucket{le="+Inf"} 110
feed_fanout_size_sum 3010
feed_fanout_size_count 110
http_requests_total{method="POST",route="/api/v1/posts",status="201"} 110
http_requests_total{method="GET",route="/api/v1/users/{id}/feed",status="200"} 68
"#;

    #[test]
    fn the_feed_delta_has_sources_pulls_and_fan_out_estimated_from_buckets() {
        // Act
        let delta = ServiceDelta::between(
            &Scrape::parse(FEED_BEFORE),
            &Scrape::parse(FEED_AFTER),
            "/api/v1/users/{id}/feed",
        );

        // Assert
        assert_eq!(
            delta.feed_sources,
            BTreeMap::from([
                ("database".into(), 3),
                ("inbox".into(), 40),
                ("pulled".into(), 20)
            ])
        );
        assert_eq!(delta.celebrity_pulls, 40);
        assert_eq!(delta.feed_rebuilds, BTreeMap::from([("inbox".into(), 2)]));
        assert_eq!(delta.fanout_repairs, 0);
        assert_eq!(delta.page_responses, BTreeMap::from([("200".into(), 68)]));
        assert_eq!(delta.write_responses, BTreeMap::from([("201".into(), 100)]));
        let lag = delta.fanout_lag_ms.expect("100 posts were fanned out");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(lag.count, 100);
        assert!(close(lag.mean, 2.0), "0.2 s over 100 posts: {}", lag.mean);
        // Rank 50 of the 60 in (0, 1 ms]: 50/60 of the way; rank 99 is the 9th of 9 in (2.5, 5].
        assert!(close(lag.p50, 50.0 / 60.0), "p50 {}", lag.p50);
        assert!(close(lag.p99, 5.0), "p99 {}", lag.p99);
        assert_eq!(
            (lag.p50_le, lag.p99_le),
            (Some(1.0), Some(5.0)),
            "bucket bounds in ms"
        );
        let size = delta.fanout_size.expect("fan-out sizes");
        assert!(close(size.mean, 30.0), "3000 boxes over 100 posts");
        assert!(
            close(size.p50, 10.0),
            "the 50th post is the last in (1, 10]"
        );
        assert!(
            close(size.p99, 10.0 + 90.0 * 49.0 / 50.0),
            "p99 {}",
            size.p99
        );
        assert_eq!(size.p99_le, Some(100.0));
    }

    #[test]
    fn nothing_fanned_out_is_no_estimate_and_the_inf_bucket_answers_the_last_bound() {
        let scrape = Scrape::parse(FEED_BEFORE);
        assert_eq!(
            Estimate::between(&scrape, &scrape, "feed_fanout_lag_seconds", 1000.0),
            None
        );
        assert_eq!(
            Estimate::between(&scrape, &scrape, "no_such_histogram", 1.0),
            None
        );
        let buckets = [(1.0, 50.0), (2.0, 90.0), (f64::INFINITY, 100.0)];
        assert_eq!(
            bucket_quantile(&buckets, 0.95),
            (2.0, f64::INFINITY),
            "in +Inf: the last finite bound, and no bound above it"
        );
        assert_eq!(
            bucket_quantile(&buckets, 0.25),
            (0.5, 1.0),
            "from 0 in the first bucket"
        );
        assert_eq!(bucket_quantile(&buckets, 0.7), (1.5, 2.0));
        assert_eq!(bucket_quantile(&[], 0.5), (0.0, f64::INFINITY));
    }

    #[test]
    fn samples_with_escaped_labels_and_timestamps_parse() {
        let scrape =
            Scrape::parse("a{x=\"q\\\"uote\",y=\"1,2\"} 3 1700000000\nb 4.5\nbroken{ 1\nc{} 7\n");
        assert_eq!(scrape.sum("a", &[("x", "q\"uote"), ("y", "1,2")]), 3.0);
        assert_eq!(scrape.sum("b", &[]), 4.5);
        assert_eq!(scrape.sum("c", &[]), 7.0);
        assert_eq!(scrape.sum("broken", &[]), 0.0);
    }
}
