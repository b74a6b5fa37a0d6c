//! The report of a run: a table for people, JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{Endpoint, Load, Plan};
use crate::client::ClientLoad;
use crate::outbox::HotOutbox;
use crate::record::{Recorder, Status, WalkCounts};
use crate::runner::Measured;
use crate::scrape::{NodeLoad, ServiceDelta};

/// Everything one run measured (warm-up excluded).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Open loop: the requested rate (home-feed walks: readers per second).
    pub target_rate: Option<f64>,
    /// Closed loop: the number of workers.
    pub concurrency: Option<usize>,
    pub users: String,
    /// The page mix of a user's posts (`0=80,...`), `after cursor ...`, or the home feed's walks.
    pub offsets: String,
    pub limit: u32,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// From the start of the measured phase to its last response.
    pub elapsed_secs: f64,
    /// Read requests of the measured phase (pages), sent or not.
    pub requests: u64,
    /// Reads that got an HTTP response (any status).
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
    /// Home feed: responses by `X-Feed-Source` header (`inbox`, `inbox+pulled`, `database`).
    pub x_feed_source: BTreeMap<String, u64>,
    /// Share of responses per `X-Feed-Source` value.
    pub x_feed_source_share: BTreeMap<String, f64>,
    /// Home feed: how deep the readers' cursor walks went.
    pub walks: Option<Walks>,
    /// The ten most requested users and their share of all requests.
    pub top_users: Vec<UserShare>,
    pub mean_body_bytes: f64,
    /// What loadgen itself spent on the measured phase, and whether it, not the service, set
    /// the rate (`client.client_bound`).
    pub client: ClientLoad,
    /// `--write-rate`: the posts written beside the reads.
    pub writes: Option<Writes>,
    /// What the service's `/metrics` moved by during the measured phase.
    pub service: Option<ServiceDelta>,
    /// Why `service` is missing (e.g. a static server has no `/metrics`).
    pub service_unavailable: Option<String>,
    /// Home feed: the most followed account and the node holding its outbox.
    pub hot_outbox: Option<HotOutbox>,
    /// Home feed: why `hot_outbox` is missing.
    pub hot_outbox_unavailable: Option<String>,
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

    /// Open loop: the send lag, if any request was sent.
    fn send_lag(load: bool, recorder: &Recorder) -> Option<Self> {
        (load && !recorder.send_lag_us.is_empty()).then(|| Self::of(&recorder.send_lag_us))
    }
}

/// One user's part of the load.
#[derive(Debug, Clone, Serialize)]
pub struct UserShare {
    pub user: u64,
    pub requests: u64,
    pub share: f64,
}

/// The home feed's cursor walks: each reader reads pages one after another, following
/// `next_cursor`, as deep as the `--depths` draw says.
#[derive(Debug, Clone, Serialize)]
pub struct Walks {
    /// `--depths`: depth=weight pairs.
    pub depths: String,
    /// The deepest walk `--depths` can draw, in pages.
    pub max_depth: u32,
    /// Walks started, however they ended.
    pub walks: u64,
    /// How they ended: `complete`, `feed_ended` (no next page before the drawn depth), `failed`
    /// (a page was not a 200), `stopped` (`--max-requests`).
    pub ends: WalkCounts,
    /// Pages read (200) at each depth: 1 is the first page.
    pub pages_by_depth: BTreeMap<u32, u64>,
    /// The deepest page read.
    pub deepest: u32,
    /// Pages read per walk.
    pub mean_pages: f64,
}

/// The posts written beside the reads (`--write-rate`), open loop.
#[derive(Debug, Clone, Serialize)]
pub struct Writes {
    pub target_rate: f64,
    /// Posts due in the measured phase, sent or not.
    pub requests: u64,
    pub responses: u64,
    /// `201 Created` responses.
    pub created: u64,
    /// Responses per second of the phase.
    pub writes_per_sec: f64,
    /// From each post's due time to the end of its response (the fan-out is done before the 201).
    pub latency_ms: Latency,
    pub send_lag_ms: Option<Latency>,
    /// Posts by outcome: HTTP status code, `timeout`, `error`, `not_sent`.
    pub statuses: BTreeMap<String, u64>,
    /// The ten authors who wrote most and their share of all writes.
    pub top_authors: Vec<UserShare>,
}

