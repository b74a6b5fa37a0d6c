//! How a response was served: the `X-Cache` outcome and the time spent on each backend.

use std::future::Future;
use std::time::{Duration, Instant};

/// How the cache served a response; the `X-Cache` header and the `cache` label of `feed_pages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The in-process tier answered: no Redis round trip at all.
    HitLocal,
    /// Everything came from the Redis Cluster.
    Hit,
    /// The page of ids came from the cache, some objects from PostgreSQL.
    Partial,
    /// The cache had nothing usable (or failed); PostgreSQL served it.
    Miss,
    /// The cache is switched off (`CACHE=off`).
    Bypass,
}

impl CacheOutcome {
    /// Every outcome, whose `feed_pages_total` series exist at 0 from the start.
    pub const ALL: [Self; 5] = [
        Self::HitLocal,
        Self::Hit,
        Self::Partial,
        Self::Miss,
        Self::Bypass,
    ];

    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HitLocal => "HIT-L1",
            Self::Hit => "HIT",
            Self::Partial => "PARTIAL",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }

    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::HitLocal => "hit_l1",
            Self::Hit => "hit",
            Self::Partial => "partial",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// Time a request spent waiting on each backend; the `Server-Timing` header.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub redis: Duration,
    pub db: Duration,
}

/// A value with how it was served.
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    pub cache: CacheOutcome,
    pub timings: Timings,
    /// Where a home-feed page's ids came from: `inbox`, `inbox+pulled` (celebrities' outboxes
    /// merged in) or `database`; the `X-Feed-Source` header. `None` for other responses.
    pub source: Option<&'static str>,
}

/// Awaits `work`, adding the time it took to `spent`.
pub(super) async fn timed<T>(spent: &mut Duration, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    *spent += started.elapsed();
    out
}
