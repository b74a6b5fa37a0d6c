//! The in-process tier (L1): what it admits, what it answers, and how it stays correct with
//! several instances behind a load balancer, on the real cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hotfeed::cache::Cache;
use hotfeed::config::{Settings, Switch};
use hotfeed::domain::{PageLimits, PageRequest, UserId};
use hotfeed::feed::{Feed, Listing};
use hotfeed::metrics::Metrics;
use hotfeed::store::Store;
use hotfeed::tasks::Tasks;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{page_ids, spawn_app_with, TestApp};

/// Reads before the tier admits a page, in these tests.
const ADMIT: u64 = 3;

fn with_l1(ttl_ms: u64) -> impl FnOnce(&mut Settings) {
    move |settings| {
        settings.cache.l1 = Switch::On;
        settings.cache.l1_ttl_ms = ttl_ms;
        settings.cache.l1_admit_reads = ADMIT;
        // A ping unanswered for two periods empties the tier (it may be stale). 100 ms periods
        // made a loaded CI runner drop a freshly admitted page; 500 ms still notices a frozen
        // channel within a second, well inside the channel test's 5 s.
        settings.cache.l1_ping_ms = 500;
    }
}

/// Waits until the instance's invalidation channel is subscribed (its tier serves).
async fn until_listening(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app.metrics_text().await.contains("\nl1_listening 1") {
        assert!(
            Instant::now() < deadline,
            "the invalidation channel never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until this instance has heard every invalidation it published (its own messages come
/// back on the channel): a write's message still in flight would evict, when it lands, an entry
/// read after the write (safe, and a miss more than a test expects on a loaded machine).
async fn until_delivered(app: &TestApp) {
    // Publishes run in the background: settled once every one sent was heard and no more were
    // sent for 100 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_sent = -1.0;
    loop {
        let scrape = app.metrics().await;
        let sent = scrape
            .get("l1_invalidations_sent_total", &[("outcome", "sent")])
            .unwrap_or(0.0);
        let heard = scrape
            .get("l1_invalidations_received_total", &[])
            .unwrap_or(0.0);
        if heard >= sent && sent == last_sent {
            return;
        }
        last_sent = sent;
        assert!(
            Instant::now() < deadline,
            "invalidations sent {sent}, heard {heard} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One read of a page: its `X-Cache` and body.
async fn read(app: &TestApp, path: &str) -> (String, Value) {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "GET {path}");
    let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
    (cache, res.json().await.expect("a JSON page"))
}

/// Reads until the in-process tier answers. Admission takes `ADMIT` reads; on a loaded machine a
/// late ping may also empty the tier (it may be stale) and admission starts over, so this waits
/// for the condition rather than counting reads.
async fn until_local_hit(app: &TestApp, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (cache, body) = read(app, path).await;
        if cache == "HIT-L1" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never became an in-process hit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hot_page_is_answered_in_process_once_admitted_with_the_same_body() {
    // Arrange
    let app = spawn_app_with(with_l1(5_000)).await;
    until_listening(&app).await;
    let user = app.create_user("hot").await;
    app.create_posts(user, 5).await;
    until_delivered(&app).await;
    let path = format!("/api/v1/users/{user}/posts");

    // Act
    let mut reads = Vec::new();
    for _ in 0..ADMIT + 2 {
        reads.push(read(&app, &path).await);
    }

    // Assert: Redis answers until the page is hot, then the tier, byte for byte the same page.
    let tiers: Vec<&str> = reads.iter().map(|(cache, _)| cache.as_str()).collect();
    assert_eq!(tiers, ["MISS", "HIT", "HIT", "HIT-L1", "HIT-L1"]);
    assert!(reads.iter().all(|(_, body)| *body == reads[0].1));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("l1_hits_total{kind=\"page\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("feed_pages_total{cache=\"hit_l1\"} 2"));
}

#[tokio::test]
async fn a_write_evicts_the_page_at_once_on_its_own_instance() {
    let app = spawn_app_with(with_l1(60_000)).await;
    until_listening(&app).await;
    let user = app.create_user("writer").await;
    app.create_posts(user, 2).await;
    let path = format!("/api/v1/users/{user}/posts");
    until_local_hit(&app, &path).await;

    let new = app.create_posts(user, 1).await[0];

    let (cache, body) = read(&app, &path).await;
    assert_ne!(cache, "HIT-L1", "the write evicted the page");
    assert_eq!(
        page_ids(&body)[0],
        new,
        "read-your-write on the writing instance"
    );
}

#[tokio::test]
async fn an_edit_evicts_the_pages_that_show_the_post() {
    let app = spawn_app_with(with_l1(60_000)).await;
    until_listening(&app).await;
    let user = app.create_user("editor").await;
    let post = app.create_posts(user, 1).await[0];
    let path = format!("/api/v1/users/{user}/posts");
    until_local_hit(&app, &path).await;

    let res = app
        .client
        .patch(app.url(&format!("/api/v1/posts/{post}")))
        .json(&json!({ "content": "edited" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let (_, body) = read(&app, &path).await;
    assert_eq!(body["data"][0]["content"], "edited");
}

/// The two-instance test: a write on A, reads on B, whose tier holds the page. How long
/// B goes on serving the page without the write is its staleness; the invalidation channel must
/// bring it far below `L1_TTL_MS`, and nothing may be stale past it.
#[tokio::test]
async fn a_write_on_one_instance_evicts_the_page_on_another_within_milliseconds() {
    // Arrange: a long TTL, so only the channel can explain a short staleness (the bound below is
    // a fifth of it: generous for a loaded machine, far below what the TTL alone would give).
    const TTL_MS: u64 = 30_000;
    const ROUNDS: usize = 40;
    let a = spawn_app_with(with_l1(TTL_MS)).await;
    let b = a.sibling(with_l1(TTL_MS)).await;
    until_listening(&a).await;
    until_listening(&b).await;
    let user = a.create_user("celebrity").await;
    a.create_posts(user, 3).await;
    let path = format!("/api/v1/users/{user}/posts");

    // Act
    let mut staleness = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        until_local_hit(&b, &path).await;
        let new = a.create_posts(user, 1).await[0];
        let acknowledged = Instant::now();
        loop {
            let (_, body) = read(&b, &path).await;
            if page_ids(&body).first() == Some(&new) {
                staleness.push(acknowledged.elapsed());
                break;
            }
            assert!(
                acknowledged.elapsed() < Duration::from_millis(TTL_MS),
                "round {round}: B served the page without A's post past L1_TTL_MS"
            );
        }
    }

    // Assert
    staleness.sort();
    let p50 = staleness[ROUNDS / 2];
    let p99 = staleness[(ROUNDS * 99).div_ceil(100) - 1];
    let max = staleness[ROUNDS - 1];
    eprintln!(
        "staleness on B after a write on A, {ROUNDS} rounds: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(
        p99 < Duration::from_millis(TTL_MS / 5),
        "the channel, not the TTL, ends the staleness: p99 {p99:?}"
    );
    let received = b.metrics().await;
    assert!(
        received.sum("l1_invalidations_received_total", &[]) >= ROUNDS as f64,
        "B heard every write"
    );
}

/// When B's subscription is cut (its node gone) or frozen (connection open, nothing flowing), B
/// empties its tier and serves from Redis until it has subscribed again through another seed.
#[tokio::test]
async fn a_cut_or_frozen_channel_empties_the_tier_until_it_is_back() {
    for fault in [Fault::Cut, Fault::Freeze] {
        // Arrange: B subscribes through a proxy the test controls (its first seed).
        let a = spawn_app_with(with_l1(60_000)).await;
        let proxy = Proxy::start(&a.settings.cache.redis_urls[0]).await;
        let seeds = a.settings.cache.redis_urls.clone();
        let proxy_url = proxy.url();
        let b = a
            .sibling(move |settings| {
                with_l1(60_000)(settings);
                settings.cache.redis_urls = std::iter::once(proxy_url)
                    .chain(seeds.into_iter())
                    .collect();
            })
            .await;
        until_listening(&b).await;
        let user = a.create_user(&format!("cut{fault:?}")).await;
        a.create_posts(user, 2).await;
        let path = format!("/api/v1/users/{user}/posts");
        until_local_hit(&b, &path).await;

        // Act
        proxy.fault(fault);
        let faulted = Instant::now();
        let mut dropped = None;
        while faulted.elapsed() < Duration::from_secs(30) {
            if b.metrics().await.sum("l1_channel_drops_total", &[]) >= 1.0 {
                dropped = Some(faulted.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Assert
        let dropped = dropped.unwrap_or_else(|| panic!("{fault:?}: B never noticed"));
        eprintln!("{fault:?}: B noticed the channel down after {dropped:?}");
        let (cache, _) = read(&b, &path).await;
        assert_ne!(
            cache, "HIT-L1",
            "{fault:?}: nothing is served from a tier that may be stale"
        );
        until_listening(&b).await;
        let new = a.create_posts(user, 1).await[0];
        let started = Instant::now();
        loop {
            let (_, body) = read(&b, &path).await;
            if page_ids(&body)[0] == new {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{fault:?}: B resubscribed but missed a write"
            );
        }
        until_local_hit(&b, &path).await;
        drop(b);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Every connection closed, new ones refused.
    Cut,
    /// Connections stay open, nothing goes through.
    Freeze,
}

/// A TCP proxy to one Redis node that a test can cut or freeze.
struct Proxy {
    port: u16,
    fault: watch::Sender<Option<Fault>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Arc<Self> {
        let upstream = upstream
            .trim()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fault, watching) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if watching.borrow().is_some() {
                    let _ = client.shutdown().await;
                    continue;
                }
                let mut watching = watching.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watching.wait_for(Option::is_some) => {}
                    }
                    if *watching.borrow() == Some(Fault::Freeze) {
                        // Hold both ends open, forward nothing.
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Arc::new(Self { port, fault })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn fault(&self, fault: Fault) {
        self.fault.send_replace(Some(fault));
    }
}

#[tokio::test]
async fn the_hot_key_report_names_the_hottest_listing_its_owner_and_its_node() {
    // Arrange: one user read far more than another.
    let app = spawn_app_with(|_| {}).await;
    let hot = app.create_user("hottest").await;
    let cold = app.create_user("coldest").await;
    app.create_posts(hot, 3).await;
    app.create_posts(cold, 3).await;
    for _ in 0..20 {
        read(&app, &format!("/api/v1/users/{hot}/posts")).await;
    }
    for _ in 0..2 {
        read(&app, &format!("/api/v1/users/{cold}/posts")).await;
    }

    // Act
    let res = app.get("/api/v1/admin/hot").await;

    // Assert
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.expect("a JSON report");
    let hottest = &report["keys"][0];
    let pages_key = app
        .keys
        .user_pages(hotfeed::domain::UserId::from_trusted(hot));
    let slot = hotfeed::cache::keys::slot(pages_key.as_bytes());
    assert_eq!(hottest["key"], pages_key.as_str(), "{report:#}");
    assert_eq!(hottest["kind"], "pages");
    assert!(hottest["reads"].as_u64().unwrap() >= 20);
    assert_eq!(hottest["slot"], slot);
    let owner = crate::helpers::owners(&mut app.redis().await, &[pages_key]).await;
    assert_eq!(
        hottest["node"],
        owner[0].as_str(),
        "the master that owns it"
    );
    assert_eq!(report["users"][0]["user_id"], hot);
    assert!(report["slots"]
        .as_array()
        .is_some_and(|slots| !slots.is_empty()));
    // The reporter publishes once a second; a loaded machine may delay a tick, not skip the report.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hottest = [("rank", "1")];
    while app
        .metrics()
        .await
        .get("hot_key_reads", &hottest)
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "hot_key_reads of rank 1 is reported every second"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hot_page_is_refreshed_before_it_expires_and_never_misses_again() {
    // Arrange: pages live 4 s; a read with t ms left refreshes with probability exp(-t / 1000).
    // Read every 10 ms, a page is renewed seconds before it expires: a refresh slowed by a loaded
    // machine still lands in time.
    let app = spawn_app_with(|settings| {
        settings.cache.list_ttl_secs = 4;
        settings.cache.early_refresh_ms = 1_000;
        settings.cache.redis_timeout_ms = 2_000;
    })
    .await;
    let user = app.create_user("evergreen").await;
    app.create_posts(user, 3).await;
    let path = format!("/api/v1/users/{user}/posts");

    // Act: read it every 10 ms for three lifetimes of the hash.
    let mut tiers = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        tiers.push(read(&app, &path).await.0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Assert
    let misses = tiers.iter().filter(|tier| *tier == "MISS").count();
    assert_eq!(misses, 1, "only the very first read missed: {tiers:?}");
    let renewed = app
        .metrics()
        .await
        .get("cache_early_refreshes_total", &[("outcome", "renewed")])
        .unwrap_or(0.0);
    assert!(renewed >= 2.0, "renewed in the background: {renewed}");
}

/// The home feed's hot keys are its celebrities' outboxes, which every follower's read pulls:
/// the tier serves them, and a celebrity's post on another instance is in every feed at once.
#[tokio::test]
async fn a_celebritys_outbox_is_read_in_process_and_its_new_post_shows_on_every_instance() {
    // Arrange: with a bar of 1 follower, the author is a celebrity its readers pull.
    let customize = |settings: &mut Settings| {
        with_l1(60_000)(settings);
        settings.feed_celebrity_followers = 1;
    };
    let a = spawn_app_with(customize).await;
    let b = a.sibling(customize).await;
    until_listening(&a).await;
    until_listening(&b).await;
    let celebrity = a.create_user("celebrity.outbox").await;
    let readers = [
        a.create_user("fan.one").await,
        a.create_user("fan.two").await,
    ];
    for reader in readers {
        let path = format!("/api/v1/users/{reader}/following/{celebrity}");
        assert_eq!(
            a.client.put(a.url(&path)).send().await.unwrap().status(),
            204
        );
    }
    a.create_posts(celebrity, 2).await;
    let feed = |reader: i64| format!("/api/v1/users/{reader}/feed");
    for _ in 0..4 {
        for reader in readers {
            read(&b, &feed(reader)).await;
        }
    }
    let outbox_hits = |scrape: &loadgen::scrape::Scrape| {
        scrape
            .get("l1_hits_total", &[("kind", "outbox")])
            .unwrap_or(0.0)
    };
    // A round of both readers' reads, each pulling the outbox from the tier. On a loaded machine
    // a late ping empties the tier (it may be stale) and a box rebuild may still be running, so
    // the round is repeated until one is whole: with the outbox not kept in process, none is.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = b.metrics().await;
        for reader in readers {
            read(&b, &feed(reader)).await;
        }
        let after = b.metrics().await;
        let hits = outbox_hits(&after) - outbox_hits(&before);
        if hits == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no round of two reads pulled the outbox in process twice within 30 s (last: {hits})"
        );
    }

    // Act
    let new = a.create_posts(celebrity, 1).await[0];

    // Assert
    let started = Instant::now();
    for reader in readers {
        loop {
            let (_, body) = read(&b, &feed(reader)).await;
            if page_ids(&body)[0] == new {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "reader {reader} never saw the post on B within 30 s (the TTL is 60 s)"
            );
        }
    }
}

/// A page read's future stays small: `Feed::page` boxes the Redis and PostgreSQL paths, so a hit
/// from the in-process tier does not create and move their state. Inline, they made `memcpy` the
/// largest single cost of such a hit (docs/benchmarks.md, comparison 14); this fails without the
/// boxes (tens of kilobytes in a debug build, against a few hundred bytes with them).
#[tokio::test]
async fn a_page_reads_future_does_not_carry_the_miss_paths_state() {
    // Arrange: a feed over a pool that never connects (nothing is awaited here).
    let (settings, _, _) = crate::helpers::test_settings();
    let metrics = Arc::new(Metrics::new(10));
    let tasks = Tasks::new();
    let store =
        Store::connect_lazy(&settings.database, Arc::clone(&metrics), &tasks).expect("a lazy pool");
    let feed = Feed::new(store, Cache::None, metrics, 1000, &tasks);
    let limits = PageLimits {
        default: 50,
        max: 100,
        offset_max: 10_000,
    };
    let page = PageRequest::parse(None, None, None, limits).expect("the first page");

    // Act
    let read = feed.page(Listing::user_posts(UserId::from_trusted(1)), page);
    let size = std::mem::size_of_val(&read);
    drop(read);

    // Assert
    println!("Feed::page's future: {size} bytes");
    assert!(size <= 2048, "Feed::page's future is {size} bytes");
}
