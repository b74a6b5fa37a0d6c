//! TopK against exact counts of Zipf streams, over its window, under concurrent records.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::Zipf;

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

/// Records 200,000 events of a seeded Zipf(1.1) over 100,000 keys; returns the detector and
/// the exact counts.
fn zipf_stream() -> (TopK<u64>, HashMap<u64, u64>) {
    let hot = TopK::new(10, MINUTE);
    let zipf = Zipf::new(100_000.0, 1.1).expect("valid parameters");
    let mut rng = StdRng::seed_from_u64(7);
    let mut exact = HashMap::new();
    for _ in 0..200_000 {
        let key = rng.sample(zipf) as u64;
        hot.record(&key);
        *exact.entry(key).or_insert(0) += 1;
    }
    (hot, exact)
}

fn hottest(exact: &HashMap<u64, u64>, n: usize) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = exact.iter().map(|(&key, &count)| (key, count)).collect();
    all.sort_unstable_by_key(|&(_, count)| Reverse(count));
    all.truncate(n);
    all
}

#[test]
fn the_true_top_ten_of_a_zipf_stream_are_reported_hottest_first() {
    // Arrange
    let (hot, exact) = zipf_stream();
    let truth = hottest(&exact, 10);

    // Act
    let top = hot.top();

    // Assert
    assert_eq!(top.len(), 10);
    let position = |key: u64| top.iter().position(|&(k, _)| k == key);
    for &(key, count) in &truth {
        assert!(
            position(key).is_some(),
            "key {key} ({count} events) is missing: {top:?}"
        );
    }
    // Keys further apart than count-min's error bound (e / width of all events) are ranked
    // in their true order.
    let bound = (std::f64::consts::E / WIDTH as f64 * hot.total() as f64) as u64;
    for pair in truth.windows(2) {
        let ((hotter, a), (colder, b)) = (pair[0], pair[1]);
        if a - b > bound {
            assert!(
                position(hotter) < position(colder),
                "{hotter} ({a}) before {colder} ({b}): {top:?}"
            );
        }
    }
    assert!(top.windows(2).all(|pair| pair[0].1 >= pair[1].1), "{top:?}");
}

#[test]
fn the_estimate_of_a_zipf_stream_never_under_counts_a_key() {
    // Arrange
    let (hot, exact) = zipf_stream();

    // Act
    let under: Vec<_> = exact
        .iter()
        .filter(|&(key, &count)| hot.estimate(key) < count)
        .collect();

    // Assert
    assert!(under.is_empty(), "under-counted: {under:?}");
    assert_eq!(hot.total(), 200_000);
}

#[test]
fn a_key_is_counted_in_full_until_a_whole_window_has_passed() {
    let window = Duration::from_millis(400);
    // A loaded machine may stall the thread past the window, and then there is nothing to
    // conclude: that attempt is discarded and the test tries again.
    for _attempt in 0..20 {
        // Arrange
        let hot = TopK::new(3, window);
        let recorded = Instant::now();
        hot.record_n(&"steady", 100);

        // Act
        thread::sleep(window / 2);
        hot.record(&"other");
        let estimate = hot.estimate(&"steady");

        // Assert
        if recorded.elapsed() >= window {
            continue;
        }
        assert!(estimate >= 100, "{estimate}");
        return;
    }
    panic!("the machine stalled past the window 20 times in a row");
}

#[test]
fn a_key_that_stops_being_recorded_leaves_the_top_within_one_and_a_half_windows() {
    // Arrange
    let window = Duration::from_millis(200);
    let hot = TopK::new(3, window);
    for _ in 0..1_000 {
        hot.record(&"stopped");
    }
    hot.record_n(&"steady", 10);
    assert_eq!(hot.top()[0].0, "stopped");

    // Act
    let stopped_at = Instant::now();
    while stopped_at.elapsed() < window * 3 / 2 + Duration::from_millis(20) {
        hot.record(&"steady");
        thread::sleep(Duration::from_millis(10));
    }

    // Assert
    let top = hot.top();
    assert!(top.iter().all(|&(key, _)| key != "stopped"), "{top:?}");
    assert_eq!(top[0].0, "steady");
    assert_eq!(hot.estimate(&"stopped"), 0);
}

#[test]
fn one_off_keys_never_grow_the_candidate_set_past_its_cap() {
    // Arrange
    let hot = TopK::new(10, MINUTE);
    let cap = 20;
    let candidates = |hot: &TopK<u64>| hot.lock().len();

    // Act and Assert
    for key in 0..1_000_000u64 {
        hot.record(&key);
        if key % 50_000 == 0 {
            assert!(candidates(&hot) <= cap, "after {key} keys");
        }
    }
    assert!(candidates(&hot) <= cap);
    assert!(hot.top().len() <= 10);
}

