//! Runs a [`Plan`]: a warm-up phase, a scrape of `/metrics`, the measured phase, another scrape.
//!
//! The phases are separate and each waits for its last request, so the two scrapes bracket exactly
//! the measured requests: the report's counts and the service's counters can be compared one to one.
//! Reads are walks: a user's page, or a reader going `--depths` pages down their home feed by
//! `next_cursor`. Writes, when asked for, run beside the reads on an open-loop schedule of their own.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng as _;
use reqwest::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{Endpoint, Load, Plan, WriteLoad};
use crate::client::{ClientLoad, CpuSample};
use crate::mix::{DepthMix, PageMix, UserSampler};
use crate::outbox::HotOutbox;
use crate::record::{Outcome, Recorder, Status, WalkEnd};
use crate::report::Report;
use crate::schedule::Schedule;
use crate::scrape::{Scrape, ServiceDelta};

/// The service's header that makes a repeated create a replay, not a second post.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Pause of a closed-loop worker after a transport error, so a dead service is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Mixed into the seed of the author draws, so writes and reads draw independently.
const WRITE_SEED: u64 = 0x5752_4954;

/// How long an idle connection stays in loadgen's pool: shorter than the service's keep-alive
/// (`HTTP_KEEP_ALIVE_SECS`, 5 s by default, as actix-web's; 75 s behind a balancer). A request
/// written on a connection at the moment the server closes it for idleness fails with a transport
/// error ("connection closed before message completed") that no fault of the service caused, and a
/// fault scenario, whose latency spike opens extra connections that then sit idle, would count it
/// against the service. Closing them first is what a load balancer's idle timeout does too.
pub const POOL_IDLE: Duration = Duration::from_secs(2);

/// The client of every request: `timeout` per request, no redirects followed, idle connections
/// dropped after [`POOL_IDLE`].
///
/// # Errors
/// The TLS backend cannot be initialised.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Runs the plan and reports the measured phase.
///
/// # Errors
/// The HTTP client cannot be built. A service that does not answer is not an error: its requests
/// are counted as `error` or `timeout`.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let client = http_client(plan.timeout)?;
    let base = plan.base_url.as_str().trim_end_matches('/').to_owned();
    let requests = Arc::new(Requests {
        base: base.clone(),
        users: plan.users.clone(),
        offsets: plan.offsets.clone(),
        depths: plan.depths.clone(),
        endpoint: plan.endpoint,
        cursor: plan.cursor.clone(),
        limit: plan.limit,
        authorization: plan
            .writes
            .as_ref()
            .and_then(|writes| writes.api_key.as_ref())
            .map(|key| format!("Bearer {key}")),
        run: rand::random(),
    });
    // Before any load, so its few reads stay out of both phases.
    let hot_outbox = match plan.endpoint {
        Endpoint::Feed => Some(
            HotOutbox::find(&client, &base, plan.user_count, &plan.redis_urls)
                .await
                .map_err(|error| format!("{error:#}")),
        ),
        Endpoint::Posts => None,
    };

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
    let cpu_before = CpuSample::now();
    let measured = run_phase(plan, &client, &requests, &measure).await;
    let cpu_after = CpuSample::now();
    let answered =
        measured.reads.responses() + measured.writes.as_ref().map_or(0, Recorder::responses);
    let own = ClientLoad::between(
        &cpu_before,
        &cpu_after,
        measured.elapsed,
        answered,
        matches!(plan.load, Load::Closed { .. }),
    );
    let after = Scrape::fetch(&client, &base).await;
    let service = match (before, after) {
        (Ok(before), Ok(after)) => Ok(ServiceDelta::between(
            &before,
            &after,
            plan.endpoint.route(),
        )),
        (Err(error), _) | (_, Err(error)) => Err(format!("{error:#}")),
    };
    Ok(Report::new(plan, &measured, own, service, hot_outbox))
}

/// What one phase recorded.
pub struct Measured {
    pub reads: Recorder,
    /// `None` without `--write-rate`.
    pub writes: Option<Recorder>,
    /// From the phase's start to its last answer, reads and writes.
    pub elapsed: Duration,
}

