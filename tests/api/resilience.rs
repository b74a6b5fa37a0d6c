use serde_json::Value;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn reads_are_served_from_postgres_when_no_redis_seed_node_answers() {
    // Arrange: seed nodes on ports where nothing listens.
    let app = spawn_app_with(|settings| {
        settings.cache.redis_urls =
            vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()];
    })
    .await;
    let user = app.create_user("no_redis").await;
    let posts = app.create_posts(user, 3).await;

    // Act
    let page = app.get(&format!("/api/v1/users/{user}/posts")).await;
    let single = app.get(&format!("/api/v1/posts/{}", posts[0])).await;
    let health = app.get("/health").await;

    // Assert
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-cache"], "MISS");
    let body: Value = page.json().await.expect("JSON");
    assert_eq!(body["data"].as_array().expect("data").len(), 3);
    assert_eq!(single.status(), 200);
    assert_eq!(
        health.status(),
        200,
        "PostgreSQL is up, so the service is ready"
    );
    let health: Value = health.json().await.expect("JSON");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["redis"]["status"], "down");
    let metrics = app.metrics().await;
    assert!(
        metrics
            .get("cache_errors_total", &[("kind", "unavailable")])
            .unwrap_or(0.0)
            >= 2.0,
        "the failed cache calls are counted"
    );
}

#[tokio::test]
async fn the_cache_can_be_switched_off() {
    let app =
        spawn_app_with(|settings| settings.cache.mode = hotfeed::config::CacheMode::Off).await;
    let user = app.create_user("uncached").await;
    app.create_posts(user, 2).await;
    for _ in 0..2 {
        let res = app.get(&format!("/api/v1/users/{user}/posts")).await;
        assert_eq!(res.headers()["x-cache"], "BYPASS");
    }
    let health: Value = app.get("/health").await.json().await.expect("JSON");
    assert_eq!(health["redis"]["status"], "disabled");
    assert_eq!(health["status"], "ok");
}
