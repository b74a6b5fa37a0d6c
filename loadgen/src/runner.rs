//! Runs a [`Plan`]: a warm-up phase, a scrape of `/metrics`, the measured phase, another scrape.
//!
//! The phases are separate and each waits for its last request, so the two scrapes bracket exactly
//! the measured requests: the report's counts and the service's counters can be compared one to one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{Endpoint, Load, Plan};
use crate::mix::{PageMix, UserSampler};
use crate::record::{Outcome, Recorder, Status};
use crate::report::Report;
use crate::schedule::Schedule;
use crate::scrape::{Scrape, ServiceDelta};

/// Pause of a closed-loop worker after a transport error, so a dead service is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Runs the plan and reports the measured phase.
///
/// # Errors
/// The HTTP client cannot be built. A service that does not answer is not an error: its requests
/// are counted as `error` or `timeout`.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = plan.base_url.as_str().trim_end_matches('/').to_owned();
    let requests = Arc::new(Requests {
        base: base.clone(),
        users: plan.users.clone(),
        offsets: plan.offsets.clone(),
        endpoint: plan.endpoint,
        cursor: plan.cursor.clone(),
        limit: plan.limit,
    });

    if !plan.warmup.is_zero() {
        let warmup = Phase {
            name: "warm-up",
            length: plan.warmup,
            max_requests: None,
            seed: plan.seed ^ 0x5741_524d,
        };
        run_phase(plan, &client, &requests, &warmup).await;
    }
    let before = Scrape::fetch(&client, &base).await;
    let measure = Phase {
        name: "measure",
        length: plan.duration,
        max_requests: plan.max_requests,
        seed: plan.seed,
    };
    let (recorder, elapsed) = run_phase(plan, &client, &requests, &measure).await;
    let after = Scrape::fetch(&client, &base).await;
    let service = match (before, after) {
        (Ok(before), Ok(after)) => Ok(ServiceDelta::between(&before, &after)),
        (Err(error), _) | (_, Err(error)) => Err(format!("{error:#}")),
    };
    Ok(Report::new(plan, &recorder, elapsed, service))
}

/// One phase: warm-up or measured.
struct Phase {
    name: &'static str,
    length: Duration,
    max_requests: Option<u64>,
    seed: u64,
}

/// Builds the request URLs.
struct Requests {
    base: String,
    users: UserSampler,
    offsets: PageMix,
    endpoint: Endpoint,
    cursor: Option<String>,
    limit: u32,
}

impl Requests {
    fn next(&self, rng: &mut StdRng) -> (u64, String) {
        let user = self.users.sample(rng);
        let (listing, position) = match (self.endpoint, &self.cursor) {
            (Endpoint::Posts, Some(cursor)) => ("posts", format!("&cursor={cursor}")),
            (Endpoint::Posts, None) => ("posts", format!("&offset={}", self.offsets.sample(rng))),
            (Endpoint::Feed, Some(cursor)) => ("feed", format!("&cursor={cursor}")),
            (Endpoint::Feed, None) => ("feed", String::new()),
        };
        let url = format!(
            "{}/api/v1/users/{user}/{listing}?limit={}{position}",
            self.base, self.limit
        );
        (user, url)
    }
}

