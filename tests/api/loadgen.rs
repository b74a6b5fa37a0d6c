//! loadgen against the real app: what it reports must agree with what the service counted.

use ::loadgen::{Plan, Report};
use hotfeed::cache::BoxKey;
use hotfeed::domain::UserId;
use reqwest::Method;

use crate::helpers::{owners, spawn_app, spawn_app_with, TestApp};

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
    // A few dozen requests are enough to compare counts (45 in 2 s at a load average of 19).
    assert!(report.responses >= 10, "some load was applied: {report:?}");
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
    // At most one page query per miss: concurrent misses of one page share one query (on a
    // loaded machine more of them overlap), and no miss goes without one.
    let misses = service.pages.get("miss").copied().unwrap_or(0);
    let page_queries = service
        .db_queries
        .get("user_posts_page")
        .copied()
        .unwrap_or(0);
    assert!(
        page_queries <= misses && (misses == 0 || page_queries > 0),
        "{page_queries} page queries for {misses} misses"
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
    // loadgen ran on the test's runtime, beside the app: its own cost is measured all the same.
    let client = &report.client;
    assert_eq!(client.threads, 2, "the test runtime's workers: {client:?}");
    assert!((0.0..=1.0).contains(&client.busy_share), "{client:?}");
    assert!(client.cpu_us_per_request > 0.0, "{client:?}");
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
    // The measured rate is answers over the run's whole time, the slowest answer's tail included:
    // a loaded machine lowers it (52/s was seen at a load average of 18) but nothing may raise it
    // above the schedule.
    assert!(
        report.requests_per_sec > 0.0 && report.requests_per_sec < 115.0,
        "the rate was held: {}",
        report.requests_per_sec
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_when_loadgen_not_the_service_set_the_rate() {
    // Arrange: loadgen on a runtime of its own, one thread, which a task of that runtime keeps
    // busy spinning: whatever the service does, loadgen's thread is what limits the run.
    let app = app_with_three_users().await;
    let plan = Plan::from_args([
        "--url",
        &app.address,
        "--users",
        "3",
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--quiet",
    ])
    .expect("valid loadgen arguments");

    // Act
    let report = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a one-thread runtime");
        runtime.block_on(async {
            let hog = tokio::spawn(async {
                loop {
                    let start = std::time::Instant::now();
                    while start.elapsed() < std::time::Duration::from_millis(2) {
                        std::hint::spin_loop();
                    }
                    tokio::task::yield_now().await;
                }
            });
            let report = ::loadgen::run(&plan).await.expect("loadgen runs");
            hog.abort();
            report
        })
    })
    .await
    .expect("the run's thread ends");

    // Assert: the report measured its own thread and said plainly that it set the rate.
    assert!(report.responses > 0, "some load was applied: {report:?}");
    let client = &report.client;
    assert_eq!(client.threads, 1, "{client:?}");
    assert!(client.busy_share >= 0.75, "the spinning thread: {client:?}");
    assert!(client.cpu_us_per_request > 0.0, "{client:?}");
    assert!(client.client_bound, "{client:?}");
    let table = report.render_table();
    assert!(
        table.contains("verdict   CLIENT-BOUND: loadgen, not the service, set this rate"),
        "{table}"
    );
    let json = serde_json::to_value(&report).expect("the report serializes");
    assert_eq!(json["client"]["client_bound"], true, "{json}");
    assert!(json["client"]["cpu_us_per_request"].as_f64() > Some(0.0));
}

/// Three users with 60 posts each: 1 follows 2, 2 and 3 follow 1. User 1, with two followers, is a
/// celebrity (threshold 2): its posts are pulled from its outbox by readers 2 and 3, the others'
/// are pushed. Every feed holds 120 posts.
async fn app_with_a_celebrity() -> TestApp {
    let app = spawn_app_with(|settings| settings.feed_celebrity_followers = 2).await;
    for name in ["celebrity", "fan", "lurker"] {
        let user = app.create_user(name).await;
        app.create_posts(user, 60).await;
    }
    for (reader, author) in [(1, 2), (2, 1), (3, 1)] {
        let path = format!("/api/v1/users/{reader}/following/{author}");
        let res = app
            .client
            .request(Method::PUT, app.url(&path))
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 204, "{path}");
    }
    app
}

/// loadgen reading the home feeds of `app_with_a_celebrity`, with the test cluster as its seeds.
async fn run_feed(app: &TestApp, load: &[&str]) -> Report {
    let seeds = app.settings.cache.redis_urls.join(",");
    let mut args = vec![
        "--url",
        &app.address,
        "--endpoint",
        "feed",
        "--users",
        "3",
        "--limit",
        "20",
        "--redis-urls",
        &seeds,
        "--seed",
        "11",
        "--quiet",
    ];
    args.extend_from_slice(load);
    let plan = Plan::from_args(args).expect("valid loadgen arguments");
    ::loadgen::run(&plan).await.expect("loadgen runs")
}

