//! Stopping the server stops and joins every background task, under load too.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotfeed::config::Switch;

use crate::helpers::build_app_with;

/// The shutdown timeout of the app under test.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// What a loaded machine may add to it.
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn serve_returns_within_the_shutdown_timeout_with_every_task_ended_under_load() {
    // Arrange: the in-process tier on (its invalidation subscriber is a task of its own), a
    // home feed and a listing to read, and readers that keep asking while the server stops.
    let (app, test_app) = build_app_with(|settings| {
        settings.cache.l1 = Switch::On;
        settings.shutdown_timeout_secs = SHUTDOWN_TIMEOUT.as_secs();
    })
    .await;
    let stopper = app.stopper();
    let tasks = app.tasks();
    let serving = tokio::spawn(app.run_until_stopped());
    let user = test_app.create_user("ada").await;
    test_app.create_posts(user, 30).await;
    let test_app = Arc::new(test_app);
    let stopping = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (test_app, stopping, served) = (
                Arc::clone(&test_app),
                Arc::clone(&stopping),
                Arc::clone(&served),
            );
            let path = if i % 2 == 0 {
                format!("/api/v1/users/{user}/posts?limit=10")
            } else {
                format!("/api/v1/users/{user}/feed?limit=10")
            };
            tokio::spawn(async move {
                while !stopping.load(Ordering::Relaxed) {
                    let answered = test_app
                        .client
                        .get(test_app.url(&path))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    if answered.is_ok_and(|res| res.status().is_success()) {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(served.load(Ordering::Relaxed) > 0, "the readers are served");
    assert!(tasks.running() > 0, "the app runs background tasks");

    // Act
    let started = Instant::now();
    stopper.stop(true).await;
    let outcome = tokio::time::timeout(SHUTDOWN_TIMEOUT + SLACK, serving).await;
    let took = started.elapsed();
    stopping.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("a reader ends");
    }

    // Assert
    let outcome = outcome.expect("serve returns within the shutdown timeout");
    outcome
        .expect("serve did not panic")
        .expect("serve ended cleanly");
    assert!(took < SHUTDOWN_TIMEOUT + SLACK, "stopping took {took:?}");
    assert_eq!(tasks.running(), 0, "every background task ended");
}

/// A drain longer than any test: the test ends it with the stopper once it has seen what it checks.
const LONG_DRAIN_SECS: u64 = 600;
/// Reads each reader must be served while the instance drains.
const READS_WHILE_DRAINING: usize = 5;

#[tokio::test]
async fn a_stop_drains_first_readiness_fails_while_every_read_is_still_served_and_closes_its_connection(
) {
    // Arrange: readers on keep-alive connections, as a balancer's pool would hold them; each
    // stops once it has been served a few times after readiness turned 503.
    let (app, test_app) = build_app_with(|settings| {
        settings.shutdown_timeout_secs = SHUTDOWN_TIMEOUT.as_secs();
        settings.shutdown_drain_secs = LONG_DRAIN_SECS;
    })
    .await;
    let (stopper, terminator, tasks) = (app.stopper(), app.terminator(), app.tasks());
    let serving = tokio::spawn(app.run_until_stopped());
    let user = test_app.create_user("ada").await;
    test_app.create_posts(user, 10).await;
    let test_app = Arc::new(test_app);
    let health = test_app.anonymous.get(test_app.url("/health"));
    let ready = health.try_clone().expect("a GET").send().await;
    assert_eq!(ready.expect("an answer").status().as_u16(), 200, "ready");
    let draining_seen = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let test_app = Arc::clone(&test_app);
            let path = format!("/api/v1/users/{user}/posts?limit=10");
            let draining_seen = Arc::clone(&draining_seen);
            tokio::spawn(async move {
                let (mut failed, mut served_draining, mut closed) = (0, 0, 0);
                while served_draining < READS_WHILE_DRAINING {
                    let draining = draining_seen.load(Ordering::Relaxed);
                    match test_app.client.get(test_app.url(&path)).send().await {
                        Ok(res) if res.status().is_success() => {
                            let close = res
                                .headers()
                                .get("connection")
                                .is_some_and(|v| v == "close");
                            served_draining += usize::from(draining);
                            closed += usize::from(draining && close);
                        }
                        _ => failed += 1,
                    }
                }
                (failed, closed)
            })
        })
        .collect();

    // Act: stop as SIGTERM would, wait until readiness says so, then until every reader has been
    // served during the drain; the stopper then ends the drain early.
    terminator.cancel();
    let draining = readiness_once_draining(&health).await;
    draining_seen.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for reader in readers {
        let ended = tokio::time::timeout(Duration::from_secs(60), reader).await;
        outcomes.push(
            ended
                .expect("a reader is served while draining")
                .expect("no panic"),
        );
    }
    let stop_started = Instant::now();
    stopper.stop(true).await;
    let outcome = tokio::time::timeout(SHUTDOWN_TIMEOUT + SLACK, serving).await;

    // Assert
    assert_eq!(draining["status"], "draining");
    for (i, (failed, closed)) in outcomes.into_iter().enumerate() {
        assert_eq!(
            failed, 0,
            "reader {i}: a read failed before or during the drain"
        );
        assert_eq!(
            closed, READS_WHILE_DRAINING,
            "reader {i}: every answer during the drain says Connection: close"
        );
    }
    outcome
        .expect("serve returns within the shutdown timeout of the stop")
        .expect("serve did not panic")
        .expect("serve ended cleanly");
    assert!(stop_started.elapsed() < SHUTDOWN_TIMEOUT + SLACK);
    assert_eq!(tasks.running(), 0, "every background task ended");
}

#[tokio::test]
async fn after_the_drain_period_the_listener_closes_and_serve_returns_by_itself() {
    // Arrange
    const DRAIN: Duration = Duration::from_secs(1);
    let (app, test_app) = build_app_with(|settings| {
        settings.shutdown_timeout_secs = SHUTDOWN_TIMEOUT.as_secs();
        settings.shutdown_drain_secs = DRAIN.as_secs();
    })
    .await;
    let (terminator, tasks) = (app.terminator(), app.tasks());
    let serving = tokio::spawn(app.run_until_stopped());
    let health = test_app.anonymous.get(test_app.url("/health"));

    // Act: stop as SIGTERM would, and wait for serve to return.
    let started = Instant::now();
    terminator.cancel();
    let draining = readiness_once_draining(&health).await;
    let outcome = tokio::time::timeout(DRAIN + SHUTDOWN_TIMEOUT + SLACK, serving).await;
    let took = started.elapsed();

    // Assert
    assert_eq!(
        draining["status"], "draining",
        "readiness fails during the drain"
    );
    outcome
        .expect("serve returns once drained")
        .expect("serve did not panic")
        .expect("serve ended cleanly");
    assert!(
        took >= DRAIN,
        "the listener stayed open for the drain ({took:?})"
    );
    let refused = health.try_clone().expect("a GET").send().await;
    assert!(refused.is_err(), "the listener is closed: {refused:?}");
    assert_eq!(tasks.running(), 0, "every background task ended");
}

/// Polls readiness until it answers 503, and returns that answer's body; every poll must be
/// answered (the listener stays open while draining).
async fn readiness_once_draining(health: &reqwest::RequestBuilder) -> serde_json::Value {
    loop {
        let res = health.try_clone().expect("a GET").send().await;
        let res = res.expect("readiness answered while draining");
        if res.status().as_u16() == 503 {
            return res.json().await.expect("a JSON body");
        }
    }
}