impl Report {
    /// Builds the report of the measured phase.
    pub fn new(
        plan: &Plan,
        measured: &Measured,
        client: ClientLoad,
        service: Result<ServiceDelta, String>,
        hot_outbox: Option<Result<HotOutbox, String>>,
    ) -> Self {
        let recorder = &measured.reads;
        let elapsed = measured.elapsed;
        let open = matches!(plan.load, Load::Open { .. });
        let requests = recorder.total();
        let responses = recorder.responses();
        let (mode, target_rate, concurrency) = match plan.load {
            Load::Open { rate, .. } => ("open", Some(rate), None),
            Load::Closed { concurrency } => ("closed", None, Some(concurrency)),
        };
        let (service, service_unavailable) = match service {
            Ok(delta) => (Some(delta), None),
            Err(reason) => (None, Some(reason)),
        };
        let (hot_outbox, hot_outbox_unavailable) = weighed(hot_outbox, service.as_ref());
        let walks = (plan.endpoint == Endpoint::Feed && plan.cursor.is_none())
            .then(|| Walks::of(plan, recorder));
        let writes = plan
            .writes
            .as_ref()
            .zip(measured.writes.as_ref())
            .map(|(load, w)| Writes::of(load.rate, w, elapsed));
        Self {
            url: plan.base_url.to_string(),
            mode,
            target_rate,
            concurrency,
            users: plan.users.to_string(),
            offsets: offsets(plan),
            limit: plan.limit,
            warmup_secs: plan.warmup.as_secs_f64(),
            duration_secs: plan.duration.as_secs_f64(),
            elapsed_secs: elapsed.as_secs_f64(),
            requests,
            responses,
            requests_per_sec: per_sec(responses, elapsed),
            latency_ms: Latency::of(&recorder.latency_us),
            send_lag_ms: Latency::send_lag(open, recorder),
            statuses: statuses(recorder),
            x_cache_share: shares(&recorder.cache, responses),
            x_cache: recorder.cache.clone(),
            x_feed_source_share: shares(&recorder.feed_sources, responses),
            x_feed_source: recorder.feed_sources.clone(),
            walks,
            top_users: top_users(recorder),
            mean_body_bytes: share(recorder.body_bytes, responses),
            client,
            writes,
            service,
            service_unavailable,
            hot_outbox,
            hot_outbox_unavailable,
        }
    }

    /// Requests that ended with `status`.
    pub fn status(&self, status: Status) -> u64 {
        self.statuses.get(&status.label()).copied().unwrap_or(0)
    }

    /// The human-readable table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let load = match (self.target_rate, self.concurrency, &self.walks) {
            (Some(rate), _, Some(walks)) if walks.max_depth > 1 => format!(
                "open loop at {rate} readers/s, each walking its pages in turn (latency from the due time)"
            ),
            (Some(rate), _, _) => format!("open loop at {rate} req/s (latency from the due time)"),
            (_, Some(n), _) => format!("closed loop, {n} workers (latency from the send time)"),
            _ => String::new(),
        };
        let _ = writeln!(out, "loadgen  {}  {load}", self.url);
        let pages = if self.walks.is_some() || self.offsets.starts_with("after") {
            self.offsets.clone()
        } else {
            format!("offsets {}", self.offsets)
        };
        let _ = writeln!(
            out,
            "         {}, {pages}, limit {}; warm-up {:.1}s excluded, measured {:.2}s",
            self.users, self.limit, self.warmup_secs, self.elapsed_secs
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "requests  {:>10}   responses {:>10}   throughput {:>10.1} req/s   body {:.0} B",
            self.requests, self.responses, self.requests_per_sec, self.mean_body_bytes
        );
        render_latency(
            &mut out,
            "latency",
            &self.latency_ms,
            self.send_lag_ms.as_ref(),
        );
        render_client(&mut out, &self.client);
        let _ = writeln!(out, "status    {}", counts(&self.statuses));
        let _ = writeln!(
            out,
            "x-cache   {}",
            counts_with_shares(&self.x_cache, &self.x_cache_share)
        );
        if !self.x_feed_source.is_empty() {
            let _ = writeln!(
                out,
                "x-feed-source  {}",
                counts_with_shares(&self.x_feed_source, &self.x_feed_source_share)
            );
        }
        if let Some(walks) = &self.walks {
            render_walks(&mut out, walks);
        }
        let _ = writeln!(out, "top users {}", user_shares(&self.top_users));
        if let Some(writes) = &self.writes {
            render_writes(&mut out, writes);
        }
        let _ = writeln!(out);
        match (&self.service, &self.service_unavailable) {
            (Some(service), _) => render_service(&mut out, service, self.hot_outbox.as_ref()),
            (None, Some(reason)) => {
                let _ = writeln!(out, "service metrics unavailable: {reason}");
            }
            (None, None) => {}
        }
        match (&self.hot_outbox, &self.hot_outbox_unavailable) {
            (Some(outbox), _) => render_hot_outbox(&mut out, outbox),
            (None, Some(reason)) => {
                let _ = writeln!(out, "hot outbox unknown: {reason}");
            }
            (None, None) => {}
        }
        out
    }
}

