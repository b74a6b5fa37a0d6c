//! The service's side of a run: `/metrics` read before and after the measured phase.
//!
//! Only counters are used, as differences, so the service may have served anything before the run.
//! Names are the service's (see `src/metrics.rs` of hotfeed): `feed_pages_total{cache}`,
//! `db_queries_total{query}`, `redis_commands_total{node}`, `redis_round_trips_total{node}`,
//! `redis_errors_total{node}`, `cache_errors_total{kind}`.

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

/// The route pattern of the feed endpoint, as the service labels it.
pub const PAGE_ROUTE: &str = "/api/v1/users/{id}/posts";

impl ServiceDelta {
    /// What moved between `before` and `after`.
    pub fn between(before: &Scrape, after: &Scrape) -> Self {
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
        let page_responses = {
            let old = status_counts(before);
            status_counts(after)
                .into_iter()
                .map(|(status, new)| {
                    let moved = new.saturating_sub(old.get(&status).copied().unwrap_or(0));
                    (status, moved)
                })
                .filter(|(_, moved)| *moved > 0)
                .collect()
        };
        Self {
            db_queries_per_page: ratio(db_queries.values().sum(), pages.values().sum()),
            pages,
            db_queries,
            redis_nodes,
            cache_errors: delta("cache_errors_total", "kind"),
            page_responses,
        }
    }

    /// Pages served in all.
    pub fn total_pages(&self) -> u64 {
        self.pages.values().sum()
    }
}

fn status_counts(scrape: &Scrape) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (labels, value) in scrape
        .series
        .get("http_requests_total")
        .into_iter()
        .flatten()
    {
        if labels.get("route").map(String::as_str) == Some(PAGE_ROUTE)
            && labels.get("method").map(String::as_str) == Some("GET")
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
        let delta = ServiceDelta::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER));
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
