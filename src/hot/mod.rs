//! Hot keys: a bounded heavy-hitter detector over a sliding window, one [`TopK`] per kind of thing
//! (cache keys, users, Redis slots). It answers three questions cheaply enough to ask on every
//! request: which are the hottest now (`GET /api/v1/admin/hot`, bounded metrics), and is this
//! one hot (what the in-process cache tier admits).
//!
//! # Counting
//!
//! A count-min sketch with conservative update: 4 rows of 2048 `AtomicU32` counters. A key's
//! count is the smallest of its 4 counters, so it never under-counts; conservative update raises
//! only the counters below that minimum plus the increment, which keeps cold keys' over-counts
//! small and the hottest keys' counts close to exact: a cold key's record raises a shared counter
//! only up to the cold key's own estimate, which stays below a hot key's. Plain count-min adds
//! every record of every key that shares a counter, the hottest keys' included.
//! `the_estimate_of_a_zipf_stream_never_under_counts_a_key` checks the bound this module relies on.
//!
//! The obvious lock-free conservative update (load the minimum, `fetch_max` each counter to
//! minimum + n) loses increments: two records of one key that read the same minimum both write
//! minimum + 1. Under contention that loses a large share of one hot key's records, an
//! under-count of exactly the keys this module exists to find
//! (`concurrent_records_of_one_hot_key_are_all_counted` fails with it). So each record reads its 4
//! counters, moves each one it must raise from the value it read with a compare-exchange, and
//! re-reads and retries if any had moved meanwhile. Two records of one key then cannot both
//! succeed on views that miss each other (each would have to read a counter the other already
//! raised, before raising one the other read, and acquire/release orders forbid that cycle), so
//! their targets are totally ordered and none is lost. It stays lock-free: a failed exchange means
//! another one succeeded.
//!
//! A key's 4 columns are 4 disjoint 16-bit lanes of one 64-bit hash from a per-instance
//! [`RandomState`] (clients cannot aim collisions at a key they do not know the seed for). Double
//! hashing (`h1 + i * h2`) would be the textbook choice, but modulo 2048 it maps two keys to the
//! same 4 counters whenever `h1` and `h2` both agree modulo 2048 (22 bits): over a large stream
//! some cold key then shares every counter with the hottest one and inherits its whole count,
//! where with lanes two keys share all 4 counters only if the 44 bits the lanes use agree.
//!
//! # The window
//!
//! Counts are kept per sub-window of `window / 2`, in 3 sketches used in turn, each tagged with
//! the sub-window (epoch) it holds. A count sums the sketches whose epoch is the current one or
//! one of the two before it, so it covers between `window` and `1.5 * window` of history: it never
//! under-counts the last `window`, and an event is forgotten at most `1.5 * window` after it
//! happened (two sketches would forget sooner but could drop events younger than `window`).
//! Turning is lazy, with no background task: the first record of a new epoch clears the sketch it
//! reuses (8,192 stores, once per half window, under the candidate lock), and readers skip sketches
//! whose epoch is too old, so an instance that has gone quiet forgets without any write.
//!
//! # Candidates
//!
//! The sketch cannot list keys, so a candidate set remembers up to `2 * k` of them with their last
//! count. A record offers its key only when the key's count is above the set's floor (its smallest
//! count once full, 0 while it has room) and has just crossed a multiple of an eighth to a
//! sixteenth of itself: cold keys never take the lock, and hot keys, already members, take it a
//! few dozen times per doubling of their count instead of on every record (151 times for
//! 2,000,000 records of one key, 2,010 for a Zipf(1.1) stream of that length). A newcomer
//! replaces the coldest member when its count beats that member's fresh count. Members' counts
//! are re-read from the sketch at every turn of the window and at every [`TopK::top`], and those
//! whose count fell to 0 leave, so a key that stopped being hot leaves the top as its events age
//! out.
//!
//! # Memory
//!
//! Fixed whatever clients send: 3 × 4 × 2048 × 4 B = 96 KiB of counters, plus at most `2 * k`
//! candidates, each a clone of its key and 16 bytes in a `HashMap`. Keys should be small values
//! (ids, or keys built by [`crate::cache::keys`]), since each candidate owns one.
//!
//! No crate was a fit: `count-min-sketch` needs `&mut self`, `cmsketch` has atomic counters but
//! neither conservative update nor a window, and moka's TinyLFU sketch is private. None lists its
//! heaviest keys.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counters a key has in each sketch; its count is their minimum.
const ROWS: usize = 4;
/// Counters per row, a power of two so a lane of the hash picks one with a mask.
const WIDTH: usize = 2048;
/// Bits of the hash each row's column is taken from (disjoint lanes, see the module doc).
const LANE_BITS: usize = 16;
/// Sketches kept: the current sub-window and the two before it.
const SKETCHES: u64 = 3;

