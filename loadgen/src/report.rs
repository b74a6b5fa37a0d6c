//! The report of a run: a table for people, JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{Load, Plan};
use crate::record::{Recorder, Status};
use crate::scrape::ServiceDelta;

/// Everything one run measured (warm-up excluded).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Open loop: the requested rate.
    pub target_rate: Option<f64>,
    /// Closed loop: the number of workers.
    pub concurrency: Option<usize>,
    pub users: String,
    pub offsets: String,
    pub limit: u32,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// From the start of the measured phase to its last response.
    pub elapsed_secs: f64,
    /// Requests of the measured phase, sent or not.
    pub requests: u64,
    /// Requests that got an HTTP response (any status).
    pub responses: u64,
    /// Responses per second of `elapsed_secs`.
    pub requests_per_sec: f64,
    pub latency_ms: Latency,
    /// Open loop: how late loadgen itself handed requests to the client after their due time
    /// (tokio's timer fires on whole milliseconds; a starved CPU adds more). Part of `latency_ms`.
    pub send_lag_ms: Option<Latency>,
    /// Requests by outcome: HTTP status code, `timeout`, `error`, `not_sent`.
    pub statuses: BTreeMap<String, u64>,
    /// Responses by `X-Cache` header (`none` without one).
    pub x_cache: BTreeMap<String, u64>,
    /// Share of responses per `X-Cache` value.
    pub x_cache_share: BTreeMap<String, f64>,
    /// The ten most requested users and their share of all requests.
    pub top_users: Vec<UserShare>,
    pub mean_body_bytes: f64,
    /// What the service's `/metrics` moved by during the measured phase.
    pub service: Option<ServiceDelta>,
    /// Why `service` is missing (e.g. a static server has no `/metrics`).
    pub service_unavailable: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds, in milliseconds (all 0 when empty).
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One user's part of the load.
#[derive(Debug, Clone, Serialize)]
pub struct UserShare {
    pub user: u64,
    pub requests: u64,
    pub share: f64,
}

impl Report {
    /// Builds the report of the measured phase.
    pub fn new(
        plan: &Plan,
        recorder: &Recorder,
        elapsed: Duration,
        service: Result<ServiceDelta, String>,
    ) -> Self {
        let latency = Latency::of(&recorder.latency_us);
        let send_lag_ms = (matches!(plan.load, Load::Open { .. })
            && !recorder.send_lag_us.is_empty())
        .then(|| Latency::of(&recorder.send_lag_us));
        let requests = recorder.total();
        let responses = recorder.responses();
        let mut users: Vec<(u64, u64)> = recorder.users.iter().map(|(&u, &n)| (u, n)).collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top_users = users
            .into_iter()
            .take(10)
            .map(|(user, n)| UserShare {
                user,
                requests: n,
                share: share(n, requests),
            })
            .collect();
        let (mode, target_rate, concurrency) = match plan.load {
            Load::Open { rate, .. } => ("open", Some(rate), None),
            Load::Closed { concurrency } => ("closed", None, Some(concurrency)),
        };
        let (service, service_unavailable) = match service {
            Ok(delta) => (Some(delta), None),
            Err(reason) => (None, Some(reason)),
        };
        Self {
            url: plan.base_url.to_string(),
            mode,
            target_rate,
            concurrency,
            users: plan.users.to_string(),
            offsets: match (plan.endpoint, &plan.cursor) {
                (_, Some(cursor)) => format!("after cursor {cursor}"),
                (crate::cli::Endpoint::Feed, None) => "home feed, first pages".to_owned(),
                (crate::cli::Endpoint::Posts, None) => plan.offsets.to_string(),
            },
            limit: plan.limit,
            warmup_secs: plan.warmup.as_secs_f64(),
            duration_secs: plan.duration.as_secs_f64(),
            elapsed_secs: elapsed.as_secs_f64(),
            requests,
            responses,
            requests_per_sec: if elapsed.is_zero() {
                0.0
            } else {
                responses as f64 / elapsed.as_secs_f64()
            },
            latency_ms: latency,
            send_lag_ms,
            statuses: recorder
                .statuses
                .iter()
                .map(|(status, n)| (status.label(), *n))
                .collect(),
            x_cache_share: recorder
                .cache
                .iter()
                .map(|(k, &n)| (k.clone(), share(n, responses)))
                .collect(),
            x_cache: recorder.cache.clone(),
            top_users,
            mean_body_bytes: if responses == 0 {
                0.0
            } else {
                recorder.body_bytes as f64 / responses as f64
            },
            service,
            service_unavailable,
        }
    }