async fn count_posts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&mut app.db().await)
        .await
        .expect("count posts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_run_walks_readers_down_their_feeds_by_cursor() {
    // Arrange
    let app = app_with_a_celebrity().await;

    // Act: half the readers read one page, half walk four pages deep (20 posts a page of 120).
    let report = run_feed(
        &app,
        &[
            "--depths",
            "1=50,4=50",
            "--concurrency",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
        ],
    )
    .await;

    // Assert: walks went past the first page, to the depth drawn, every page a 200.
    let walks = report.walks.as_ref().expect("a feed run reports its walks");
    assert!(walks.walks > 10, "some walks were read: {walks:?}");
    assert_eq!(report.statuses.len(), 1, "only 200s: {:?}", report.statuses);
    assert_eq!(walks.deepest, 4, "{walks:?}");
    assert!(walks.pages_by_depth[&4] > 0, "{walks:?}");
    assert_eq!(
        walks.pages_by_depth.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "a walk reads every page on its way down"
    );
    assert_eq!(
        walks.pages_by_depth[&1], walks.walks,
        "one first page a walk"
    );
    assert_eq!(
        walks.ends.complete, walks.walks,
        "120 posts are deeper than 4 pages of 20: {walks:?}"
    );
    assert_eq!(
        walks.pages_by_depth.values().sum::<u64>(),
        report.responses,
        "every page read is counted at its depth"
    );

    // And the service saw exactly those pages, from the sources the client saw.
    let service = report.service.as_ref().expect("the app serves /metrics");
    assert_eq!(service.total_pages(), report.responses, "pages served");
    assert_eq!(service.page_responses["200"], report.responses);
    for (header, label) in [
        ("inbox", "inbox"),
        ("inbox+pulled", "pulled"),
        ("database", "database"),
    ] {
        assert_eq!(
            report.x_feed_source.get(header),
            service.feed_sources.get(label),
            "X-Feed-Source {header} vs feed_sources_total{{source={label}}}"
        );
    }
    assert!(
        report
            .x_feed_source
            .get("inbox+pulled")
            .copied()
            .unwrap_or(0)
            > 0,
        "readers 2 and 3 pull the celebrity: {:?}",
        report.x_feed_source
    );
    assert!(
        service.celebrity_pulls >= service.feed_sources["pulled"],
        "each pulled page read at least one outbox: {service:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_the_node_of_the_most_followed_accounts_outbox() {
    // Arrange
    let app = app_with_a_celebrity().await;
    let outbox_key = app.keys.feed_box(BoxKey::Outbox(UserId::from_trusted(1)))[0].clone();
    let outbox_node = owners(&mut app.redis().await, &[outbox_key])
        .await
        .remove(0);

    // Act
    let report = run_feed(
        &app,
        &[
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
        ],
    )
    .await;

    // Assert: user 1 (two followers) is found, with the node CLUSTER SLOTS gives its outbox, and
    // that node is marked among the service's nodes.
    let outbox = report
        .hot_outbox
        .as_ref()
        .unwrap_or_else(|| panic!("the outbox is found: {:?}", report.hot_outbox_unavailable));
    assert_eq!((outbox.user, outbox.followers), (1, 2));
    assert_eq!(
        outbox.node.as_deref(),
        Some(outbox_node.as_str()),
        "{outbox:?}"
    );
    assert_eq!(outbox.node_note, None);
    assert!(outbox.command_share.is_some_and(|share| share > 0.0));
    assert!(outbox.vs_other_nodes.is_some(), "{outbox:?}");
    let table = report.render_table();
    let marked = table
        .lines()
        .find(|line| line.contains("outbox of user 1, the most followed"))
        .unwrap_or_else(|| panic!("a node is marked:\n{table}"));
    assert!(marked.contains(&outbox_node), "{marked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beside_the_feed_create_posts_and_report_their_fan_out() {
    // Arrange
    let app = app_with_a_celebrity().await;
    let posts_before = count_posts(&app).await;

    // Act: 25 posts a second for 2 s beside an open loop of feed reads, no warm-up.
    let report = run_feed(
        &app,
        &[
            "--rate",
            "50",
            "--write-rate",
            "25",
            "--api-key",
            crate::helpers::TEST_ADMIN_KEY,
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ],
    )
    .await;

    // Assert: exactly the schedule's 50 posts, all created, reported apart from the reads.
    let writes = report
        .writes
        .as_ref()
        .expect("a run with --write-rate reports writes");
    assert_eq!(writes.requests, 50, "rate x duration posts were due");
    assert_eq!(writes.created, 50, "statuses: {:?}", writes.statuses);
    assert_eq!(
        count_posts(&app).await - posts_before,
        50,
        "50 rows in PostgreSQL"
    );
    assert!(writes.latency_ms.p50 > 0.0 && writes.latency_ms.max >= writes.latency_ms.p99);
    let authors: f64 = writes.top_authors.iter().map(|author| author.share).sum();
    assert!(
        (authors - 1.0).abs() < 1e-9,
        "three authors wrote everything"
    );
    assert_eq!(report.requests, 100, "the reads kept their own schedule");

    // And the service's side: one fan-out per post, its lag estimated from the buckets.
    let service = report.service.as_ref().expect("the app serves /metrics");
    assert_eq!(service.write_responses["201"], 50);
    let lag = service.fanout_lag_ms.expect("every post is fanned out");
    assert_eq!(lag.count, 50);
    assert!(lag.p50 > 0.0 && lag.p50 <= lag.p99, "{lag:?}");
    let size = service.fanout_size.expect("fan-out sizes");
    assert_eq!(size.count, 50);
    // A celebrity's post goes to its outbox only; the others' to the outbox, the author's inbox
    // and one follower's: between 1 and 3 boxes a post.
    assert!((1.0..=3.0).contains(&size.mean), "{size:?}");
    let table = report.render_table();
    for line in ["writes            50", "fan-out   50 posts", "lag p50"] {
        assert!(table.contains(line), "{line:?} in:\n{table}");
    }
}