const _: () = assert!(WIDTH.is_power_of_two() && WIDTH <= 1 << LANE_BITS);
const _: () = assert!(ROWS * LANE_BITS <= 64);

/// The `k` hottest keys of a sliding window, and an estimate of any key's count in it.
///
/// Shared behind an `Arc`; every method takes `&self`.
pub struct TopK<K> {
    k: usize,
    cap: usize,
    start: Instant,
    sub_window_nanos: u64,
    hasher: RandomState,
    sketches: [Sketch; SKETCHES as usize],
    /// What a key's count must be above to be offered to the candidates: read without the lock on
    /// every record, written under it.
    floor: AtomicU64,
    candidates: Mutex<HashMap<K, Candidate>>,
}

/// What the candidate set keeps of a key besides the key itself.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// The key's hash, so its count can be re-read without hashing it again.
    hash: u64,
    count: u64,
}

/// One sub-window's counts.
struct Sketch {
    /// The sub-window these counts are of; a sketch is cleared before it takes a newer one.
    epoch: AtomicU64,
    /// Every increment of the sub-window, exactly.
    total: AtomicU64,
    counters: Box<[AtomicU32]>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> TopK<K> {
    /// A detector of the `k` hottest keys over the last `window` (see the module doc for how long
    /// an event is remembered).
    ///
    /// # Panics
    ///
    /// If `window` is zero.
    pub fn new(k: usize, window: Duration) -> Self {
        assert!(!window.is_zero(), "a hot-key window must not be empty");
        let sub_window_nanos = u64::try_from(window.as_nanos() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            k,
            cap: k.saturating_mul(2),
            start: Instant::now(),
            sub_window_nanos,
            hasher: RandomState::new(),
            sketches: std::array::from_fn(|_| Sketch::new()),
            floor: AtomicU64::new(if k == 0 { u64::MAX } else { 0 }),
            candidates: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event of `key`.
    pub fn record(&self, key: &K) {
        self.record_n(key, 1);
    }

    /// Counts `n` events of `key`; a sub-window's counters saturate at `u32::MAX`.
    pub fn record_n(&self, key: &K, n: u32) {
        if n == 0 {
            return;
        }
        let hash = self.hasher.hash_one(key);
        let epoch = self.epoch_now();
        let current = self.sketch_for(epoch);
        let (before, after) = self.sketches[current].add(hash, n);
        let floor = self.floor.load(Ordering::Relaxed);
        let past = self.count_at(hash, epoch, Some(current));
        let (before, after) = (past + u64::from(before), past + u64::from(after));
        // A key above the floor offers itself when its count crosses a multiple of an eighth to a
        // sixteenth of itself: a few dozen times per doubling of its count, whether or not the
        // set is full, and at most an eighth of its count late.
        let step = after.checked_ilog2().unwrap_or(0).saturating_sub(3);
        if after > floor && before >> step != after >> step {
            self.offer(key, hash, after, epoch);
        }
    }

    /// The key's approximate count over the window: never less than its events of the last
    /// `window`, more by the collisions of the keys that share its counters.
    pub fn estimate(&self, key: &K) -> u64 {
        self.count_at(self.hasher.hash_one(key), self.epoch_now(), None)
    }

    /// Whether `key` has been seen at least `min_count` times in the window, by [`Self::estimate`]
    /// (so a cold key is admitted only when it shares all its counters with hotter ones).
    pub fn is_hot(&self, key: &K, min_count: u64) -> bool {
        self.estimate(key) >= min_count
    }

    /// At most `k` keys with their counts over the window, hottest first.
    pub fn top(&self) -> Vec<(K, u64)> {
        let epoch = self.epoch_now();
        let mut top: Vec<(K, u64)> = {
            let mut candidates = self.lock();
            self.refresh(&mut candidates, epoch);
            candidates
                .iter()
                .map(|(key, candidate)| (key.clone(), candidate.count))
                .collect()
        };
        top.sort_unstable_by_key(|&(_, count)| Reverse(count));
        top.truncate(self.k);
        top
    }

    /// Every event recorded in the window, exactly, so a key's share is `estimate / total`.
    pub fn total(&self) -> u64 {
        let epoch = self.epoch_now();
        self.sketches
            .iter()
            .filter(|sketch| sketch.is_in_window(epoch))
            .map(|sketch| sketch.total.load(Ordering::Relaxed))
            .sum()
    }

    /// The sub-window `now` falls in.
    fn epoch_now(&self) -> u64 {
        // Wraps after 584 years.
        Instant::now().duration_since(self.start).as_nanos() as u64 / self.sub_window_nanos
    }

    /// The index of the sketch that holds `epoch`, cleared first if it held an older one.
    fn sketch_for(&self, epoch: u64) -> usize {
        let index = (epoch % SKETCHES) as usize;
        let sketch = &self.sketches[index];
        // A newer epoch than ours means our clock read is stale: counting the event in the newer
        // sub-window over-counts it slightly, which is allowed.
        if sketch.epoch.load(Ordering::Acquire) < epoch {
            let mut candidates = self.lock();
            if sketch.epoch.load(Ordering::Acquire) < epoch {
                sketch.clear();
                // Release: a writer that sees the new epoch sees the cleared counters, so none
                // of its increments can be wiped.
                sketch.epoch.store(epoch, Ordering::Release);
                self.refresh(&mut candidates, epoch);
            }
        }
        index
    }

    /// A hash's count summed over the sketches in the window at `epoch`, but `skip`.
    fn count_at(&self, hash: u64, epoch: u64, skip: Option<usize>) -> u64 {
        let mut count = 0;
        for (index, sketch) in self.sketches.iter().enumerate() {
            if Some(index) != skip && sketch.is_in_window(epoch) {
                count += u64::from(sketch.count(hash));
            }
        }
        count
    }

    /// Lets `key`, whose count is `count`, into the candidates if it is one of the hottest.
    fn offer(&self, key: &K, hash: u64, count: u64, epoch: u64) {
        let mut candidates = self.lock();
        if let Some(member) = candidates.get_mut(key) {
            member.count = count;
        } else {
            if candidates.len() >= self.cap {
                // Members' counts are only as fresh as their last offer: compare with now's.
                self.refresh(&mut candidates, epoch);
            }
            if candidates.len() >= self.cap {
                let coldest = candidates
                    .iter()
                    .min_by_key(|(_, member)| member.count)
                    .filter(|(_, member)| member.count < count)
                    .map(|(key, _)| key.clone());
                let Some(coldest) = coldest else {
                    return;
                };
                candidates.remove(&coldest);
            }
            candidates.insert(key.clone(), Candidate { hash, count });
        }
        let floor = self.floor_of(&candidates);
        self.floor.store(floor, Ordering::Relaxed);
    }

    /// Re-reads every member's count and drops those that fell to 0.
    fn refresh(&self, candidates: &mut HashMap<K, Candidate>, epoch: u64) {
        candidates.retain(|_, member| {
            member.count = self.count_at(member.hash, epoch, None);
            member.count > 0
        });
        let floor = self.floor_of(candidates);
        self.floor.store(floor, Ordering::Relaxed);
    }

    /// What a newcomer's count must be above: 0 while there is room, the coldest member's count
    /// once full (and never reached when `k` is 0).
    fn floor_of(&self, candidates: &HashMap<K, Candidate>) -> u64 {
        if candidates.len() < self.cap {
            return 0;
        }
        candidates
            .values()
            .map(|member| member.count)
            .min()
            .unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Candidate>> {
        // Every state of the map is a valid candidate set, so one left by a panic is still usable.
        self.candidates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sketch {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            total: AtomicU64::new(0),
            counters: (0..ROWS * WIDTH).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Whether this sketch holds one of the sub-windows of the window at `epoch`.
    fn is_in_window(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) + (SKETCHES - 1) >= epoch
    }

    /// The hash's counter in `row`.
    fn cell(&self, hash: u64, row: usize) -> &AtomicU32 {
        let column = (hash >> (row * LANE_BITS)) as usize & (WIDTH - 1);
        &self.counters[row * WIDTH + column]
    }

    /// The hash's count in this sub-window.
    fn count(&self, hash: u64) -> u32 {
        let mut count = u32::MAX;
        for row in 0..ROWS {
            count = count.min(self.cell(hash, row).load(Ordering::Acquire));
        }
        count
    }

    /// Adds `n` to the hash's count by conservative update; returns its count before and after.
    fn add(&self, hash: u64, n: u32) -> (u32, u32) {
        self.total.fetch_add(u64::from(n), Ordering::Relaxed);
        'retry: loop {
            let mut seen = [0; ROWS];
            for (row, was) in seen.iter_mut().enumerate() {
                *was = self.cell(hash, row).load(Ordering::Acquire);
            }
            let before = seen.iter().copied().min().unwrap_or(0);
            let after = before.saturating_add(n);
            for (row, &was) in seen.iter().enumerate() {
                // Acquire/release on every counter is what makes the retry sound (module doc).
                if was < after
                    && self
                        .cell(hash, row)
                        .compare_exchange(was, after, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                {
                    continue 'retry;
                }
            }
            return (before, after);
        }
    }

    fn clear(&self) {
        for counter in self.counters.iter() {
            counter.store(0, Ordering::Relaxed);
        }
        self.total.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