/// One phase: warm-up or measured.
struct Phase {
    name: &'static str,
    length: Duration,
    /// Pages read at most (writes are not counted).
    max_requests: Option<u64>,
    seed: u64,
}

/// Builds the requests: what each walk reads, and the posts written.
struct Requests {
    base: String,
    users: UserSampler,
    offsets: PageMix,
    depths: DepthMix,
    endpoint: Endpoint,
    cursor: Option<String>,
    limit: u32,
    /// `Authorization` of the posts, from `--api-key`.
    authorization: Option<String>,
    /// Drawn once per process: part of every post's `Idempotency-Key`, so two runs with the same
    /// seed never replay each other's posts.
    run: u64,
}

/// One reader's visit: a user, the position of their first page, and how many pages they read.
struct Walk {
    user: u64,
    /// `&offset=..`, `&cursor=..` or nothing (a first page).
    first: String,
    pages: u32,
}

impl Requests {
    fn next_walk(&self, rng: &mut StdRng) -> Walk {
        let user = self.users.sample(rng);
        let (first, pages) = match (self.endpoint, &self.cursor) {
            (_, Some(cursor)) => (format!("&cursor={cursor}"), 1),
            (Endpoint::Posts, None) => (format!("&offset={}", self.offsets.sample(rng)), 1),
            (Endpoint::Feed, None) => (String::new(), self.depths.sample(rng)),
        };
        Walk { user, first, pages }
    }

    fn page(&self, client: &reqwest::Client, user: u64, position: &str) -> RequestBuilder {
        let url = format!(
            "{}/api/v1/users/{user}/{}?limit={}{position}",
            self.base,
            self.endpoint.segment(),
            self.limit
        );
        request(client, Method::GET, url)
    }

    /// `POST /api/v1/posts` by `author`; `n` numbers the posts of the phase seeded `phase_seed`.
    /// Each carries an `Idempotency-Key` of its own, so a balancer or client that sends it again
    /// (after a connection closed under it) creates nothing more.
    fn post(
        &self,
        client: &reqwest::Client,
        author: u64,
        phase_seed: u64,
        n: u64,
    ) -> RequestBuilder {
        let body = serde_json::json!({
            "user_id": author,
            "content": format!("loadgen post {n} by user {author}"),
        });
        let post = request(client, Method::POST, format!("{}/api/v1/posts", self.base))
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, self.idempotency_key(phase_seed, n))
            .body(body.to_string());
        match &self.authorization {
            Some(authorization) => post.header(AUTHORIZATION, authorization),
            None => post,
        }
    }

    /// The `Idempotency-Key` of post `n` of the phase seeded `phase_seed` in this run.
    fn idempotency_key(&self, phase_seed: u64, n: u64) -> String {
        format!("loadgen-{:016x}-{phase_seed:x}-{n}", self.run)
    }
}

/// Every request loadgen sends starts here: a header every request needs (credentials, once
/// writes are authenticated) is added in this one place.
fn request(client: &reqwest::Client, method: Method, url: String) -> RequestBuilder {
    client.request(method, url)
}

/// Counters shared by the senders, the recorder and the progress line.
struct Shared {
    recorder: Mutex<Recorder>,
    /// Requests handed to the client.
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    /// Requests counted against `budget`, sent or not.
    issued: AtomicU64,
    budget: u64,
}

impl Shared {
    fn new(budget: Option<u64>) -> Self {
        Self {
            recorder: Mutex::default(),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            budget: budget.unwrap_or(u64::MAX),
        }
    }

    /// Whether one more request fits `--max-requests`.
    fn take_budget(&self) -> bool {
        self.issued.fetch_add(1, Ordering::Relaxed) < self.budget
    }