#[test]
fn concurrent_records_of_one_hot_key_are_all_counted() {
    // Arrange
    let hot = Arc::new(TopK::new(5, MINUTE));
    let threads: Vec<_> = (0..4u64)
        .map(|thread| {
            let hot = Arc::clone(&hot);
            thread::spawn(move || {
                for i in 0..10_000 {
                    hot.record(&0);
                    hot.record(&(1 + thread * 10_000 + i));
                }
            })
        })
        .collect();

    // Act
    for thread in threads {
        thread.join().expect("a recording thread panicked");
    }

    // Assert
    assert!(hot.estimate(&0) >= 40_000, "{}", hot.estimate(&0));
    assert_eq!(hot.top()[0].0, 0);
    assert_eq!(hot.total(), 80_000);
}

#[test]
fn is_hot_admits_a_hot_key_and_refuses_a_cold_or_unseen_one() {
    // Arrange
    let hot = TopK::new(10, MINUTE);
    hot.record_n(&"celebrity", 1_000);
    hot.record(&"lurker");

    // Act and Assert
    let cases = [
        ("celebrity", 500, true, "recorded 1,000 times"),
        ("lurker", 500, false, "recorded once"),
        ("stranger", 500, false, "never recorded"),
        ("stranger", 0, true, "a threshold of 0 admits every key"),
    ];
    for (key, min_count, expected, why) in cases {
        assert_eq!(hot.is_hot(&key, min_count), expected, "{key}: {why}");
    }
}

#[test]
fn a_top_of_zero_keeps_no_candidates() {
    // Arrange
    let hot = TopK::new(0, MINUTE);

    // Act
    for key in 0..1_000u64 {
        hot.record(&key);
    }

    // Assert
    assert!(hot.top().is_empty());
    assert_eq!(hot.lock().len(), 0);
    assert!(hot.estimate(&5) >= 1);
}

proptest! {
    #[test]
    fn the_estimate_never_under_counts_a_stream_within_one_window(
        stream in prop::collection::vec((0u8..32, 1u32..1_000), 0..300),
    ) {
        // Arrange
        let hot = TopK::new(4, MINUTE);
        let mut exact: HashMap<u8, u64> = HashMap::new();

        // Act
        for &(key, n) in &stream {
            hot.record_n(&key, n);
            *exact.entry(key).or_insert(0) += u64::from(n);
        }

        // Assert
        for (key, &count) in &exact {
            let estimate = hot.estimate(key);
            prop_assert!(estimate >= count, "key {}: {} < {}", key, estimate, count);
        }
        prop_assert_eq!(hot.total(), exact.values().sum::<u64>());
        let top = hot.top();
        prop_assert!(top.len() <= 4);
        let keys: HashSet<u8> = top.iter().map(|&(key, _)| key).collect();
        prop_assert_eq!(keys.len(), top.len(), "a key listed twice: {:?}", top);
        for &(key, count) in &top {
            prop_assert!(count >= exact[&key], "key {}: {} < {}", key, count, exact[&key]);
        }
    }
}

/// Measure it in a release build (`--release`): a debug build's timing says little about the service.
#[test]
#[ignore = "a timing, not a check: cargo test --lib hot -- --ignored --nocapture"]
fn prints_the_cost_of_record() {
    const EVENTS: u32 = 1_000_000;
    let zipf = Zipf::new(100_000.0, 1.1).expect("valid parameters");
    let mut rng = StdRng::seed_from_u64(7);
    let streams: [(&str, Vec<u64>); 3] = [
        ("one hot key", vec![0; EVENTS as usize]),
        ("distinct one-off keys", (0..u64::from(EVENTS)).collect()),
        (
            "Zipf(1.1) over 100,000 keys",
            (0..EVENTS).map(|_| rng.sample(zipf) as u64).collect(),
        ),
    ];
    for (name, keys) in &streams {
        let hot = TopK::new(10, MINUTE);
        let started = Instant::now();
        for key in keys {
            hot.record(key);
        }
        let record = started.elapsed() / EVENTS;
        let started = Instant::now();
        for key in keys {
            std::hint::black_box(hot.is_hot(key, 100));
        }
        let is_hot = started.elapsed() / EVENTS;
        println!("{name}: record {record:?}, is_hot {is_hot:?}");
    }
    let hot = TopK::new(10, MINUTE);
    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| (0..EVENTS).for_each(|_| hot.record(&0u64)));
        }
    });
    println!(
        "one hot key from 2 threads: record {:?} of wall time each",
        started.elapsed() / (2 * EVENTS)
    );
}
