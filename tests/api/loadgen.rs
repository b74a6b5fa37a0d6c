//! loadgen against the real app: what it reports must agree with what the service counted.

use ::loadgen::{Plan, Report};

use crate::helpers::{spawn_app, TestApp};

/// Three users (ids 1..=3 in the fresh database), 60 posts each: a first page and a short second.
async fn app_with_three_users() -> TestApp {
    let app = spawn_app().await;
    for name in ["hot", "warm", "cold"] {
        let user = app.create_user(name).await;
        app.create_posts(user, 60).await;
    }
    app
}

async fn run_loadgen(app: &TestApp, load: &[&str]) -> Report {
    let mut args = vec![
        "--url",
        &app.address,
        "--users",
        "3",
        "--offsets",
        "0=80,50=20",
        "--seed",
        "7",
        "--quiet",
    ];
    args.extend_from_slice(load);
    let plan = Plan::from_args(args).expect("valid loadgen arguments");
    ::loadgen::run(&plan).await.expect("loadgen runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_report_agrees_with_the_services_metrics() {
    // Arrange
    let app = app_with_three_users().await;

    // Act
    let report = run_loadgen(
        &app,
        &[
            "--concurrency",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
        ],
    )
    .await;

    // Assert: every measured request answered, and the service counted exactly those.
    assert!(report.responses > 50, "some load was applied: {report:?}");
    assert_eq!(report.statuses.len(), 1, "only 200s: {:?}", report.statuses);
    assert_eq!(report.statuses["200"], report.responses);
    let service = report.service.as_ref().expect("the app serves /metrics");
    assert_eq!(service.total_pages(), report.responses, "pages served");
    assert_eq!(service.page_responses["200"], report.responses);
    for (x_cache, count) in &report.x_cache {
        assert_eq!(
            service.pages.get(&x_cache.to_ascii_lowercase()),
            Some(count),
            "X-Cache {x_cache} seen by the client vs feed_pages_total"
        );
    }
    assert!(
        report.x_cache.get("HIT").copied().unwrap_or(0) > report.responses / 2,
        "after the warm-up most pages are hits: {:?}",
        report.x_cache
    );
    let misses = service.pages.get("miss").copied().unwrap_or(0);
    assert_eq!(
        service
            .db_queries
            .get("user_posts_page")
            .copied()
            .unwrap_or(0),
        misses,
        "one page query per miss"
    );
    assert!(service.db_queries_per_page < 0.5);
    let commands: u64 = service.redis_nodes.iter().map(|node| node.commands).sum();
    assert!(
        commands >= 2 * report.responses,
        "a hit sends at least the page look-up's 2 commands"
    );
    assert!(
        service.redis_nodes.len() >= 2,
        "post objects spread over several nodes: {:?}",
        service.redis_nodes
    );
    assert_eq!(report.top_users[0].user, 1, "user 1 is the hottest");
    let shares: f64 = report.top_users.iter().map(|user| user.share).sum();
    assert!((shares - 1.0).abs() < 1e-9, "three users share everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_exactly_its_schedule() {
    // Arrange
    let app = app_with_three_users().await;

    // Act: 100 requests/s for 2 s, no warm-up.
    let report = run_loadgen(
        &app,
        &["--rate", "100", "--duration", "2s", "--warmup", "0s"],
    )
    .await;

    // Assert
    assert_eq!(report.requests, 200, "rate x duration requests were due");
    assert_eq!(report.responses, 200, "statuses: {:?}", report.statuses);
    let service = report.service.as_ref().expect("the app serves /metrics");
    assert_eq!(service.total_pages(), 200);
    assert!(
        (report.requests_per_sec - 100.0).abs() < 15.0,
        "the rate was held: {}",
        report.requests_per_sec
    );
}