/// What the report says of the pages asked for.
fn offsets(plan: &Plan) -> String {
    match (plan.endpoint, &plan.cursor) {
        (_, Some(cursor)) => format!("after cursor {cursor}"),
        (Endpoint::Feed, None) if plan.depths.max() == 1 => "home feed, first pages".to_owned(),
        (Endpoint::Feed, None) => {
            format!("home feed, walks of {} pages by next_cursor", plan.depths)
        }
        (Endpoint::Posts, None) => plan.offsets.to_string(),
    }
}

/// `n` over the measured phase, per second.
fn per_sec(n: u64, elapsed: std::time::Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

/// The hot outbox's report, its reads weighed against each node's commands when the service's
/// counters were read; or why it is missing.
fn weighed(
    hot_outbox: Option<Result<HotOutbox, String>>,
    service: Option<&ServiceDelta>,
) -> (Option<HotOutbox>, Option<String>) {
    match hot_outbox {
        Some(Ok(mut outbox)) => {
            if let Some(service) = service {
                let commands: Vec<(String, u64)> = service
                    .redis_nodes
                    .iter()
                    .map(|node| (node.node.clone(), node.commands))
                    .collect();
                outbox.weigh(&commands);
            }
            (Some(outbox), None)
        }
        Some(Err(reason)) => (None, Some(reason)),
        None => (None, None),
    }
}

impl Walks {
    fn of(plan: &Plan, recorder: &Recorder) -> Self {
        let pages: u64 = recorder.depths.values().sum();
        let walks = recorder.walks.total();
        Self {
            depths: plan.depths.to_string(),
            max_depth: plan.depths.max(),
            walks,
            ends: recorder.walks,
            pages_by_depth: recorder.depths.clone(),
            deepest: recorder.depths.keys().copied().max().unwrap_or(0),
            mean_pages: share(pages, walks),
        }
    }
}

impl Writes {
    fn of(target_rate: f64, w: &Recorder, elapsed: std::time::Duration) -> Self {
        let responses = w.responses();
        Self {
            target_rate,
            requests: w.total(),
            responses,
            created: w.count(Status::Http(201)),
            writes_per_sec: per_sec(responses, elapsed),
            latency_ms: Latency::of(&w.latency_us),
            send_lag_ms: Latency::send_lag(true, w),
            statuses: statuses(w),
            top_authors: top_users(w),
        }
    }
}

fn render_latency(out: &mut String, label: &str, l: &Latency, lag: Option<&Latency>) {
    let _ = writeln!(
        out,
        "{label:<9} p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   p99.9 {:.3} ms   max {:.3} ms   mean {:.3} ms",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    if let Some(lag) = lag {
        let _ = writeln!(
            out,
            "send lag  p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   (due time to send, loadgen's own; included above)",
            lag.p50, lag.p99, lag.max
        );
    }
}

fn render_walks(out: &mut String, walks: &Walks) {
    let depths: Vec<String> = walks
        .pages_by_depth
        .iter()
        .map(|(depth, n)| format!("{depth}: {n}"))
        .collect();
    let ends = walks.ends;
    let _ = writeln!(
        out,
        "walks     {} readers, {:.2} pages each, deepest page {}   ended: complete {}  feed ended {}  failed {}  stopped {}",
        walks.walks, walks.mean_pages, walks.deepest, ends.complete, ends.feed_ended, ends.failed, ends.stopped
    );
    for (i, line) in depths.chunks(12).enumerate() {
        let label = if i == 0 { "depth" } else { "" };
        let _ = writeln!(out, "{label:<9} {}", line.join("  "));
    }
}

fn render_writes(out: &mut String, writes: &Writes) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "writes    {:>10}   responses {:>10}   throughput {:>10.1} posts/s   (open loop at {} posts/s, POST /api/v1/posts)",
        writes.requests, writes.responses, writes.writes_per_sec, writes.target_rate
    );
    render_latency(
        out,
        "latency",
        &writes.latency_ms,
        writes.send_lag_ms.as_ref(),
    );
    let _ = writeln!(out, "status    {}", counts(&writes.statuses));
    let _ = writeln!(out, "authors   {}", user_shares(&writes.top_authors));
}

