//! Rate limits: writes per acting user and per client address, reads per client address; 429
//! `rate_limited` with `Retry-After`; the admin key, /health, /metrics and /ping are not limited.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::json;

use crate::helpers::{error_code, spawn_app_with, TEST_ADMIN_KEY};

/// Sends `request` until one is refused (at most `tries`): the answers before it, and the refusal.
async fn until_refused(
    tries: usize,
    mut request: impl FnMut() -> reqwest::RequestBuilder,
) -> (Vec<u16>, Response) {
    let mut admitted = Vec::new();
    for _ in 0..tries {
        let res = request().send().await.expect("the app answers");
        if res.status() == 429 {
            return (admitted, res);
        }
        admitted.push(res.status().as_u16());
    }
    panic!("no request refused in {tries}: {admitted:?}");
}

/// Checks a refusal's status, headers and body, and returns its `Retry-After`.
async fn assert_rate_limited(res: Response) -> u64 {
    assert_eq!(res.status(), 429);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=2).contains(&retry_after),
        "one token a second: {retry_after}"
    );
    assert_eq!(error_code(res).await, "rate_limited");
    retry_after
}

#[tokio::test]
async fn a_user_past_their_write_burst_gets_429_until_retry_after_and_other_users_do_not() {
    // Arrange: 1 write a second per user, bursts of 3.
    let app = spawn_app_with(|settings| {
        settings.rate_limits.rate_limit_writes_per_user = 1;
        settings.rate_limits.rate_limit_writes_per_user_burst = 3;
    })
    .await;
    let (ada, ada_key) = app.create_user_with_key("ada").await;
    let (bob, bob_key) = app.create_user_with_key("bob").await;
    let post = |user: i64, key: &str| {
        app.request_as(
            Some(key),
            Method::POST,
            "/api/v1/posts",
            Some(&json!({"user_id": user, "content": "again"})),
        )
    };

    // Act
    let (admitted, refused) = until_refused(20, || post(ada, &ada_key)).await;

    // Assert
    assert!(admitted.len() >= 3, "the burst is admitted: {admitted:?}");
    assert!(admitted.iter().all(|&s| s == 201), "{admitted:?}");
    // The edit goes first: a token comes back a second after the refusal, and a loaded machine
    // could take that long over bob's post.
    let edit = app
        .request_as(
            Some(&ada_key),
            Method::PATCH,
            &format!("/api/v1/users/{ada}"),
            Some(&json!({"display_name": "Ada"})),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(
        edit.status(),
        429,
        "every kind of write counts against the user"
    );
    let retry_after = assert_rate_limited(refused).await;
    let bob_posts = post(bob, &bob_key).send().await.expect("answer");
    assert_eq!(bob_posts.status(), 201, "bob has a limit of his own");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let later = post(ada, &ada_key).send().await.expect("answer");
    assert_eq!(later.status(), 201, "admitted again after Retry-After");
}

#[tokio::test]
async fn one_address_past_its_write_burst_gets_429_for_sign_ups_and_wrong_keys_too() {
    // Arrange: 1 write a second per address, bursts of 3.
    let app = spawn_app_with(|settings| {
        settings.rate_limits.rate_limit_writes_per_ip = 1;
        settings.rate_limits.rate_limit_writes_per_ip_burst = 3;
    })
    .await;
    let mut n = 0;

    // Act: sign-ups need no key, and still count.
    let (admitted, refused) = until_refused(20, || {
        n += 1;
        app.request_as(
            None,
            Method::POST,
            "/api/v1/users",
            Some(&json!({"username": format!("user{n}")})),
        )
    })
    .await;

    // Assert
    assert!(
        admitted.len() >= 3 && admitted.iter().all(|&s| s == 201),
        "{admitted:?}"
    );
    assert_rate_limited(refused).await;
    let guess = app
        .request_as(
            Some("hf_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            Method::POST,
            "/api/v1/posts",
            Some(&json!({"user_id": 1, "content": "x"})),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(
        guess.status(),
        429,
        "guessing keys is limited before any look-up"
    );
    let read = app.get("/api/v1/users/1").await;
    assert_eq!(read.status(), 200, "reads have a limit of their own");
}

#[tokio::test]
async fn an_address_past_its_read_burst_gets_429_while_health_metrics_and_ping_stay_open() {
    // Arrange: 1 read a second per address, bursts of 5.
    let app = spawn_app_with(|settings| {
        settings.rate_limits.rate_limit_reads_per_ip = 1;
        settings.rate_limits.rate_limit_reads_per_ip_burst = 5;
    })
    .await;
    let ada = app.create_user("ada").await;
    let path = format!("/api/v1/users/{ada}/posts");

    // Act
    let (admitted, refused) = until_refused(30, || app.anonymous.get(app.url(&path))).await;

    // Assert
    assert!(
        admitted.len() >= 5 && admitted.iter().all(|&s| s == 200),
        "{admitted:?}"
    );
    assert_rate_limited(refused).await;
    for open in ["/health", "/metrics", "/ping"] {
        for _ in 0..10 {
            let res = app
                .anonymous
                .get(app.url(open))
                .send()
                .await
                .expect("answer");
            assert_eq!(res.status(), 200, "{open} is never limited");
        }
    }
    let metrics = app.metrics_text().await;
    assert!(
        loadgen::scrape::Scrape::parse(&metrics)
            .get("http_rate_limited_total", &[("limit", "reads_per_address")])
            .is_some_and(|refused| refused >= 1.0),
        "the refusal is counted"
    );
    assert!(
        metrics.contains(
            r#"http_requests_total{method="GET",route="/api/v1/users/{id}/posts",status="429"}"#
        ),
        "and seen by the HTTP metrics"
    );
}

#[tokio::test]
async fn the_admin_key_is_not_rate_limited() {
    // Arrange: one write a second, per user and per address, no burst.
    let app = spawn_app_with(|settings| {
        settings.rate_limits.rate_limit_writes_per_user = 1;
        settings.rate_limits.rate_limit_writes_per_user_burst = 1;
        settings.rate_limits.rate_limit_writes_per_ip = 1;
        settings.rate_limits.rate_limit_writes_per_ip_burst = 1;
    })
    .await;
    let ada = app.create_user("ada").await;

    // Act and assert
    for n in 0..10 {
        let res = app
            .request_as(
                Some(TEST_ADMIN_KEY),
                Method::POST,
                "/api/v1/posts",
                Some(&json!({"user_id": ada, "content": format!("load {n}")})),
            )
            .send()
            .await
            .expect("answer");
        assert_eq!(res.status(), 201, "write {n}");
    }
}