    fn record(&self, outcome: Outcome) {
        match outcome.status {
            Status::Http(_) => self.answered.fetch_add(1, Ordering::Relaxed),
            Status::NotSent => 0,
            Status::Timeout | Status::Error => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        self.recorder().record(outcome);
    }

    fn end_walk(&self, end: WalkEnd) {
        self.recorder().end_walk(end);
    }

    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_recorder(&self) -> Recorder {
        std::mem::take(&mut *self.recorder())
    }
}

/// Runs one phase to its end (every sent request answered or timed out).
async fn run_phase(
    plan: &Plan,
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    phase: &Phase,
) -> Measured {
    let reads = Arc::new(Shared::new(phase.max_requests));
    let writes = plan.writes.as_ref().map(|_| Arc::new(Shared::new(None)));
    let start = Instant::now();
    let progress = plan.progress.then(|| {
        tokio::spawn(progress_line(
            phase.name,
            phase.length,
            start,
            Arc::clone(&reads),
            writes.clone(),
        ))
    });
    let read_load = async {
        match plan.load {
            Load::Open {
                rate,
                max_in_flight,
            } => open_reads(client, requests, &reads, phase, start, rate, max_in_flight).await,
            Load::Closed { concurrency } => {
                closed_loop(client, requests, &reads, phase, start, concurrency).await;
            }
        }
    };
    let write_load = async {
        if let (Some(load), Some(writes)) = (plan.writes.as_ref(), &writes) {
            open_writes(client, requests, writes, phase, start, load).await;
        }
    };
    tokio::join!(read_load, write_load);
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!(
            "[{:>7} done] {} answered, {} failed in {:.2}s{}",
            phase.name,
            reads.answered.load(Ordering::Relaxed),
            reads.failed.load(Ordering::Relaxed),
            elapsed.as_secs_f64(),
            writes.as_ref().map_or_else(String::new, |w| format!(
                "; writes {} answered, {} failed",
                w.answered.load(Ordering::Relaxed),
                w.failed.load(Ordering::Relaxed)
            )),
        );
    }
    Measured {
        reads: reads.take_recorder(),
        writes: writes.map(|w| w.take_recorder()),
        elapsed,
    }
}

/// The reads of an open loop at `rate`: one walk per due time, within the phase's budget.
async fn open_reads(
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    reads: &Arc<Shared>,
    phase: &Phase,
    start: Instant,
    rate: f64,
    max_in_flight: usize,
) {
    let schedule = Schedule::new(start, rate);
    let count = schedule
        .count_within(phase.length)
        .min(phase.max_requests.unwrap_or(u64::MAX));
    let mut rng = StdRng::seed_from_u64(phase.seed);
    open_loop(reads, schedule, count, max_in_flight, |_, due| {
        if !reads.take_budget() {
            return None;
        }
        let walk = requests.next_walk(&mut rng);
        let user = walk.user;
        let (client, requests, shared) = (client.clone(), Arc::clone(requests), Arc::clone(reads));
        Some((user, async move {
            let send_lag = due.elapsed();
            run_walk(&client, &requests, &shared, walk, due, send_lag).await;
        }))
    })
    .await;
}

/// The writes of `load`: one new post per due time, by a sampled author.
async fn open_writes(
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    writes: &Arc<Shared>,
    phase: &Phase,
    start: Instant,
    load: &WriteLoad,
) {
    let schedule = Schedule::new(start, load.rate);
    let count = schedule.count_within(phase.length);
    let mut rng = StdRng::seed_from_u64(phase.seed ^ WRITE_SEED);
    open_loop(writes, schedule, count, load.max_in_flight, |n, due| {
        let author = requests.users.sample(&mut rng);
        let post = requests.post(client, author, phase.seed, n);
        let shared = Arc::clone(writes);
        Some((author, async move {
            let send_lag = due.elapsed();
            shared.sent.fetch_add(1, Ordering::Relaxed);
            let (mut outcome, _) = send(post, author, due, false).await;
            outcome.send_lag = send_lag;
            shared.record(outcome);
        }))
    })
    .await;
}

