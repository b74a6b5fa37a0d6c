//! The open-loop schedule: when each request is due.
//!
//! Request i is due at `start + i / rate`, computed from i alone. Nothing is accumulated, so rounding
//! never adds up to drift, and a late dispatcher does not push later requests back: it sends what is
//! overdue at once, and each request's latency still counts from its due time. That is what keeps a
//! stall of the service visible in the percentiles (no coordinated omission).

use std::time::Duration;

use tokio::time::Instant;

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

    /// A ticker over the first `count` requests.
    pub fn ticker(self, count: u64) -> Ticker {
        Ticker {
            schedule: self,
            next: 0,
            count,
        }
    }
}

/// Yields each request's index and due time, waiting until it is due (not waiting when late).
#[derive(Debug)]
pub struct Ticker {
    schedule: Schedule,
    next: u64,
    count: u64,
}

impl Ticker {
    /// The next request, once it is due; `None` after the last one.
    pub async fn tick(&mut self) -> Option<(u64, Instant)> {
        if self.next >= self.count {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let due = self.schedule.due(i);
        tokio::time::sleep_until(due).await;
        Some((i, due))
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

    #[tokio::test(start_paused = true)]
    async fn ticks_wait_for_their_due_time() {
        let start = Instant::now();
        let mut ticker = Schedule::new(start, 100.0).ticker(5);
        let mut seen = Vec::new();
        while let Some((i, due)) = ticker.tick().await {
            assert!(Instant::now() >= due, "tick {i} came early");
            seen.push((i, (due - start).as_millis()));
        }
        assert_eq!(seen, [(0, 0), (1, 10), (2, 20), (3, 30), (4, 40)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_dispatcher_catches_up_without_moving_the_schedule() {
        // Arrange: 1000 requests/s for 2 s, and a dispatcher that stalls 150 ms at request 500.
        let start = Instant::now();
        let mut ticker = Schedule::new(start, 1000.0).ticker(2000);
        let mut late_by = Vec::new();

        // Act
        while let Some((i, due)) = ticker.tick().await {
            late_by.push(Instant::now() - due);
            if i == 500 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }

        // Assert: the requests due during the stall go out at once, still carrying their due time
        // (so their latency includes the stall); after it the schedule is exactly where it was.
        assert_eq!(late_by.len(), 2000);
        assert_eq!(late_by[501], Duration::from_millis(149));
        assert_eq!(late_by[650], Duration::ZERO);
        assert!(late_by[700..].iter().all(|late| late.is_zero()));
        assert_eq!(Instant::now() - start, Duration::from_millis(1999));
    }
}
