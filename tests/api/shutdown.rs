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
