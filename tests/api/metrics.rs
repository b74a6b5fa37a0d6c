use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hotfeed::cache::topology::SlotMap;
use hotfeed::cache::CacheError;
use hotfeed::config::Switch;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

#[tokio::test]
async fn cache_counters_move_with_the_reference_names_and_labels() {
    // Arrange
    let app = spawn_app().await;
    let user = app.create_user("metered").await;
    app.create_posts(user, 60).await;
    let path = format!("/api/v1/users/{user}/posts");

    // Act: the reference demo, a miss then a hit.
    app.get(&path).await;
    let after_miss = app.metrics().await;
    app.get(&path).await;
    let after_hit = app.metrics().await;

    // Assert
    let user_label = user.to_string();
    let of_user = [("user_id", user_label.as_str())];
    assert_eq!(
        after_miss.get("post_list_cache_misses_total", &of_user),
        Some(1.0)
    );
    assert_eq!(
        after_miss.get("post_list_cache_hits_total", &of_user),
        None,
        "no hit before the second read"
    );
    assert_eq!(
        after_hit.get("post_list_cache_hits_total", &of_user),
        Some(1.0)
    );
    assert_eq!(
        after_hit.get("post_list_cache_misses_total", &of_user),
        Some(1.0)
    );
    assert_eq!(
        after_hit.get("post_object_cache_hits_total", &[]),
        Some(50.0)
    );
    assert_eq!(
        after_hit.get("post_object_cache_misses_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        after_hit.get("feed_pages_total", &[("cache", "hit")]),
        Some(1.0)
    );
    assert_eq!(
        after_hit.get("feed_pages_total", &[("cache", "miss")]),
        Some(1.0)
    );
    let route = [
        ("method", "GET"),
        ("route", "/api/v1/users/{id}/posts"),
        ("status", "200"),
    ];
    assert_eq!(
        after_hit.get("http_requests_total", &route),
        Some(2.0),
        "HTTP metrics use the route pattern"
    );
    assert!(
        !app.metrics_text()
            .await
            .contains(&format!("/users/{user}/")),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn the_user_id_label_stays_bounded() {
    let app = spawn_app_with(|settings| settings.metrics_user_label_limit = 2).await;
    let users = [
        app.create_user("first").await,
        app.create_user("second").await,
        app.create_user("third").await,
    ];
    for user in users {
        app.create_posts(user, 1).await;
        app.get(&format!("/api/v1/users/{user}/posts")).await;
    }

    let metrics = app.metrics().await;
    let labelled = metrics.by_label("post_list_cache_misses_total", "user_id");
    let expected: Vec<String> = vec![
        users[0].to_string(),
        users[1].to_string(),
        "other".to_owned(),
    ];
    let mut seen: Vec<String> = labelled.keys().cloned().collect();
    seen.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(seen, expected_sorted, "two users and other");
    assert_eq!(labelled["other"], 1.0);
}

#[tokio::test]
async fn the_metrics_output_passes_promtool() {
    let app = spawn_app().await;
    let user = app.create_user("linted").await;
    app.create_posts(user, 2).await;
    app.get(&format!("/api/v1/users/{user}/posts")).await;
    app.get("/api/v1/users/0").await;
    let text = app.get("/metrics").await.text().await.expect("text");
    let file = std::env::temp_dir().join(format!("hotfeed-metrics-{}.prom", std::process::id()));
    std::fs::write(&file, &text).expect("write the scrape");

    let output = Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(std::fs::File::open(&file).expect("scrape file"))
        .output()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test.sh installs it)");
    let _ = std::fs::remove_file(&file);

    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The series of a `/metrics` scrape (name and labels), comments left out.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            line.rsplit_once(' ')
                .map(|(series, _value)| series.to_owned())
        })
        .collect()
}

/// 3,000 requests with made-up methods, paths never seen and users that do not exist, 32 at a
/// time, numbered from `first` so no two batches share a value. Every one must be answered.
async fn hostile_batch(app: &TestApp, first: u32) {
    let requests = (first..first + 3_000).map(|n| {
        let request = match n % 3 {
            0 => {
                let method = reqwest::Method::from_bytes(format!("M{n}").as_bytes())
                    .expect("an extension method is a token");
                app.client.request(method, app.url("/ping"))
            }
            1 => app
                .client
                .get(app.url(&format!("/made/up/{n}/{}", "x".repeat(200)))),
            _ => app
                .client
                .get(app.url(&format!("/api/v1/users/{}/posts", 1_000_000 + n))),
        };
        async move { request.send().await.map(|res| res.status()) }
    });
    let statuses: Vec<_> = futures::stream::iter(requests)
        .buffer_unordered(32)
        .collect()
        .await;
    let answered = statuses.iter().filter(|status| status.is_ok()).count();
    assert_eq!(answered, 3_000, "every request is answered");
}

