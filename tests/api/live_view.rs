//! The live view: `GET /dashboard` and its assets, served from the binary, and the snapshot it
//! polls, `GET /api/v1/admin/stats`, taken from the real cluster and the service's own counters.
//! The page itself is tested in Chromium by `scripts/browser-test.sh`.

use std::time::{Duration, Instant};

use hotfeed::domain::UserId;
use serde_json::Value;

use crate::helpers::{owners, spawn_app, TestApp};

#[tokio::test]
async fn the_dashboard_and_its_assets_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;

    let page = app.get("/dashboard").await;
    assert_eq!(page.status(), 200);
    assert!(header(&page, "content-type").starts_with("text/html"));
    let policy = header(&page, "content-security-policy");
    assert!(policy.contains("default-src 'self'"), "policy: {policy}");
    let html = page.text().await.expect("HTML");
    assert!(html.contains(r#"src="/dashboard/app.js""#));
    assert!(html.contains(r#"href="/dashboard/app.css""#));

    for (asset, kind, needle) in [
        ("app.js", "text/javascript", "/api/v1/admin/stats"),
        ("app.css", "text/css", "{"),
    ] {
        let res = app.get(&format!("/dashboard/{asset}")).await;
        assert_eq!(res.status(), 200, "{asset}");
        assert!(header(&res, "content-type").starts_with(kind), "{asset}");
        assert!(res.text().await.expect("text").contains(needle), "{asset}");
    }

    let missing = app.get("/dashboard/secrets.txt").await;
    assert_eq!(missing.status(), 404, "nothing else is served");
    let body: Value = missing.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_stats_show_the_clusters_shards_the_hot_user_and_its_node() {
    // Arrange: a user whose first page is read repeatedly.
    let app = spawn_app().await;
    let user = app.create_user("hot_one").await;
    app.create_posts(user, 3).await;
    let path = format!("/api/v1/users/{user}/posts");
    let mut redis = app.redis().await;
    let owner = owners(
        &mut redis,
        &[app.keys.user_pages(UserId::from_trusted(user))],
    )
    .await
    .remove(0);

    // Act: read while the sampler ticks, until a snapshot has seen the reads.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        for _ in 0..20 {
            assert_eq!(app.get(&path).await.status(), 200);
        }
        let stats = snapshot(&app).await;
        let seen = stats["pages"]["per_sec"].as_f64().unwrap_or(0.0) > 0.0
            && !stats["hot"]["users"].as_array().is_none_or(Vec::is_empty);
        if seen {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot saw the reads: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Assert: both backends up; three masters covering every slot once, each with a replica.
    assert_eq!(stats["health"]["redis"], "ok");
    assert_eq!(stats["health"]["postgres"], "ok");
    let nodes = stats["nodes"].as_array().expect("nodes");
    let masters: Vec<&Value> = nodes.iter().filter(|n| n["role"] == "master").collect();
    let replicas: Vec<&Value> = nodes.iter().filter(|n| n["role"] == "replica").collect();
    assert_eq!((masters.len(), replicas.len()), (3, 3), "{nodes:?}");
    let mut ranges: Vec<(u64, u64)> = masters
        .iter()
        .flat_map(|m| m["slots"].as_array().expect("slots").iter())
        .map(|r| (r[0].as_u64().expect("first"), r[1].as_u64().expect("last")))
        .collect();
    ranges.sort_unstable();
    let covered: u64 = ranges.iter().map(|(first, last)| last - first + 1).sum();
    assert_eq!(covered, 16384, "every slot owned once: {ranges:?}");
    assert_eq!(ranges[0].0, 0);
    for replica in &replicas {
        let master = replica["master"]
            .as_str()
            .expect("a replica names its master");
        assert!(masters.iter().any(|m| m["node"] == master), "{replica}");
    }
    assert!(masters.iter().all(|m| m["up"] == true));

    // The hottest user is ours, on the node that owns its pages, with its list hit ratio.
    let hottest = &stats["hot"]["users"][0];
    assert_eq!(hottest["user_id"], user);
    assert_eq!(hottest["node"], owner.as_str());
    let ratio = hottest["list_hit_ratio"].as_f64().expect("a ratio");
    assert!(ratio > 0.5 && ratio < 1.0, "one miss then hits: {ratio}");
    let hot_nodes: Vec<&Value> = nodes.iter().filter(|n| n["hot"] == true).collect();
    assert_eq!(hot_nodes.len(), 1);
    assert_eq!(hot_nodes[0]["node"], owner.as_str());
    let shares: f64 = stats["pages"]["by_cache"]
        .as_object()
        .expect("shares")
        .values()
        .filter_map(Value::as_f64)
        .sum();
    assert!(
        (shares - 1.0).abs() < 1e-9,
        "X-Cache shares sum to 1: {shares}"
    );
    assert!(stats["pages"]["p99_ms"]
        .as_f64()
        .is_some_and(|p99| p99 > 0.0));
}

#[tokio::test]
async fn every_viewer_gets_the_same_snapshot_until_the_next_second() {
    let app = spawn_app().await;
    // The first sample is taken as the app starts; wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while snapshot(&app).await.get("at").is_none() {
        assert!(Instant::now() < deadline, "no snapshot after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A dozen dashboards polling at once.
    let bodies = futures::future::join_all((0..12).map(|_| async {
        let res = app.get("/api/v1/admin/stats").await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "cache-control"), "no-store");
        res.text().await.expect("text")
    }))
    .await;

    // Within one sampling period they are byte for byte one snapshot (allow one tick between).
    let distinct: std::collections::BTreeSet<&String> = bodies.iter().collect();
    assert!(distinct.len() <= 2, "{} distinct snapshots", distinct.len());
    // Renewed once a second: a loaded machine may delay a tick, so wait for it rather than sleep.
    let later = snapshot(&app).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshot(&app).await["at"] == later["at"] {
        assert!(Instant::now() < deadline, "the snapshot was never renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn snapshot(app: &TestApp) -> Value {
    app.get("/api/v1/admin/stats")
        .await
        .json()
        .await
        .expect("the stats are JSON")
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
