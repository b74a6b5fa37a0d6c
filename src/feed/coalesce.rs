//! Request coalescing ("single flight"): concurrent misses of one key in one instance share one
//! PostgreSQL read and one cache fill. The first request leads; the others await its outcome.
//! [`Coalescer::read`] is the one place a reader's part is accounted: the leader adds the
//! flight's backend timings to its own, a joiner counts a coalesced wait and its wait as database
//! time.
//!
//! A flight is keyed by what makes its answer valid for a joiner. For a page that is the
//! listing's generation as the joiner's own look-up saw it: a reader that looked up after a write
//! was acknowledged saw the write's new generation and so starts a flight of its own, never one
//! whose PostgreSQL read began before the write. A landed flight is gone at once: its answer is
//! never kept (a generation that failed to change must not keep serving it), so the leader of a
//! flight looks the cache up once more before it reads, and the stragglers of a stampede (their
//! look-up missed just before the fill) find the page there.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, Shared};
use futures::FutureExt as _;
use prometheus::IntCounter;
use tokio::time::Instant;

use super::{FeedError, Timings};

/// What a coalesced read lands with: its value, and the time its leader spent on each backend.
pub(super) type Landed<T> = Result<(T, Timings), FeedError>;

/// The flights of one kind of read, and the counter its joiners' waits go to; cheap to clone.
pub(super) struct Coalescer<K, T> {
    flights: Flights<K, Landed<T>>,
    waits: IntCounter,
}

impl<K, T> Clone for Coalescer<K, T> {
    fn clone(&self) -> Self {
        Self {
            flights: self.flights.clone(),
            waits: self.waits.clone(),
        }
    }
}

impl<K, T> Coalescer<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Flights whose joiners count their waits in `waits`.
    pub(super) fn new(waits: IntCounter) -> Self {
        Self {
            flights: Flights::default(),
            waits,
        }
    }

    /// Joins the flight of `key`, or leads it with `lead`, and accounts this request's part in
    /// `timings`: a leader adds the flight's own timings, a joiner counts a coalesced wait and
    /// spends its wait on the database. A failed flight is accounted nowhere.
    pub(super) async fn read(
        &self,
        key: K,
        timings: &mut Timings,
        lead: impl Future<Output = Landed<T>> + Send + 'static,
    ) -> Result<T, FeedError> {
        let started = Instant::now();
        let (outcome, role) = self.flights.run(key, lead).await;
        let (value, flight) = outcome?;
        match role {
            Role::Leader => {
                timings.db += flight.db;
                timings.redis += flight.redis;
            }
            Role::Joiner => {
                self.waits.inc();
                timings.db += started.elapsed();
            }
        }
        Ok(value)
    }
}

/// Who ran a flight: the request that led it or one that joined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Leader,
    Joiner,
}

/// The flights in the air, by key; cheap to clone.
struct Flights<K, V> {
    inflight: Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>>,
}

impl<K, V> Clone for Flights<K, V> {
    fn clone(&self) -> Self {
        Self {
            inflight: Arc::clone(&self.inflight),
        }
    }
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the flight of `key` if one is in the air, else runs `lead` as a new one. `lead` is
    /// only polled when this request leads. A leader dropped before landing (its client went
    /// away) leaves its joiners to drive the flight to the end; new arrivals start another.
    async fn run(&self, key: K, lead: impl Future<Output = V> + Send + 'static) -> (V, Role) {
        let (flight, role) = {
            let mut inflight = super::lock(&self.inflight);
            match inflight.get(&key) {
                Some(flight) => (flight.clone(), Role::Joiner),
                None => {
                    let flight = lead.boxed().shared();
                    inflight.insert(key.clone(), flight.clone());
                    (flight, Role::Leader)
                }
            }
        };
        let _landing = (role == Role::Leader).then(|| Landing {
            flights: self.clone(),
            key,
            flight: flight.clone(),
        });
        (flight.await, role)
    }

    /// Flights in the air now (for tests and gauges).
    #[cfg(test)]
    fn in_air(&self) -> usize {
        super::lock(&self.inflight).len()
    }
}

/// Removes a leader's flight when the leader is done with it, landed or dropped; a newer flight
/// of the same key is left alone.
struct Landing<K: Hash + Eq, V> {
    flights: Flights<K, V>,
    key: K,
    flight: Shared<BoxFuture<'static, V>>,
}

impl<K: Hash + Eq, V> Drop for Landing<K, V> {
    fn drop(&mut self) {
        let mut inflight = super::lock(&self.flights.inflight);
        if inflight
            .get(&self.key)
            .is_some_and(|flight| flight.ptr_eq(&self.flight))
        {
            inflight.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    // A paused clock: timers fire in the order of their deadlines however loaded the machine is
    // (with a real clock, a stalled thread can find every timer due at once).
    #[tokio::test(start_paused = true)]
    async fn concurrent_runs_of_one_key_share_one_flight_and_the_next_one_flies_again() {
        let flights: Flights<u32, usize> = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let lead = |runs: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            runs.fetch_add(1, Ordering::SeqCst) + 1
        };

        let outcomes =
            futures::future::join_all((0..50).map(|_| flights.run(7, lead(Arc::clone(&runs)))))
                .await;

        assert_eq!(runs.load(Ordering::SeqCst), 1, "one flight for 50 requests");
        assert!(outcomes.iter().all(|(value, _)| *value == 1));
        let leaders = outcomes.iter().filter(|(_, role)| *role == Role::Leader);
        assert_eq!(leaders.count(), 1);
        assert_eq!(flights.in_air(), 0, "a landed flight is gone");
        let (again, role) = flights.run(7, lead(Arc::clone(&runs))).await;
        assert_eq!((again, role), (2, Role::Leader), "a later miss reads again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_takes_its_flights_timings_and_a_joiner_counts_its_wait_as_database_time() {
        let waits = IntCounter::new("waits", "joiners' waits").expect("a valid counter");
        let coalescer: Coalescer<u32, &'static str> = Coalescer::new(waits.clone());
        let flight = Timings {
            redis: Duration::from_millis(3),
            db: Duration::from_millis(20),
        };
        let lead = move || async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(("rows", flight))
        };
        let (mut led, mut joined) = (Timings::default(), Timings::default());

        let (leader, joiner) = tokio::join!(coalescer.read(1, &mut led, lead()), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            coalescer.read(1, &mut joined, lead()).await
        });

        assert_eq!((leader.ok(), joiner.ok()), (Some("rows"), Some("rows")));
        assert_eq!((led.redis, led.db), (flight.redis, flight.db));
        assert_eq!(waits.get(), 1, "one coalesced wait, the joiner's");
        assert_eq!(joined.redis, Duration::ZERO);
        assert_eq!(
            joined.db,
            Duration::from_millis(15),
            "the joiner waited 15 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_leader_leaves_its_joiners_a_flight_that_still_lands() {
        let flights: Flights<u32, &'static str> = Flights::default();
        let slow = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            "landed"
        };
        let leader = flights.run(1, slow);
        let joiner = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            flights.run(1, async { "a second flight" }).await
        };

        let (dropped, joined) = tokio::join!(
            tokio::time::timeout(Duration::from_millis(10), leader),
            joiner
        );

        assert!(dropped.is_err(), "the leader was dropped mid-flight");
        assert_eq!(joined, ("landed", Role::Joiner));
    }
}