#[tokio::test]
async fn no_client_input_grows_metrics_beyond_a_few_series() {
    // Arrange: generous budgets, so the batches' own load on a shared machine cannot turn a 404
    // into a 503 or 504 (a status series legitimate traffic would not make); one request of each
    // kind first, so the series legitimate traffic makes exist.
    let app = spawn_app_with(|settings| {
        settings.cache.redis_timeout_ms = 5_000;
        settings.database.db_max_inflight = 10_000;
        settings.database.db_acquire_timeout_ms = 30_000;
        settings.http_request_timeout_ms = 60_000;
    })
    .await;
    let user = app.create_user("bounded").await;
    app.create_posts(user, 2).await;
    app.get(&format!("/api/v1/users/{user}/posts")).await;
    app.get("/api/v1/users/999999999/posts").await;
    app.get("/no/such/route").await;
    app.client
        .request(
            reqwest::Method::from_bytes(b"BREW").expect("a token"),
            app.url("/ping"),
        )
        .send()
        .await
        .expect("the app answers");
    app.metrics_text().await; // a scrape is a request of its own kind, counted once it is answered
    let before = series(&app.metrics_text().await);

    // Act: two equal batches of hostile requests, every value in them new.
    hostile_batch(&app, 0).await;
    let after_first = series(&app.metrics_text().await);
    hostile_batch(&app, 3_000).await;
    let after_second = series(&app.metrics_text().await);

    // Assert: the first batch may make a handful of bounded series (a hot-key rank, a user label
    // for "other"); the second, with 3,000 new values again, makes none.
    let first_added: Vec<&String> = after_first.difference(&before).collect();
    assert!(
        first_added.len() <= 8,
        "the first 3,000 hostile requests added {} series: {first_added:#?}",
        first_added.len()
    );
    let second_added: Vec<&String> = after_second.difference(&after_first).collect();
    assert!(
        second_added.is_empty(),
        "a second batch of 3,000 hostile requests added series: {second_added:#?}"
    );
}

#[tokio::test]
async fn error_series_exist_at_zero_before_any_error() {
    // Arrange: a fresh instance that has served nothing.
    let app = spawn_app().await;
    let mut redis = app.redis().await;
    let masters: BTreeSet<String> = SlotMap::read(&mut redis)
        .await
        .expect("CLUSTER SLOTS")
        .owners()
        .into_iter()
        .map(|(_, _, master)| master)
        .collect();

    // Act: the per-node series appear once the service's client has read the topology.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let metrics = app.metrics().await;
        let known = masters.iter().all(|node| {
            metrics
                .get("redis_errors_total", &[("node", node)])
                .is_some()
        });
        if known {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the masters' redis_errors_total series appear once the topology is read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Assert: every error and outcome series a dashboard or alert reads exists, at 0 where no
    // request could have moved it yet (an error at start-up, on a loaded machine, may count one).
    for node in &masters {
        for name in [
            "redis_errors_total",
            "redis_round_trips_total",
            "redis_commands_total",
            "redis_breaker_rejections_total",
            "redis_breaker_opens_total",
        ] {
            assert!(
                metrics.get(name, &[("node", node)]).is_some(),
                "{name} of {node}"
            );
        }
        for state in ["closed", "open", "half_open"] {
            assert!(
                metrics
                    .get("redis_breaker_state", &[("node", node), ("state", state)])
                    .is_some(),
                "redis_breaker_state of {node}, {state}"
            );
        }
    }
    for kind in CacheError::KINDS {
        assert!(
            metrics
                .get("cache_errors_total", &[("kind", kind)])
                .is_some(),
            "cache_errors_total of {kind}"
        );
    }
    let zeros = [
        ("cache_errors_total", ("kind", "decode")),
        ("feed_pages_total", ("cache", "miss")),
        ("feed_pages_total", ("cache", "hit_l1")),
        ("feed_sources_total", ("source", "pulled")),
        ("feed_rebuilds_total", ("box", "inbox")),
        ("coalesced_waits_total", ("kind", "objects")),
        ("cache_early_refreshes_total", ("outcome", "failed")),
        ("db_queries_total", ("query", "insert_post")),
        ("http_rate_limited_total", ("limit", "reads_per_address")),
    ];
    for (name, label) in zeros {
        assert_eq!(metrics.get(name, &[label]), Some(0.0), "{name}{label:?}");
    }
}

#[tokio::test]
async fn the_in_process_tier_series_exist_at_zero_before_any_read() {
    let app = spawn_app_with(|settings| settings.cache.l1 = Switch::On).await;

    let metrics = app.metrics().await;

    for kind in ["page", "post", "outbox"] {
        assert_eq!(metrics.get("l1_hits_total", &[("kind", kind)]), Some(0.0));
        assert_eq!(metrics.get("l1_misses_total", &[("kind", kind)]), Some(0.0));
    }
    for cause in ["expired", "size", "invalidated"] {
        assert_eq!(
            metrics.get("l1_evictions_total", &[("cause", cause)]),
            Some(0.0)
        );
    }
    assert!(metrics
        .get("l1_invalidations_sent_total", &[("outcome", "failed")])
        .is_some());
}