/// Counters shared by the senders, the recorder and the progress line.
#[derive(Default)]
struct Shared {
    recorder: Mutex<Recorder>,
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    fn record(&self, outcome: Outcome) {
        match outcome.status {
            Status::Http(_) => self.answered.fetch_add(1, Ordering::Relaxed),
            Status::NotSent => 0,
            Status::Timeout | Status::Error => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        self.recorder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(outcome);
    }
}

/// Runs one phase to its end (every sent request answered or timed out); returns its counts and
/// the time from its start to its last answer.
async fn run_phase(
    plan: &Plan,
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    phase: &Phase,
) -> (Recorder, Duration) {
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let progress = plan.progress.then(|| {
        tokio::spawn(progress_line(
            phase.name,
            phase.length,
            start,
            Arc::clone(&shared),
        ))
    });
    match plan.load {
        Load::Open {
            rate,
            max_in_flight,
        } => open_loop(client, requests, &shared, phase, start, rate, max_in_flight).await,
        Load::Closed { concurrency } => {
            closed_loop(client, requests, &shared, phase, start, concurrency).await;
        }
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!(
            "[{:>7} done] {} answered, {} failed in {:.2}s",
            phase.name,
            shared.answered.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            elapsed.as_secs_f64()
        );
    }
    let recorder = std::mem::take(
        &mut *shared
            .recorder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    (recorder, elapsed)
}

/// Sends on the fixed schedule; latency counts from each request's due time.
async fn open_loop(
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    shared: &Arc<Shared>,
    phase: &Phase,
    start: Instant,
    rate: f64,
    max_in_flight: usize,
) {
    let schedule = Schedule::new(start, rate);
    let count = schedule
        .count_within(phase.length)
        .min(phase.max_requests.unwrap_or(u64::MAX));
    let mut paced = schedule.pace(count, max_in_flight);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut rng = StdRng::seed_from_u64(phase.seed);
    let mut in_flight = JoinSet::new();
    while let Some((_, due)) = paced.recv().await {
        let (user, url) = requests.next(&mut rng);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.record(Outcome {
                user,
                status: Status::NotSent,
                cache: None,
                latency: Duration::ZERO,
                send_lag: Duration::ZERO,
                body_bytes: 0,
            });
            continue;
        };
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let client = client.clone();
        let shared = Arc::clone(shared);
        in_flight.spawn(async move {
            let send_lag = due.elapsed();
            let mut outcome = send(&client, url, user, due).await;
            outcome.send_lag = send_lag;
            drop(permit);
            shared.record(outcome);
        });
        while in_flight.try_join_next().is_some() {}
    }
    // Bounded: every request ends within the client's timeout.
    while in_flight.join_next().await.is_some() {}
}

/// `concurrency` workers, each sending its next request when the last one ended.
async fn closed_loop(
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    shared: &Arc<Shared>,
    phase: &Phase,
    start: Instant,
    concurrency: usize,
) {
    let deadline = start + phase.length;
    let budget = phase.max_requests.unwrap_or(u64::MAX);
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let requests = Arc::clone(requests);
        let shared = Arc::clone(shared);
        let mut rng = StdRng::seed_from_u64(phase.seed.wrapping_add(worker as u64));
        workers.spawn(async move {
            while Instant::now() < deadline {
                if shared.sent.fetch_add(1, Ordering::Relaxed) >= budget {
                    break;
                }
                let (user, url) = requests.next(&mut rng);
                let outcome = send(&client, url, user, Instant::now()).await;
                let failed = matches!(outcome.status, Status::Error);
                shared.record(outcome);
                if failed {
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Sends one request and reads the whole body; latency runs from `since` to the body's end.
async fn send(client: &reqwest::Client, url: String, user: u64, since: Instant) -> Outcome {
    let failed = |error: reqwest::Error| Outcome {
        user,
        status: if error.is_timeout() {
            Status::Timeout
        } else {
            Status::Error
        },
        cache: None,
        latency: since.elapsed(),
        send_lag: Duration::ZERO,
        body_bytes: 0,
    };
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(error) => return failed(error),
    };
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match response.bytes().await {
        Ok(body) => Outcome {
            user,
            status: Status::Http(status),
            cache,
            latency: since.elapsed(),
            send_lag: Duration::ZERO,
            body_bytes: body.len() as u64,
        },
        Err(error) => failed(error),
    }
}

/// Prints one line a second on stderr while a phase runs.
async fn progress_line(name: &'static str, length: Duration, start: Instant, shared: Arc<Shared>) {
    let first = tokio::time::Instant::from_std(start + Duration::from_secs(1));
    let mut ticks = tokio::time::interval_at(first, Duration::from_secs(1));
    let mut last_answered = 0;
    loop {
        let now = ticks.tick().await.into_std();
        let answered = shared.answered.load(Ordering::Relaxed);
        let sent = shared.sent.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        eprintln!(
            "[{name:>7} {:>5.1}s/{:.0}s] sent {sent}  answered {answered}  failed {failed}  in flight {}  {} req/s",
            (now - start).as_secs_f64(),
            length.as_secs_f64(),
            sent.saturating_sub(answered + failed),
            answered - last_answered,
        );
        last_answered = answered;
    }
}
