use futures::StreamExt as _;
use std::process::Command;

use crate::helpers::{spawn_app, spawn_app_with};

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

/// Lines of a `/metrics` scrape that are series (not comments).
fn series(text: &str) -> usize {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count()
}

#[tokio::test]
async fn no_client_input_grows_metrics_beyond_a_few_series() {
    // Arrange: one request of each kind first, so the series legitimate traffic makes exist.
    let app = spawn_app().await;
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
    let before = series(&app.metrics_text().await);

    // Act: 10,000 requests with made-up methods, paths never seen and users that do not exist.
    let requests = (0..10_000u32).map(|n| {
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

    // Assert
    let answered = statuses.iter().filter(|status| status.is_ok()).count();
    assert_eq!(answered, 10_000, "every request is answered");
    let after = series(&app.metrics_text().await);
    assert!(
        after <= before + 40,
        "/metrics grew from {before} to {after} series after 10,000 hostile requests"
    );
}