/// Starts one job per due time of `schedule` (the first `count`), each with its latency counted
/// from its due time. `job(i, due)` draws the job: its user and the future that sends and records
/// it; `None` ends the loop early. A job due while `max_in_flight` are outstanding is not started
/// and counted as `not_sent`.
async fn open_loop<J, F>(
    shared: &Arc<Shared>,
    schedule: Schedule,
    count: u64,
    max_in_flight: usize,
    mut job: J,
) where
    J: FnMut(u64, Instant) -> Option<(u64, F)>,
    F: Future<Output = ()> + Send + 'static,
{
    let mut paced = schedule.pace(count, max_in_flight);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut in_flight = JoinSet::new();
    while let Some((i, due)) = paced.recv().await {
        let Some((user, work)) = job(i, due) else {
            break;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.record(Outcome {
                user,
                status: Status::NotSent,
                cache: None,
                feed_source: None,
                depth: 1,
                latency: Duration::ZERO,
                send_lag: Duration::ZERO,
                body_bytes: 0,
            });
            continue;
        };
        in_flight.spawn(async move {
            work.await;
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    }
    // Bounded: every request ends within the client's timeout, a walk within its depth of them.
    while in_flight.join_next().await.is_some() {}
}

/// `concurrency` workers, each starting its next walk when the last one ended.
async fn closed_loop(
    client: &reqwest::Client,
    requests: &Arc<Requests>,
    shared: &Arc<Shared>,
    phase: &Phase,
    start: Instant,
    concurrency: usize,
) {
    let deadline = start + phase.length;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let requests = Arc::clone(requests);
        let shared = Arc::clone(shared);
        let mut rng = StdRng::seed_from_u64(phase.seed.wrapping_add(worker as u64));
        workers.spawn(async move {
            while Instant::now() < deadline && shared.take_budget() {
                let walk = requests.next_walk(&mut rng);
                let end = run_walk(
                    &client,
                    &requests,
                    &shared,
                    walk,
                    Instant::now(),
                    Duration::ZERO,
                )
                .await;
                if end == WalkEnd::Failed {
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Reads a walk's pages one after another, following `next_cursor`, and records each page and
/// how the walk ended. The first page's latency counts from `due` (and `send_lag` is its lateness);
/// each later page's from its own send, as a reader asks for the next page once they have one.
/// The first page's place in `--max-requests` was taken by the caller.
async fn run_walk(
    client: &reqwest::Client,
    requests: &Requests,
    shared: &Shared,
    walk: Walk,
    due: Instant,
    send_lag: Duration,
) -> WalkEnd {
    let mut position = walk.first;
    let mut since = due;
    let mut depth = 1;
    let end = loop {
        if depth > 1 && !shared.take_budget() {
            break WalkEnd::Stopped;
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let more = depth < walk.pages;
        let (mut outcome, next) = send(
            requests.page(client, walk.user, &position),
            walk.user,
            since,
            more,
        )
        .await;
        outcome.depth = depth;
        if depth == 1 {
            outcome.send_lag = send_lag;
        }
        let ok = outcome.status == Status::Http(200);
        shared.record(outcome);
        match (ok, more, next) {
            (false, _, _) => break WalkEnd::Failed,
            (true, false, _) => break WalkEnd::Complete,
            (true, true, Next::Cursor(cursor)) => position = format!("&cursor={cursor}"),
            (true, true, Next::End) => break WalkEnd::FeedEnded,
            (true, true, Next::Unread) => break WalkEnd::Failed,
        }
        depth += 1;
        since = Instant::now();
    };
    shared.end_walk(end);
    end
}

/// Where a page says the walk goes next.
enum Next {
    /// Its `next_cursor`.
    Cursor(String),
    /// `next_cursor` is null: the listing ends here.
    End,
    /// Not asked for, or the body could not be read as a page.
    Unread,
}

#[derive(Deserialize)]
struct PageBody {
    next_cursor: Option<String>,
}

/// Sends one request and reads the whole body; latency runs from `since` to the body's end. With
/// `follow`, a 200 body is read for its `next_cursor`.
async fn send(request: RequestBuilder, user: u64, since: Instant, follow: bool) -> (Outcome, Next) {
    let failed = |error: reqwest::Error| Outcome {
        user,
        status: if error.is_timeout() {
            Status::Timeout
        } else {
            Status::Error
        },
        cache: None,
        feed_source: None,
        depth: 1,
        latency: since.elapsed(),
        send_lag: Duration::ZERO,
        body_bytes: 0,
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (failed(error), Next::Unread),
    };
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let cache = header("x-cache");
    let feed_source = header("x-feed-source");
    match response.bytes().await {
        Ok(body) => {
            let latency = since.elapsed();
            let next = if follow && status == 200 {
                serde_json::from_slice::<PageBody>(&body).map_or(Next::Unread, |page| {
                    page.next_cursor.map_or(Next::End, Next::Cursor)
                })
            } else {
                Next::Unread
            };
            let outcome = Outcome {
                user,
                status: Status::Http(status),
                cache,
                feed_source,
                depth: 1,
                latency,
                send_lag: Duration::ZERO,
                body_bytes: body.len() as u64,
            };
            (outcome, next)
        }
        Err(error) => (failed(error), Next::Unread),
    }
}

/// Prints one line a second on stderr while a phase runs.
async fn progress_line(
    name: &'static str,
    length: Duration,
    start: Instant,
    reads: Arc<Shared>,
    writes: Option<Arc<Shared>>,
) {
    let first = tokio::time::Instant::from_std(start + Duration::from_secs(1));
    let mut ticks = tokio::time::interval_at(first, Duration::from_secs(1));
    let mut last_answered = 0;
    loop {
        let now = ticks.tick().await.into_std();
        let answered = reads.answered.load(Ordering::Relaxed);
        let sent = reads.sent.load(Ordering::Relaxed);
        let failed = reads.failed.load(Ordering::Relaxed);
        let writes = writes.as_ref().map_or_else(String::new, |w| {
            format!(
                "  writes {} answered, {} failed",
                w.answered.load(Ordering::Relaxed),
                w.failed.load(Ordering::Relaxed)
            )
        });
        eprintln!(
            "[{name:>7} {:>5.1}s/{:.0}s] sent {sent}  answered {answered}  failed {failed}  in flight {}  {} req/s{writes}",
            (now - start).as_secs_f64(),
            length.as_secs_f64(),
            sent.saturating_sub(answered + failed),
            answered - last_answered,
        );
        last_answered = answered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A server that answers every request `200` with an empty body, keeps every connection open
    /// and counts the connections it accepted.
    async fn counting_server() -> (String, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 4096];
                    let mut seen = Vec::new();
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if socket.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_pool_limit_is_not_reused() {
        // Arrange: one request leaves one idle connection, which the server keeps open.
        let (url, accepted) = counting_server().await;
        let client = http_client(Duration::from_secs(30)).expect("client");
        let first = client.get(&url).send().await.expect("first request");
        first.bytes().await.expect("first body");

        // Act: the next request comes after the pool's idle limit (a server with a keep-alive
        // just above it would be closing that connection now).
        tokio::time::sleep(POOL_IDLE + Duration::from_millis(500)).await;
        let second = client.get(&url).send().await.expect("second request");
        second.bytes().await.expect("second body");

        // Assert
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the second request opened a new connection instead of reusing the idle one"
        );
    }

    #[test]
    fn every_post_carries_an_idempotency_key_of_its_own_and_runs_never_share_one() {
        // Arrange: two runs' request builders, as `run` makes them.
        let requests = |run| Requests {
            base: "http://127.0.0.1:1".into(),
            users: UserSampler::fixed(1),
            offsets: "0=1".parse().expect("a page mix"),
            depths: "1=1".parse().expect("a depth mix"),
            endpoint: Endpoint::Posts,
            cursor: None,
            limit: 10,
            authorization: None,
            run,
        };
        let (first_run, second_run) = (requests(1), requests(2));
        let client = reqwest::Client::new();
        let key = |requests: &Requests, seed, n| {
            let post = requests
                .post(&client, 1, seed, n)
                .build()
                .expect("a request");
            let key = post
                .headers()
                .get(IDEMPOTENCY_KEY)
                .expect("an Idempotency-Key");
            key.to_str().expect("ASCII").to_owned()
        };

        // Act
        let keys = [
            key(&first_run, 7, 0),
            key(&first_run, 7, 1),
            key(&first_run, 8, 0),
            key(&second_run, 7, 0),
        ];

        // Assert: distinct per post, per phase and per run; the same post asks again with its key.
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(
            key(&first_run, 7, 1),
            keys[1],
            "a retry of one post reuses its key"
        );
        assert!(keys.iter().all(|k| k.len() <= 255 && k.is_ascii()));
    }
}