fn render_client(out: &mut String, client: &ClientLoad) {
    let _ = writeln!(
        out,
        "client    loadgen CPU {:.2} s (user {:.2} + sys {:.2}) = {:.1} µs per request, {:.2} cores; \
         {} runtime thread(s) busy {:.0}% of the run, {:.2} s waiting for a core (running or \
         waiting {:.0}%)",
        client.user_cpu_secs + client.sys_cpu_secs,
        client.user_cpu_secs,
        client.sys_cpu_secs,
        client.cpu_us_per_request,
        client.cores_used,
        client.threads,
        100.0 * client.busy_share,
        client.run_queue_wait_secs,
        100.0 * client.demand_share
    );
    let _ = writeln!(out, "verdict   {}", client.verdict);
}

fn render_service(out: &mut String, service: &ServiceDelta, hot_outbox: Option<&HotOutbox>) {
    let _ = writeln!(
        out,
        "service   pages {}   ({})",
        service.total_pages(),
        counts(&service.pages)
    );
    render_feed_sources(out, service);
    render_fanout(out, service);
    if !service.write_responses.is_empty() {
        let _ = writeln!(
            out,
            "          POST /api/v1/posts as the service counted it: {}",
            counts(&service.write_responses)
        );
    }
    let _ = writeln!(
        out,
        "postgres  {:.3} queries per page   ({})",
        service.db_queries_per_page,
        if service.db_queries.is_empty() {
            "none".to_owned()
        } else {
            counts(&service.db_queries)
        }
    );
    if !service.cache_errors.is_empty() {
        let _ = writeln!(out, "cache errors {}", counts(&service.cache_errors));
    }
    render_redis_nodes(out, service, hot_outbox);
}

/// The home feed's pages by source, celebrity pulls and inbox rebuilds (nothing for a user's posts).
fn render_feed_sources(out: &mut String, service: &ServiceDelta) {
    if service.feed_sources.is_empty() && service.celebrity_pulls == 0 {
        return;
    }
    let feed_pages: u64 = service.feed_sources.values().sum();
    let rebuilds = if service.feed_rebuilds.is_empty() {
        "none".to_owned()
    } else {
        counts(&service.feed_rebuilds)
    };
    let _ = writeln!(
        out,
        "feed      by source {}   celebrity pulls {} ({:.2} per page)   rebuilds {rebuilds}",
        counts(&service.feed_sources),
        service.celebrity_pulls,
        share(service.celebrity_pulls, feed_pages)
    );
}

/// The posts written: boxes per post and fan-out lag, from the service's histograms.
fn render_fanout(out: &mut String, service: &ServiceDelta) {
    let Some(size) = &service.fanout_size else {
        return;
    };
    // Box counts are whole, and interpolating would invent fractions: the bucket bound is what
    // the counts say. Lags are interpolated, as PromQL's histogram_quantile does.
    let boxes = |value: f64, le: Option<f64>| match le {
        Some(le) => format!("<= {le}"),
        None => format!("> {value}"),
    };
    let ms = |value: f64, le: Option<f64>| match le {
        Some(_) => format!("{value:.3} ms"),
        None => format!("> {value:.0} ms"),
    };
    let lag = service.fanout_lag_ms.as_ref().map_or_else(
        || "no lag recorded".to_owned(),
        |lag| {
            format!(
                "lag p50 {}  p99 {}  mean {:.3} ms",
                ms(lag.p50, lag.p50_le),
                ms(lag.p99, lag.p99_le),
                lag.mean
            )
        },
    );
    let _ = writeln!(
        out,
        "fan-out   {} posts   boxes per post: mean {:.1}  p50 {}  p99 {}   {lag}   repairs {}",
        size.count,
        size.mean,
        boxes(size.p50, size.p50_le),
        boxes(size.p99, size.p99_le),
        service.fanout_repairs
    );
    let _ = writeln!(
        out,
        "          (percentiles from the service's histogram buckets: as fine as they are)"
    );
}