    /// Requests that ended with `status`.
    pub fn status(&self, status: Status) -> u64 {
        self.statuses.get(&status.label()).copied().unwrap_or(0)
    }

    /// The human-readable table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let load = match (self.target_rate, self.concurrency) {
            (Some(rate), _) => format!("open loop at {rate} req/s (latency from the due time)"),
            (_, Some(n)) => format!("closed loop, {n} workers (latency from the send time)"),
            _ => String::new(),
        };
        let _ = writeln!(out, "loadgen  {}  {load}", self.url);
        let _ = writeln!(
            out,
            "         {}, offsets {}, limit {}; warm-up {:.1}s excluded, measured {:.2}s",
            self.users, self.offsets, self.limit, self.warmup_secs, self.elapsed_secs
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "requests  {:>10}   responses {:>10}   throughput {:>10.1} req/s   body {:.0} B",
            self.requests, self.responses, self.requests_per_sec, self.mean_body_bytes
        );
        let l = self.latency_ms;
        let _ = writeln!(
            out,
            "latency   p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   p99.9 {:.3} ms   max {:.3} ms   mean {:.3} ms",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if let Some(lag) = self.send_lag_ms {
            let _ = writeln!(
                out,
                "send lag  p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   (due time to send, loadgen's own; included above)",
                lag.p50, lag.p99, lag.max
            );
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        let _ = writeln!(out, "status    {}", statuses.join("   "));
        let cache: Vec<String> = self
            .x_cache
            .iter()
            .map(|(value, n)| format!("{value}: {n} ({:.1}%)", 100.0 * self.x_cache_share[value]))
            .collect();
        let _ = writeln!(out, "x-cache   {}", cache.join("   "));
        let users: Vec<String> = self
            .top_users
            .iter()
            .map(|u| format!("{}: {:.1}%", u.user, 100.0 * u.share))
            .collect();
        let _ = writeln!(out, "top users {}", users.join("  "));
        let _ = writeln!(out);
        match (&self.service, &self.service_unavailable) {
            (Some(service), _) => render_service(&mut out, service),
            (None, Some(reason)) => {
                let _ = writeln!(out, "service metrics unavailable: {reason}");
            }
            (None, None) => {}
        }
        out
    }
}

fn render_service(out: &mut String, service: &ServiceDelta) {
    let pages: Vec<String> = service
        .pages
        .iter()
        .map(|(outcome, n)| format!("{outcome}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "service   pages {}   ({})",
        service.total_pages(),
        pages.join("   ")
    );
    let queries: Vec<String> = service
        .db_queries
        .iter()
        .map(|(query, n)| format!("{query}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "postgres  {:.3} queries per page   ({})",
        service.db_queries_per_page,
        if queries.is_empty() {
            "none".to_owned()
        } else {
            queries.join("   ")
        }
    );
    if !service.cache_errors.is_empty() {
        let errors: Vec<String> = service
            .cache_errors
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        let _ = writeln!(out, "cache errors {}", errors.join("   "));
    }
    if service.redis_nodes.is_empty() {
        let _ = writeln!(out, "redis     no commands (cache off or idle)");
        return;
    }
    let most = |key: fn(&crate::scrape::NodeLoad) -> u64| {
        service.redis_nodes.iter().map(key).max().unwrap_or(0)
    };
    let most_commands = most(|n| n.commands);
    let most_round_trips = most(|n| n.round_trips);
    let pages = service.total_pages().max(1) as f64;
    let _ = writeln!(
        out,
        "redis     {:<22} {:>10} {:>8} {:>12} {:>9} {:>7}",
        "node", "commands", "share", "round trips", "per page", "errors"
    );
    for node in &service.redis_nodes {
        let _ = writeln!(
            out,
            "          {:<22} {:>10} {:>7.1}% {:>12} {:>9.2} {:>7}{}",
            node.node,
            node.commands,
            100.0 * node.command_share,
            node.round_trips,
            node.commands as f64 / pages,
            node.errors,
            hottest_marks(
                service.redis_nodes.len() > 1,
                node.commands == most_commands,
                node.round_trips == most_round_trips
            )
        );
    }
}

/// Marks the node that got the most commands and the one that got the most round trips: post
/// objects spread evenly, so a hot user's page key shows in round trips first.
fn hottest_marks(several: bool, most_commands: bool, most_round_trips: bool) -> &'static str {
    match (several, most_commands, most_round_trips) {
        (false, _, _) => "",
        (true, true, true) => "  <- most commands and round trips",
        (true, true, false) => "  <- most commands",
        (true, false, true) => "  <- most round trips (hot page keys)",
        (true, false, false) => "",
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
