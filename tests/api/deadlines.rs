//! No query without a deadline: a statement past `DB_STATEMENT_TIMEOUT_MS` answers 503, and a flood
//! of slow misses neither takes readiness down nor slows cache hits.

use std::time::{Duration, Instant};

use futures::future::join_all;
use sqlx::{Executor as _, PgConnection};

use crate::helpers::{error_code, eventually, expect_status, spawn_app_with, TestApp};

/// An open transaction holding `ACCESS EXCLUSIVE` on `posts`: every statement that reads posts
/// waits for it, as it would behind a migration or a long write.
struct PostsLock(PgConnection);

impl PostsLock {
    async fn take(app: &TestApp) -> Self {
        let mut connection = app.db().await;
        connection
            .execute("BEGIN; LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock posts");
        Self(connection)
    }

    async fn release(mut self) {
        self.0.execute("ROLLBACK").await.expect("release the lock");
    }
}

/// Page queries of posts started so far (counted as they start, once admitted).
async fn page_queries(app: &TestApp) -> f64 {
    app.metrics()
        .await
        .get("db_queries_total", &[("query", "user_posts_page")])
        .unwrap_or(0.0)
}

/// Waits until `count` more page queries than `baseline` have started: the requests sent are
/// then on PostgreSQL (or waiting for a connection), however slowly the machine got them there.
async fn until_page_queries(app: &TestApp, baseline: f64, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while page_queries(app).await < baseline + count {
        assert!(
            Instant::now() < deadline,
            "{count} page queries started within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_statement_past_the_timeout_answers_503_and_the_next_one_succeeds() {
    // Arrange: every read of posts must wait for a lock we hold.
    let app = spawn_app_with(|settings| settings.database.db_statement_timeout_ms = 300).await;
    let user = app.create_user("stalled").await;
    app.create_posts(user, 2).await;
    let lock = PostsLock::take(&app).await;

    // Act
    let started = Instant::now();
    let res = app.get(&format!("/api/v1/users/{user}/posts")).await;
    let waited = started.elapsed();

    // Assert
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "unavailable");
    // Left waiting, it would answer only when the lock is released, after this assertion; the
    // bound is far above 300 ms so that a loaded machine cannot fail it.
    assert!(
        waited < Duration::from_secs(15),
        "cancelled at the statement timeout, not left waiting: {waited:?}"
    );
    lock.release().await;
    let res = app.get(&format!("/api/v1/users/{user}/posts")).await;
    assert_eq!(
        res.status(),
        200,
        "the cancelled statement freed its connection"
    );
}

#[tokio::test]
async fn a_flood_of_slow_misses_leaves_readiness_up_and_cache_hits_fast() {
    // Arrange: one user's page cached; another's pages will all wait on a lock.
    let app = spawn_app_with(|settings| {
        settings.database.db_statement_timeout_ms = 500;
        settings.database.db_max_connections = 4;
    })
    .await;
    let cached = app.create_user("cached").await;
    let flooded = app.create_user("flooded").await;
    app.create_posts(cached, 3).await;
    app.create_posts(flooded, 3).await;
    let cached_page = format!("/api/v1/users/{cached}/posts");
    app.get(&cached_page).await;
    let baseline = page_queries(&app).await;
    let lock = PostsLock::take(&app).await;

    // Act: 64 concurrent misses against a pool of 4, and meanwhile a readiness probe and a hit.
    let flood = join_all((0..64).map(|n| {
        let path = format!("/api/v1/users/{flooded}/posts?limit=2&offset={n}");
        let app = &app;
        async move { app.get(&path).await.status().as_u16() }
    }));
    let probes = async {
        until_page_queries(&app, baseline, 4.0).await;
        let started = Instant::now();
        let health = app.get("/health").await.status().as_u16();
        let health_took = started.elapsed();
        let started = Instant::now();
        let hit = app.get(&cached_page).await;
        let hit_took = started.elapsed();
        let x_cache = hit.headers()["x-cache"].to_str().expect("ASCII").to_owned();
        (
            health,
            health_took,
            hit.status().as_u16(),
            x_cache,
            hit_took,
        )
    };
    let (statuses, (health, health_took, hit, x_cache, hit_took)) = tokio::join!(flood, probes);
    lock.release().await;

    // Assert
    assert_eq!(health, 200, "PostgreSQL is up, only busy: still ready");
    assert!(
        health_took < Duration::from_secs(1),
        "the probe has its own connection: {health_took:?}"
    );
    assert_eq!((hit, x_cache.as_str()), (200, "HIT"));
    assert!(
        hit_took < Duration::from_secs(1),
        "hits never wait on the pool: {hit_took:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 503),
        "every flooded miss is a clean 503, none a 500 or a hang: {statuses:?}"
    );
    // The pool's connections come back from their cancelled statements on their own; on a loaded
    // machine that can outlast the first read after the lock is gone.
    let path = format!("/api/v1/users/{flooded}/posts");
    eventually(
        "the service recovers with the lock gone",
        Duration::from_secs(30),
        || async { expect_status(app.get(&path).await, 200).await },
    )
    .await;
}

#[tokio::test]
async fn past_the_inflight_bound_misses_and_writes_are_shed_at_once() {
    // Arrange: at most 4 requests may wait on PostgreSQL, and PostgreSQL is stuck behind a lock
    // for 10 s: a request queued behind them would take that long, one shed answers at once.
    let app = spawn_app_with(|settings| {
        settings.database.db_statement_timeout_ms = 10_000;
        settings.database.db_max_connections = 2;
        settings.database.db_max_inflight = 4;
        settings.database.db_acquire_timeout_ms = 10_000;
        settings.http_request_timeout_ms = 60_000;
    })
    .await;
    let user = app.create_user("shed").await;
    app.create_posts(user, 3).await;
    let cached_page = format!("/api/v1/users/{user}/posts");
    app.get(&cached_page).await;
    let baseline = page_queries(&app).await;
    let lock = PostsLock::take(&app).await;

    // Act: 4 misses take the slots; then 20 more misses and writes arrive.
    let holders = join_all((0..4).map(|n| {
        let path = format!("/api/v1/users/{user}/posts?limit=1&offset={n}");
        let app = &app;
        async move { app.get(&path).await.status().as_u16() }
    }));
    let latecomers = async {
        until_page_queries(&app, baseline, 4.0).await;
        join_all((0..20).map(|n| {
            let app = &app;
            async move {
                let started = Instant::now();
                let res = if n % 2 == 0 {
                    app.get(&format!("/api/v1/users/{user}/posts?limit=2&offset={n}"))
                        .await
                } else {
                    let body = serde_json::json!({"user_id": user, "content": "shed me"});
                    app.post_json("/api/v1/posts", &body).await
                };
                let took = started.elapsed();
                let retry_after = res.headers().contains_key("retry-after");
                (
                    res.status().as_u16(),
                    retry_after,
                    error_code(res).await,
                    took,
                )
            }
        }))
        .await
    };
    let hit = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let res = app.get(&cached_page).await;
        (
            res.status().as_u16(),
            res.headers()["x-cache"].to_str().expect("ASCII").to_owned(),
        )
    };
    let (held, shed, hit) = tokio::join!(holders, latecomers, hit);
    lock.release().await;

    // Assert
    for (status, retry_after, code, took) in shed {
        assert_eq!((status, code.as_str()), (503, "overloaded"));
        assert!(retry_after, "an overloaded 503 says when to retry");
        assert!(
            took < Duration::from_secs(3),
            "shed at once, not queued for the 10 s the holders wait: {took:?}"
        );
    }
    assert!(
        held.iter().all(|&s| s == 503),
        "the stuck ones time out: {held:?}"
    );
    assert_eq!(hit, (200, "HIT".to_owned()), "cache hits are never shed");
    let shed_total = app.metrics().await.get("db_shed_total", &[]);
    assert_eq!(shed_total, Some(20.0));
    let path = format!("/api/v1/users/{user}/posts?limit=3");
    eventually(
        "with the lock gone the slots are free again",
        Duration::from_secs(30),
        || async { expect_status(app.get(&path).await, 200).await },
    )
    .await;
}

#[tokio::test]
async fn a_request_past_the_request_deadline_answers_503_timeout_at_the_deadline() {
    // Arrange: statements may run 60 s, but a whole request only 400 ms.
    let app = spawn_app_with(|settings| {
        settings.database.db_statement_timeout_ms = 60_000;
        settings.http_request_timeout_ms = 400;
    })
    .await;
    let user = app.create_user("deadline").await;
    app.create_posts(user, 2).await;
    let lock = PostsLock::take(&app).await;

    // Act
    let started = Instant::now();
    let res = app.get(&format!("/api/v1/users/{user}/posts")).await;
    let waited = started.elapsed();
    lock.release().await;

    // Assert
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(error_code(res).await, "timeout");
    // At the statement's deadline it would be 60 s; the bound leaves a loaded machine room.
    assert!(
        waited < Duration::from_secs(15),
        "answered at the request deadline, not the statement's: {waited:?}"
    );
    let res = app.get(&format!("/api/v1/users/{user}/posts")).await;
    assert_eq!(
        res.status(),
        200,
        "the dropped request freed its connection"
    );
}