/// Commands, round trips and errors per Redis node, the hot ones marked.
fn render_redis_nodes(out: &mut String, service: &ServiceDelta, hot_outbox: Option<&HotOutbox>) {
    if service.redis_nodes.is_empty() {
        let _ = writeln!(out, "redis     no commands (cache off or idle)");
        return;
    }
    let most = |key: fn(&NodeLoad) -> u64| service.redis_nodes.iter().map(key).max().unwrap_or(0);
    let most_commands = most(|n| n.commands);
    let most_round_trips = most(|n| n.round_trips);
    let hot_keys = if service.feed_sources.is_empty() {
        "hot page keys"
    } else {
        "hot readers' inboxes"
    };
    let pages = service.total_pages().max(1) as f64;
    let _ = writeln!(
        out,
        "redis     {:<22} {:>10} {:>8} {:>12} {:>9} {:>7}",
        "node", "commands", "share", "round trips", "per page", "errors"
    );
    for node in &service.redis_nodes {
        let outbox = hot_outbox
            .filter(|outbox| outbox.node.as_deref() == Some(node.node.as_str()))
            .map(|outbox| format!("outbox of user {}, the most followed", outbox.user));
        let _ = writeln!(
            out,
            "          {:<22} {:>10} {:>7.1}% {:>12} {:>9.2} {:>7}{}",
            node.node,
            node.commands,
            100.0 * node.command_share,
            node.round_trips,
            node.commands as f64 / pages,
            node.errors,
            marks(
                service.redis_nodes.len() > 1,
                node.commands == most_commands,
                node.round_trips == most_round_trips,
                hot_keys,
                outbox,
            )
        );
    }
}

/// Marks the node that got the most commands, the one that got the most round trips (post
/// objects spread evenly, so a hot user's page key, or a hot reader's inbox, shows in round trips
/// first), and the one holding the most followed account's outbox.
fn marks(
    several: bool,
    most_commands: bool,
    most_round_trips: bool,
    hot_keys: &str,
    outbox: Option<String>,
) -> String {
    let mut reasons = Vec::new();
    if several {
        match (most_commands, most_round_trips) {
            (true, true) => reasons.push("most commands and round trips".to_owned()),
            (true, false) => reasons.push("most commands".to_owned()),
            (false, true) => reasons.push(format!("most round trips ({hot_keys})")),
            (false, false) => {}
        }
    }
    reasons.extend(outbox);
    if reasons.is_empty() {
        String::new()
    } else {
        format!("  <- {}", reasons.join("; "))
    }
}

fn render_hot_outbox(out: &mut String, outbox: &HotOutbox) {
    let place = match (&outbox.slot, &outbox.node) {
        (Some(slot), Some(node)) => format!("slot {slot} on {node}"),
        _ => "node unknown".to_owned(),
    };
    let weight = match (outbox.command_share, outbox.vs_other_nodes) {
        (Some(share), Some(ratio)) => format!(
            ": {:.1}% of the commands, {ratio:.2}x the mean of the other nodes",
            100.0 * share
        ),
        (Some(share), None) => format!(": {:.1}% of the commands", 100.0 * share),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "hot outbox user {} ({} followers, the most of users 1..={}): <prefix>:{} in {place}{weight}",
        outbox.user, outbox.followers, outbox.probed, outbox.key
    );
    if let Some(note) = &outbox.node_note {
        let _ = writeln!(out, "          {note}");
    }
}

/// Status labels and their counts.
fn statuses(recorder: &Recorder) -> BTreeMap<String, u64> {
    recorder
        .statuses
        .iter()
        .map(|(status, n)| (status.label(), *n))
        .collect()
}

/// The ten users with the most requests (ties: the lower id first) and their share of all.
fn top_users(recorder: &Recorder) -> Vec<UserShare> {
    let total = recorder.total();
    let mut users: Vec<(u64, u64)> = recorder.users.iter().map(|(&u, &n)| (u, n)).collect();
    users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    users
        .into_iter()
        .take(10)
        .map(|(user, n)| UserShare {
            user,
            requests: n,
            share: share(n, total),
        })
        .collect()
}

