//! The open-loop schedule: when each request is due, and a pacer that hands requests out on time.
//!
//! Request i is due at `start + i / rate`, computed from i alone. Nothing is accumulated, so rounding
//! never adds up to drift, and a late consumer does not push later requests back: what is overdue is
//! handed out at once, and each request's latency still counts from its due time. That is what keeps
//! a stall of the service visible in the percentiles (no coordinated omission).
//!
//! The pacer runs on a thread of its own and sleeps with `std::thread::sleep`, which wakes within
//! tens of microseconds here. Tokio's timer rounds every deadline up to the next whole millisecond,
//! which would add up to a millisecond to every open-loop latency if the pacer were a tokio task.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A fixed-rate schedule starting at `start`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    /// `rate` requests per second from `start`; `rate` must be positive and finite.
    pub fn new(start: Instant, rate: f64) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "the plan validates the rate"
        );
        Self { start, rate }
    }

    /// When request `i` (from 0) is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many requests are due strictly before `start + span`.
    pub fn count_within(&self, span: Duration) -> u64 {
        (span.as_secs_f64() * self.rate).ceil() as u64
    }

    /// Starts a pacer thread that sends `(i, due)` for the first `count` requests, each once it is
    /// due. At most `backlog` wait in the channel; past that the pacer waits for the consumer (the
    /// due times do not move). The thread ends after the last request or when the receiver is
    /// dropped.
    pub fn pace(self, count: u64, backlog: usize) -> mpsc::Receiver<(u64, Instant)> {
        let (sender, receiver) = mpsc::channel(backlog.max(1));
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || {
                for i in 0..count {
                    let due = self.due(i);
                    let wait = due.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    if sender.blocking_send((i, due)).is_err() {
                        return;
                    }
                }
            })
            .expect("the OS can start one more thread");
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_come_from_the_index_not_from_a_sum() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 3.0);
        // 1/3 s is 333_333_333.3 ns: a step of whole nanoseconds, summed a million times, is
        // 333 us early; the due time computed from the index is not.
        let exact = Duration::from_nanos(333_333_333_333_333);
        let summed = Duration::from_nanos(333_333_333) * 1_000_000;
        assert!(exact - summed > Duration::from_micros(300));
        let error = (schedule.due(1_000_000) - start).abs_diff(exact);
        assert!(error < Duration::from_micros(1), "off by {error:?}");
        assert_eq!(schedule.count_within(Duration::from_secs(10)), 30);
        assert_eq!(
            Schedule::new(start, 250.0).count_within(Duration::from_millis(10)),
            3
        );
    }

    #[tokio::test]
    async fn requests_are_handed_out_when_due_and_never_early() {
        // Arrange: 500 requests/s for 0.4 s.
        let start = Instant::now();
        let mut paced = Schedule::new(start, 500.0).pace(200, 1024);

        // Act
        let mut lags = Vec::new();
        while let Some((i, due)) = paced.recv().await {
            let now = Instant::now();
            assert!(now >= due, "request {i} came {:?} early", due - now);
            let expected = start + Duration::from_millis(2 * i);
            assert!(due.max(expected) - due.min(expected) < Duration::from_micros(1));
            lags.push(now - due);
        }

        // Assert: all 200, handed out as they fall due rather than bunched up: a median lag of
        // a few timer steps. The bound is for a loaded machine, where a thread wakes late, and
        // still far below the 400 ms run.
        assert_eq!(lags.len(), 200);
        lags.sort();
        assert!(
            lags[100] < Duration::from_millis(40),
            "median lag {:?}",
            lags[100]
        );
    }

    #[tokio::test]
    async fn a_stalled_consumer_gets_the_overdue_requests_without_moving_the_schedule() {
        // Arrange: 1000 requests/s for 0.5 s, and a consumer that stalls 150 ms at request 100.
        let start = Instant::now();
        let mut paced = Schedule::new(start, 1000.0).pace(500, 1024);
        let mut late_by = Vec::new();

        // Act
        while let Some((i, due)) = paced.recv().await {
            late_by.push((Instant::now() - due, due - start));
            if i == 100 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }

        // Assert: the requests due during the stall come out at once, late by the stall (so their
        // latency includes it); later ones are on time again, at the same due times.
        assert_eq!(late_by.len(), 500);
        assert!(late_by[101].0 >= Duration::from_millis(140), "{late_by:?}");
        let on = |at: Duration, ms: u64| {
            at.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1)
        };
        assert!(on(late_by[101].1, 101), "due times are unchanged");
        let recovered: Vec<Duration> = late_by[400..].iter().map(|(late, _)| *late).collect();
        let median = {
            let mut sorted = recovered.clone();
            sorted.sort();
            sorted[sorted.len() / 2]
        };
        // Still behind, they would be late by the 150 ms stall; back on time, by a few timer
        // steps (a loaded machine's included).
        assert!(
            median < Duration::from_millis(40),
            "back on schedule after the stall: {median:?}"
        );
        assert!(on(late_by[499].1, 499));
    }
}
