//! What the client saw, request by request: latency, status, `X-Cache`, `X-Feed-Source`, user, and
//! how deep each home-feed walk went.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks exactly; anything slower is recorded as this.
const MAX_TRACKED: Duration = Duration::from_secs(120);

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// An HTTP response with this status code.
    Http(u16),
    /// No response within the request timeout.
    Timeout,
    /// Connection refused, reset, or any other transport error.
    Error,
    /// Open loop only: due while `--max-in-flight` requests were outstanding, so never sent.
    NotSent,
}

impl Status {
    /// The key of this status in the report (`200`, `timeout`, `error`, `not_sent`).
    pub fn label(self) -> String {
        match self {
            Self::Http(code) => code.to_string(),
            Self::Timeout => "timeout".into(),
            Self::Error => "error".into(),
            Self::NotSent => "not_sent".into(),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub user: u64,
    pub status: Status,
    /// The `X-Cache` header, when the response had one.
    pub cache: Option<String>,
    /// The `X-Feed-Source` header (home-feed pages: `inbox`, `inbox+pulled`, `database`).
    pub feed_source: Option<String>,
    /// Which page of its walk this request read: 1 for the first page.
    pub depth: u32,
    /// From the due time (open loop) or the send time (closed loop) to the end of the body.
    pub latency: Duration,
    /// Open loop: from the due time to the moment the request was handed to the client (loadgen's
    /// own lateness: timer granularity, CPU). Zero in a closed loop.
    pub send_lag: Duration,
    pub body_bytes: u64,
}

/// How a walk down a home feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// It read every page it was drawn to read.
    Complete,
    /// The feed had no next page before that (no `next_cursor`).
    FeedEnded,
    /// A page failed (not a 200, a timeout, a transport error), so there was no cursor to follow.
    Failed,
    /// The run's `--max-requests` ran out.
    Stopped,
}

/// Walks by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkCounts {
    pub complete: u64,
    pub feed_ended: u64,
    pub failed: u64,
    pub stopped: u64,
}

impl WalkCounts {
    /// Walks started, however they ended.
    pub fn total(&self) -> u64 {
        self.complete + self.feed_ended + self.failed + self.stopped
    }
}

/// Counts of one phase of a run.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency of every request that got a response or timed out, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Open loop: send lag of every sent request, in microseconds.
    pub send_lag_us: Histogram<u64>,
    pub statuses: BTreeMap<Status, u64>,
    pub cache: BTreeMap<String, u64>,
    pub users: HashMap<u64, u64>,
    pub body_bytes: u64,
    /// Responses by `X-Feed-Source`, for the responses that had one.
    pub feed_sources: BTreeMap<String, u64>,
    /// 200 responses by their page's depth in its walk (1 = first page).
    pub depths: BTreeMap<u32, u64>,
    pub walks: WalkCounts,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency_us: histogram(),
            send_lag_us: histogram(),
            statuses: BTreeMap::new(),
            cache: BTreeMap::new(),
            users: HashMap::new(),
            body_bytes: 0,
            feed_sources: BTreeMap::new(),
            depths: BTreeMap::new(),
            walks: WalkCounts::default(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED.as_micros() as u64, 3)
        .expect("1 us .. 120 s at 3 significant digits is a valid histogram")
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).clamp(1, MAX_TRACKED.as_micros() as u64)
}

impl Recorder {
    /// Adds one request.
    pub fn record(&mut self, outcome: Outcome) {
        *self.statuses.entry(outcome.status).or_default() += 1;
        *self.users.entry(outcome.user).or_default() += 1;
        if matches!(outcome.status, Status::Http(_) | Status::Timeout) {
            self.latency_us.saturating_record(micros(outcome.latency));
        }
        if outcome.status != Status::NotSent && !outcome.send_lag.is_zero() {
            self.send_lag_us.saturating_record(micros(outcome.send_lag));
        }
        if let Status::Http(code) = outcome.status {
            let cache = outcome.cache.unwrap_or_else(|| "none".into());
            *self.cache.entry(cache).or_default() += 1;
            self.body_bytes += outcome.body_bytes;
            if let Some(source) = outcome.feed_source {
                *self.feed_sources.entry(source).or_default() += 1;
            }
            if code == 200 {
                *self.depths.entry(outcome.depth).or_default() += 1;
            }
        }
    }

    /// Counts one finished walk.
    pub fn end_walk(&mut self, end: WalkEnd) {
        let counter = match end {
            WalkEnd::Complete => &mut self.walks.complete,
            WalkEnd::FeedEnded => &mut self.walks.feed_ended,
            WalkEnd::Failed => &mut self.walks.failed,
            WalkEnd::Stopped => &mut self.walks.stopped,
        };
        *counter += 1;
    }

    /// Requests that got an HTTP response (any status).
    pub fn responses(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| matches!(status, Status::Http(_)))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests that got this exact status.
    pub fn count(&self, status: Status) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Every request accounted for, sent or not.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(user: u64, status: Status, cache: Option<&str>, ms: u64) -> Outcome {
        Outcome {
            user,
            status,
            cache: cache.map(str::to_owned),
            feed_source: None,
            depth: 1,
            latency: Duration::from_millis(ms),
            send_lag: Duration::from_micros(300),
            body_bytes: 100,
        }
    }

    #[test]
    fn only_answered_or_timed_out_requests_have_a_latency() {
        let mut recorder = Recorder::default();
        recorder.record(outcome(1, Status::Http(200), Some("HIT"), 2));
        recorder.record(outcome(1, Status::Http(200), Some("MISS"), 9));
        recorder.record(outcome(2, Status::Timeout, None, 5000));
        recorder.record(outcome(3, Status::Error, None, 0));
        recorder.record(outcome(3, Status::NotSent, None, 0));

        assert_eq!(recorder.latency_us.len(), 3);
        assert_eq!(
            recorder.send_lag_us.len(),
            4,
            "every sent request has a send lag"
        );
        assert_eq!(recorder.responses(), 2);
        assert_eq!(recorder.total(), 5);
        assert_eq!(recorder.count(Status::NotSent), 1);
        assert_eq!(recorder.cache.get("HIT"), Some(&1));
        assert_eq!(recorder.users[&3], 2);
        assert_eq!(recorder.body_bytes, 200);
    }

    #[test]
    fn feed_pages_count_by_source_and_depth_and_walks_by_how_they_ended() {
        let mut recorder = Recorder::default();
        for (depth, source, status) in [
            (1, "inbox", Status::Http(200)),
            (2, "inbox+pulled", Status::Http(200)),
            (3, "database", Status::Http(200)),
            (1, "database", Status::Http(503)),
            (2, "inbox", Status::Timeout),
        ] {
            recorder.record(Outcome {
                feed_source: Some(source.to_owned()),
                depth,
                ..outcome(1, status, Some("HIT"), 3)
            });
        }
        recorder.end_walk(WalkEnd::Complete);
        recorder.end_walk(WalkEnd::Failed);
        recorder.end_walk(WalkEnd::FeedEnded);

        assert_eq!(
            recorder.depths,
            BTreeMap::from([(1, 1), (2, 1), (3, 1)]),
            "only pages that were read count at their depth"
        );
        assert_eq!(
            recorder.feed_sources,
            BTreeMap::from([
                ("database".to_owned(), 2),
                ("inbox".to_owned(), 1),
                ("inbox+pulled".to_owned(), 1)
            ]),
            "every response's header, whatever its status"
        );
        assert_eq!(recorder.walks.total(), 3);
        assert_eq!(recorder.walks.feed_ended, 1);
    }
}