fn shares(counts: &BTreeMap<String, u64>, whole: u64) -> BTreeMap<String, f64> {
    counts
        .iter()
        .map(|(key, &n)| (key.clone(), share(n, whole)))
        .collect()
}

fn counts(counts: &BTreeMap<String, u64>) -> String {
    let pairs: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    pairs.join("   ")
}

fn counts_with_shares(counts: &BTreeMap<String, u64>, shares: &BTreeMap<String, f64>) -> String {
    let pairs: Vec<String> = counts
        .iter()
        .map(|(key, n)| format!("{key}: {n} ({:.1}%)", 100.0 * shares[key]))
        .collect();
    pairs.join("   ")
}

fn user_shares(users: &[UserShare]) -> String {
    let pairs: Vec<String> = users
        .iter()
        .map(|u| format!("{}: {:.1}%", u.user, 100.0 * u.share))
        .collect();
    pairs.join("  ")
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::Estimate;

    #[test]
    fn a_node_can_carry_several_marks() {
        let outbox = Some("outbox of user 1, the most followed".to_owned());
        assert_eq!(
            marks(true, false, true, "hot readers' inboxes", outbox.clone()),
            "  <- most round trips (hot readers' inboxes); outbox of user 1, the most followed"
        );
        assert_eq!(
            marks(true, true, true, "hot page keys", None),
            "  <- most commands and round trips"
        );
        assert_eq!(marks(false, true, true, "hot page keys", None), "");
        assert_eq!(
            marks(false, true, true, "hot page keys", outbox),
            "  <- outbox of user 1, the most followed",
            "a single node still holds the outbox"
        );
    }

    #[test]
    fn the_service_section_shows_the_feed_and_its_fan_out() {
        let service = ServiceDelta {
            pages: BTreeMap::from([("hit".into(), 90), ("miss".into(), 10)]),
            feed_sources: BTreeMap::from([
                ("inbox".into(), 60),
                ("pulled".into(), 30),
                ("database".into(), 10),
            ]),
            celebrity_pulls: 60,
            fanout_size: Some(Estimate {
                count: 20,
                mean: 12.5,
                p50: 7.2,
                p99: 48.6,
                p50_le: Some(10.0),
                p99_le: Some(50.0),
            }),
            // A slow tail: the p99 is past the service's last finite bucket (1 s).
            fanout_lag_ms: Some(Estimate {
                count: 20,
                mean: 210.0,
                p50: 0.7,
                p99: 1000.0,
                p50_le: Some(1.0),
                p99_le: None,
            }),
            write_responses: BTreeMap::from([("201".into(), 20)]),
            redis_nodes: vec![
                NodeLoad {
                    node: "127.0.0.1:7000".into(),
                    commands: 400,
                    round_trips: 100,
                    errors: 0,
                    command_share: 0.4,
                },
                NodeLoad {
                    node: "127.0.0.1:7001".into(),
                    commands: 300,
                    round_trips: 150,
                    errors: 0,
                    command_share: 0.3,
                },
            ],
            ..ServiceDelta::default()
        };
        let outbox = HotOutbox {
            user: 1,
            followers: 99,
            probed: 100,
            key: "{user:1}:outbox".into(),
            slot: Some(10778),
            node: Some("127.0.0.1:7001".into()),
            node_note: None,
            command_share: Some(0.3),
            vs_other_nodes: Some(0.75),
        };

        let mut out = String::new();
        render_service(&mut out, &service, Some(&outbox));
        render_hot_outbox(&mut out, &outbox);

        for expected in [
            "by source database: 10   inbox: 60   pulled: 30",
            "celebrity pulls 60 (0.60 per page)",
            "fan-out   20 posts   boxes per post: mean 12.5  p50 <= 10  p99 <= 50",
            "lag p50 0.700 ms  p99 > 1000 ms  mean 210.000 ms",
            "POST /api/v1/posts as the service counted it: 201: 20",
            "<- most round trips (hot readers' inboxes); outbox of user 1, the most followed",
            "hot outbox user 1 (99 followers, the most of users 1..=100): <prefix>:{user:1}:outbox in slot 10778 on 127.0.0.1:7001: 30.0% of the commands, 0.75x the mean",
        ] {
            assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
        }
    }
}
