//! The per-node circuit breaker against a real hung peer: a master of a private cluster frozen
//! with SIGSTOP keeps its TCP connection open and never answers, which is what the breaker is for.
//! (The shared cluster must stay healthy for the other tests.)

use std::time::{Duration, Instant};

use hotfeed::domain::UserId;
use serde_json::Value;

use crate::failover::{app_on_private_cluster, master_port_of, signal, wait_for_stats};
use crate::helpers::TestApp;

/// Open period of the test's breakers: long enough that a few reads fit in it on a loaded
/// machine, short enough that the probe comes soon after the node resumes.
const OPEN_MS: u64 = 3_000;

#[tokio::test]
async fn a_frozen_master_trips_its_breaker_and_a_probe_closes_it_once_it_answers() {
    // Arrange: a private cluster, the app on it with the production budget, a cached page.
    let (cluster, app) = app_on_private_cluster(|settings| {
        settings.cache.redis_breaker_after_failures = 3;
        settings.cache.redis_breaker_open_ms = OPEN_MS;
    })
    .await;
    let user = app.create_user("breaker").await;
    app.create_posts(user, 50).await;
    let path = format!("/api/v1/users/{user}/posts");
    let expected: Value = app.get(&path).await.json().await.expect("JSON");
    let port = master_port_of(&app, app.keys.user_pages(UserId::from_trusted(user))).await;
    let node = format!("127.0.0.1:{port}");
    let states = breaker_states(&app, &node).await;
    assert_eq!(
        states,
        [1.0, 0.0, 0.0],
        "{node}'s breaker series exist from the start: closed 1, open 0, half_open 0"
    );

    // Act: freeze the page's master and read until its breaker opens.
    assert!(signal(cluster.pid_of(port), "STOP"), "SIGSTOP the master");
    let deadline = Instant::now() + Duration::from_secs(30);
    while breaker_states(&app, &node).await[1] < 1.0 {
        assert!(Instant::now() < deadline, "{node}'s breaker opened");
        read_complete(&app, &path, &expected).await;
    }

    // Assert: while it is open, reads are answered in full without a call to the hung node: its
    // rejections grow, and no call was sent to it (sent calls that time out count as errors).
    let before = app.metrics().await;
    for _ in 0..5 {
        read_complete(&app, &path, &expected).await;
    }
    let after = app.metrics().await;
    let count = |scrape: &loadgen::scrape::Scrape, name: &str| {
        scrape.get(name, &[("node", &node)]).unwrap_or(0.0)
    };
    assert!(
        count(&after, "redis_breaker_rejections_total")
            >= count(&before, "redis_breaker_rejections_total") + 5.0,
        "each read found the breaker open and failed its call at once"
    );
    assert_eq!(
        count(&after, "redis_errors_total"),
        count(&before, "redis_errors_total"),
        "no call was sent to the hung node while its breaker was open"
    );
    assert!(signal(cluster.pid_of(port), "CONT"), "SIGCONT the master");
    wait_for_stats(&app, |stats| {
        node_breaker(stats, &node).is_some_and(|state| state == "open" || state == "half_open")
    })
    .await;

    // Assert: once it answers again, the probe after the open period closes the breaker (unless
    // the cluster failed it over meanwhile: a replica gets no calls, so nothing probes it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        read_complete(&app, &path, &expected).await;
        if breaker_states(&app, &node).await[0] == 1.0 {
            break;
        }
        let owner = master_port_of(&app, app.keys.user_pages(UserId::from_trusted(user))).await;
        if owner != port {
            println!("breaker: {node} was failed over to 127.0.0.1:{owner} before its probe");
            break;
        }
        assert!(Instant::now() < deadline, "{node}'s breaker closed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `node`'s breaker series, `[closed, open, half_open]`.
async fn breaker_states(app: &TestApp, node: &str) -> [f64; 3] {
    let metrics = app.metrics().await;
    ["closed", "open", "half_open"].map(|state| {
        metrics
            .get("redis_breaker_state", &[("node", node), ("state", state)])
            .unwrap_or(-1.0)
    })
}

/// Reads `path`, which must answer 200 with `expected`.
async fn read_complete(app: &TestApp, path: &str, expected: &Value) {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "every read is answered");
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(&body, expected, "every answer is complete and correct");
}

/// The live view's breaker state of `node`.
fn node_breaker<'a>(stats: &'a Value, node: &str) -> Option<&'a str> {
    stats["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)?["breaker"]
        .as_str()
}
