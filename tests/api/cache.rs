use std::collections::{BTreeMap, BTreeSet};

use hotfeed::cache::keys::slot;
use hotfeed::cache::{Cache, CacheOptions, CachedPage, ListingKey};
use hotfeed::config::CacheFetch;
use hotfeed::domain::{PageRequest, PostId, UserId};
use hotfeed::metrics::Metrics;
use hotfeed::tasks::Tasks;
use redis::AsyncCommands as _;
use serde_json::Value;
use sqlx::Connection as _;

use crate::helpers::{owners, page_ids, spawn_app, spawn_app_with, test_settings};

const PAGE: &str = "/api/v1/users/{}/posts";

fn page_path(user: i64) -> String {
    PAGE.replace("{}", &user.to_string())
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn first_page_read_is_a_miss_and_the_second_a_hit_with_the_same_body() {
    // Arrange
    let app = spawn_app().await;
    let user = app.create_user("hot_user").await;
    let ids = app.create_posts(user, 60).await;

    // Act
    let first = app.get(&page_path(user)).await;
    let first_cache = header(&first, "x-cache");
    let first_timing = header(&first, "server-timing");
    let first_body: Value = first.json().await.expect("JSON page");
    let second = app.get(&page_path(user)).await;
    let second_cache = header(&second, "x-cache");
    let second_body: Value = second.json().await.expect("JSON page");

    // Assert
    assert_eq!(first_cache, "MISS");
    assert_eq!(second_cache, "HIT");
    assert!(
        first_timing.contains("redis;dur=") && first_timing.contains("db;dur="),
        "{first_timing}"
    );
    assert_eq!(
        first_body, second_body,
        "a hit serves exactly what the miss served"
    );
    let data = first_body["data"].as_array().expect("data array");
    assert_eq!(data.len(), 50, "default page size");
    let newest_first: Vec<i64> = ids.iter().rev().take(50).copied().collect();
    assert_eq!(page_ids(&first_body), newest_first);
    assert_eq!(first_body["has_more"], true);
    assert_eq!(first_body["limit"], 50);
    assert_eq!(first_body["offset"], 0);
    for field in ["id", "user_id", "content", "created_at", "updated_at"] {
        assert!(data[0].get(field).is_some(), "post has {field}");
    }
}

#[tokio::test]
async fn pages_are_cached_per_limit_and_offset_and_the_last_page_has_no_more() {
    let app = spawn_app().await;
    let user = app.create_user("pager").await;
    let ids = app.create_posts(user, 7).await;

    for _ in 0..2 {
        let res = app
            .get(&format!("{}?limit=5&offset=5", page_path(user)))
            .await;
        let body: Value = res.json().await.expect("JSON page");
        assert_eq!(page_ids(&body), vec![ids[1], ids[0]]);
        assert_eq!(body["has_more"], false);
    }
}

/// A hit under `fetch`: its round trips per node, and the commands it cost beyond the 3 of the
/// page look-up (HGET + GET generation + PTTL for early refresh), given the post keys' slots.
async fn a_hit_costs_one_round_trip_per_node(
    fetch: CacheFetch,
    post_commands: fn(&[u16]) -> usize,
) {
    // Arrange: a cached page of 50 posts.
    let app = spawn_app_with(|s| s.cache.fetch = fetch).await;
    let user = app.create_user("spread").await;
    app.create_posts(user, 50).await;
    let miss = app.get(&page_path(user)).await;
    assert_eq!(header(&miss, "x-cache"), "MISS");
    let body: Value = miss.json().await.expect("JSON page");
    let post_keys: Vec<String> = page_ids(&body)
        .into_iter()
        .map(|id| app.keys.post(PostId::from_trusted(id)))
        .collect();
    let slots: Vec<u16> = post_keys.iter().map(|key| slot(key.as_bytes())).collect();
    let mut redis = app.redis().await;
    let post_nodes = owners(&mut redis, &post_keys).await;
    let list_node = owners(
        &mut redis,
        &[app.keys.user_pages(UserId::from_trusted(user))],
    )
    .await
    .remove(0);
    let distinct: BTreeSet<&String> = post_nodes.iter().collect();
    assert!(
        distinct.len() >= 2,
        "50 post keys should span nodes, got {distinct:?}"
    );
    let before = app.metrics().await;

    // Act
    let hit = app.get(&page_path(user)).await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let hit_body: Value = hit.json().await.expect("JSON page");
    let after = app.metrics().await;

    // Assert: the same page; one round trip to the list's node, plus one per node holding posts.
    assert_eq!(hit_body, body, "{fetch:?} serves the page it cached");
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    *expected.entry(list_node).or_default() += 1.0;
    for node in distinct {
        *expected.entry(node.clone()).or_default() += 1.0;
    }
    let trips_before = before.by_label("redis_round_trips_total", "node");
    let seen: BTreeMap<String, f64> = after
        .by_label("redis_round_trips_total", "node")
        .into_iter()
        .map(|(node, trips)| {
            let delta = trips - trips_before.get(&node).copied().unwrap_or(0.0);
            (node, delta)
        })
        .filter(|(_, delta)| *delta > 0.0)
        .collect();
    assert_eq!(seen, expected, "round trips per node for one cached page");
    let commands = after.sum("redis_commands_total", &[]) - before.sum("redis_commands_total", &[]);
    assert_eq!(
        commands,
        (3 + post_commands(&slots)) as f64,
        "{fetch:?}: the look-up's 3 commands and the posts', nothing retried"
    );
}

fn distinct_slots(slots: &[u16]) -> usize {
    slots.iter().collect::<BTreeSet<_>>().len()
}

#[tokio::test]
async fn a_hit_reads_its_posts_with_one_get_each_in_one_pipeline_per_node() {
    a_hit_costs_one_round_trip_per_node(CacheFetch::Get, |slots| slots.len()).await;
}

#[tokio::test]
async fn a_hit_reads_its_bucketed_posts_with_one_mget_per_bucket() {
    a_hit_costs_one_round_trip_per_node(CacheFetch::BucketMget, |slots| {
        let buckets = distinct_slots(slots);
        assert!(
            buckets <= 12,
            "at most CACHE_OBJECT_BUCKETS slots, got {buckets}"
        );
        buckets
    })
    .await;
}

#[tokio::test]
async fn a_cross_slot_mget_is_split_by_the_client_into_one_command_per_slot() {
    a_hit_costs_one_round_trip_per_node(CacheFetch::Mget, distinct_slots).await;
}

#[tokio::test]
async fn an_empty_cached_page_costs_no_cache_error_under_any_fetch_strategy() {
    // Found by benches/fetch-strategies.sh: a page past a user's last post read its (no) posts
    // with an `MGET` of no keys, which Redis refuses, 1,214 times in 10 s.
    for fetch in [CacheFetch::Get, CacheFetch::BucketMget, CacheFetch::Mget] {
        let app = spawn_app_with(|s| s.cache.fetch = fetch).await;
        let user = app.create_user("quiet").await;
        let path = format!("{}?offset=100", page_path(user));
        let miss = app.get(&path).await;
        assert_eq!(header(&miss, "x-cache"), "MISS");
        let before = app.metrics().await;

        let hit = app.get(&path).await;

        assert_eq!(header(&hit, "x-cache"), "HIT", "{fetch:?}");
        let body: Value = hit.json().await.expect("JSON page");
        assert_eq!(body["data"], serde_json::json!([]), "{fetch:?}");
        let after = app.metrics().await;
        assert_eq!(
            after.sum("cache_errors_total", &[]) - before.sum("cache_errors_total", &[]),
            0.0,
            "{fetch:?}: an empty page reads nothing from Redis"
        );
    }
}

#[tokio::test]
async fn an_evicted_post_object_is_backfilled_and_the_page_reported_partial() {
    let app = spawn_app().await;
    let user = app.create_user("evicted").await;
    let ids = app.create_posts(user, 10).await;
    let miss: Value = app.get(&page_path(user)).await.json().await.expect("JSON");
    let mut redis = app.redis().await;
    let evicted = app.keys.post(PostId::from_trusted(ids[4]));
    let removed: i64 = redis.del(&evicted).await.expect("DEL");
    assert_eq!(removed, 1, "the miss cached the post object");

    let partial = app.get(&page_path(user)).await;
    assert_eq!(header(&partial, "x-cache"), "PARTIAL");
    let partial_body: Value = partial.json().await.expect("JSON");
    let hit = app.get(&page_path(user)).await;

    assert_eq!(
        partial_body, miss,
        "the backfilled page is complete and identical"
    );
    assert_eq!(
        header(&hit, "x-cache"),
        "HIT",
        "the evicted object was written back"
    );
    let restored: Option<String> = redis.get(&evicted).await.expect("GET");
    assert!(restored.is_some());
}

#[tokio::test]
async fn a_new_post_invalidates_its_authors_cached_pages() {
    let app = spawn_app().await;
    let user = app.create_user("writer").await;
    let other = app.create_user("bystander").await;
    app.create_posts(user, 3).await;
    app.create_posts(other, 3).await;
    for path in [
        page_path(user),
        format!("{}?limit=2", page_path(user)),
        page_path(other),
    ] {
        app.get(&path).await;
        assert_eq!(
            header(&app.get(&path).await, "x-cache"),
            "HIT",
            "{path} cached"
        );
    }

    let new_post = app.create_posts(user, 1).await[0];

    for path in [page_path(user), format!("{}?limit=2", page_path(user))] {
        let res = app.get(&path).await;
        assert_eq!(header(&res, "x-cache"), "MISS", "{path} was invalidated");
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(
            body["data"][0]["id"], new_post,
            "{path} shows the new post first"
        );
    }
    assert_eq!(
        header(&app.get(&page_path(other)).await, "x-cache"),
        "HIT",
        "other users' pages are untouched"
    );
}

#[tokio::test]
async fn a_page_read_before_a_write_is_not_cached_after_it() {
    // The race: a reader looks the page up (miss), reads PostgreSQL, a writer commits and
    // invalidates, then the reader caches its now-stale page. The generation check refuses it.
    let (settings, _, _) = test_settings();
    let metrics = std::sync::Arc::new(Metrics::new(10));
    let cache = Cache::connect(&CacheOptions::from(&settings.cache), metrics, &Tasks::new())
        .await
        .expect("valid settings");
    let listing = ListingKey::UserPosts(UserId::from_trusted(7));
    let page = PageRequest::new(50, 0);
    let stale = CachedPage {
        ids: vec![PostId::from_trusted(1)],
        has_more: false,
    };

    let lookup = cache.lookup_page(listing, page).await;
    let generation = lookup.generation.expect("the cluster answered");
    cache.invalidate_listing(listing).await.expect("invalidate");
    cache.store_page(listing, page, &generation, &stale).await;
    assert!(
        cache.lookup_page(listing, page).await.page.is_none(),
        "stale page refused"
    );

    let fresh = cache.lookup_page(listing, page).await;
    cache
        .store_page(listing, page, &fresh.generation.expect("answered"), &stale)
        .await;
    assert_eq!(
        cache.lookup_page(listing, page).await.page,
        Some(stale),
        "current generation accepted"
    );
}

#[tokio::test]
async fn a_generation_never_repeats_even_after_its_key_expired() {
    // The ABA race: a reader sees generation G, the generation key expires, and two writes later
    // the counter is back at G, so the reader's stale page would pass the check.
    let (settings, _, _) = test_settings();
    let keys = hotfeed::cache::Keys::of(&CacheOptions::from(&settings.cache));
    let metrics = std::sync::Arc::new(Metrics::new(10));
    let cache = Cache::connect(&CacheOptions::from(&settings.cache), metrics, &Tasks::new())
        .await
        .expect("valid settings");
    let listing = ListingKey::UserPosts(UserId::from_trusted(8));
    let page = PageRequest::new(50, 0);
    let stale = CachedPage {
        ids: vec![PostId::from_trusted(1)],
        has_more: false,
    };
    let mut redis = redis::cluster::ClusterClient::new(settings.cache.redis_urls.clone())
        .expect("valid REDIS_URLS")
        .get_async_connection()
        .await
        .expect("the cluster answers");
    cache.invalidate_listing(listing).await.expect("invalidate");

    // Act: the reader looks up; its generation expires; the same number of writes happen again.
    let seen = cache.lookup_page(listing, page).await;
    let _: () = redis
        .del(keys.generation(listing))
        .await
        .expect("expire the generation");
    cache.invalidate_listing(listing).await.expect("invalidate");
    cache
        .store_page(listing, page, &seen.generation.expect("answered"), &stale)
        .await;

    // Assert
    assert!(
        cache.lookup_page(listing, page).await.page.is_none(),
        "a page read before the write is refused, whatever happened to the generation key"
    );
}

#[tokio::test]
async fn posts_and_users_are_read_through_the_object_cache() {
    let app = spawn_app().await;
    let user = app.create_user("single").await;
    let post = app.create_posts(user, 1).await[0];

    // A new post is written to the cache by its creation; a user is cached by its first read.
    for (path, first_outcome) in [
        (format!("/api/v1/posts/{post}"), "HIT"),
        (format!("/api/v1/users/{user}"), "MISS"),
    ] {
        let first = app.get(&path).await;
        assert_eq!(first.status(), 200);
        assert_eq!(header(&first, "x-cache"), first_outcome, "{path}");
        let first_body: Value = first.json().await.expect("JSON");
        let second = app.get(&path).await;
        assert_eq!(header(&second, "x-cache"), "HIT", "{path}");
        assert_eq!(second.json::<Value>().await.expect("JSON"), first_body);
    }
}

#[tokio::test]
async fn a_cached_page_listing_a_post_gone_from_postgres_is_rebuilt_from_postgres() {
    // Arrange: a cached page, then one of its posts deleted behind the cache's back.
    let app = spawn_app().await;
    let user = app.create_user("pruned").await;
    let ids = app.create_posts(user, 5).await;
    app.get(&page_path(user)).await;
    let gone = ids[2];
    let mut db = sqlx::PgConnection::connect(&app.settings.database.database_url)
        .await
        .expect("test database");
    sqlx::query("DELETE FROM posts WHERE id = $1")
        .bind(gone)
        .execute(&mut db)
        .await
        .expect("delete");
    let mut redis = app.redis().await;
    let _: i64 = redis
        .del(app.keys.post(PostId::from_trusted(gone)))
        .await
        .expect("DEL");

    // Act
    let res = app.get(&page_path(user)).await;

    // Assert: PostgreSQL's truth, not the stale list.
    assert_eq!(header(&res, "x-cache"), "MISS");
    let body: Value = res.json().await.expect("JSON");
    let expected: Vec<i64> = ids.iter().rev().copied().filter(|&id| id != gone).collect();
    assert_eq!(page_ids(&body), expected);
}

/// Runs `reads` while `tables` are locked in PostgreSQL: a leader's query waits on the lock, so
/// the concurrent reads all arrive while the first is still in flight, however fast the service
/// answers (with each worker driving its own Redis connection, the first read could finish before
/// the test client had sent the others). The lock is held until a query is seen waiting on it,
/// then for 2 s more: room for a loaded machine to deliver the rest of the reads.
async fn while_locked<F: std::future::Future>(
    app: &crate::helpers::TestApp,
    tables: &str,
    reads: F,
) -> F::Output {
    let mut db = app.db().await;
    sqlx::query("BEGIN").execute(&mut db).await.expect("BEGIN");
    sqlx::query(&format!("LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut db)
        .await
        .expect("LOCK");
    let mut watcher = app.db().await;
    let release = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watcher)
            .await
            .expect("pg_stat_activity");
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no query waited on the lock within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        sqlx::query("COMMIT")
            .execute(&mut db)
            .await
            .expect("COMMIT");
    };
    let (out, ()) = tokio::join!(reads, release);
    out
}

#[tokio::test]
async fn concurrent_misses_of_one_page_share_one_postgres_query_and_one_fill() {
    // Arrange: a page never read, and its query count before. A Redis budget a loaded machine
    // cannot blow: a timed-out look-up sees no generation, and such a miss is never coalesced.
    let app = spawn_app_with(|settings| {
        settings.database.db_max_connections = 2;
        settings.cache.redis_timeout_ms = 2_000;
        // The leader's query outlasts the lock (`while_locked`) on any machine.
        settings.database.db_statement_timeout_ms = 30_000;
    })
    .await;
    let user = app.create_user("coalesced").await;
    app.create_posts(user, 60).await;
    let queries = |scrape: &loadgen::scrape::Scrape| {
        scrape
            .get("db_queries_total", &[("query", "user_posts_page")])
            .unwrap_or(0.0)
    };
    let before = app.metrics().await;

    // Act: 200 cold reads at once.
    let path = page_path(user);
    let reads = futures::future::join_all((0..200).map(|_| app.get(&path)));
    let responses = while_locked(&app, "posts", reads).await;

    // Assert: requests that arrived after the fill are hits; every other one waited on one read.
    let mut bodies = BTreeSet::new();
    let mut misses = 0.0;
    for res in responses {
        assert_eq!(res.status(), 200);
        if header(&res, "x-cache") == "MISS" {
            misses += 1.0;
        }
        bodies.insert(page_ids(&res.json::<Value>().await.expect("JSON")));
    }
    assert_eq!(bodies.len(), 1, "every request got the same page");
    assert!(misses >= 10.0, "the reads overlapped: {misses} misses");
    let after = app.metrics().await;
    assert_eq!(
        queries(&after) - queries(&before),
        1.0,
        "one page query for {misses} misses"
    );
    let waited = after
        .get("coalesced_waits_total", &[("kind", "page")])
        .unwrap_or(0.0);
    assert!(waited >= 1.0, "misses waited on the one read: {waited}");
    let hit = app.get(&page_path(user)).await;
    assert_eq!(
        header(&hit, "x-cache"),
        "HIT",
        "the one fill cached the page"
    );
}

#[tokio::test]
async fn concurrent_reads_of_a_page_whose_posts_were_evicted_share_one_postgres_query() {
    // Arrange: a cached page whose post objects are gone (evicted, expired, a node emptied); a
    // Redis budget a loaded machine cannot blow, as above.
    let app = spawn_app_with(|settings| {
        settings.database.db_max_connections = 2;
        settings.cache.redis_timeout_ms = 2_000;
        // The leader's query outlasts the lock (`while_locked`) on any machine.
        settings.database.db_statement_timeout_ms = 30_000;
    })
    .await;
    let user = app.create_user("evicted").await;
    let ids = app.create_posts(user, 30).await;
    let path = page_path(user);
    app.get(&path).await;
    let mut redis = app.redis().await;
    for id in &ids {
        let _: () = redis
            .del(app.keys.post(PostId::from_trusted(*id)))
            .await
            .expect("DEL a post object");
    }
    let queries = |scrape: &loadgen::scrape::Scrape| {
        scrape
            .get("db_queries_total", &[("query", "posts_by_ids")])
            .unwrap_or(0.0)
    };
    let before = app.metrics().await;

    // Act: 200 reads at once.
    let reads = futures::future::join_all((0..200).map(|_| app.get(&path)));
    let responses = while_locked(&app, "posts", reads).await;

    // Assert
    let mut bodies = BTreeSet::new();
    let mut partial = 0.0;
    for res in responses {
        assert_eq!(res.status(), 200);
        if header(&res, "x-cache") == "PARTIAL" {
            partial += 1.0;
        }
        bodies.insert(res.text().await.expect("a body"));
    }
    assert_eq!(
        bodies.len(),
        1,
        "every request got the same page, byte for byte"
    );
    assert!(
        partial >= 10.0,
        "the reads overlapped: {partial} partial hits"
    );
    let after = app.metrics().await;
    assert_eq!(
        queries(&after) - queries(&before),
        1.0,
        "one object query for {partial} partial hits"
    );
    assert!(
        after
            .get("coalesced_waits_total", &[("kind", "objects")])
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test]
async fn concurrent_misses_of_one_post_or_user_share_one_postgres_query() {
    // Arrange: a post and its author, neither in the cache; a Redis budget a loaded machine
    // cannot blow.
    let app = spawn_app_with(|settings| {
        settings.database.db_max_connections = 2;
        settings.cache.redis_timeout_ms = 2_000;
        // The leader's query outlasts the lock (`while_locked`) on any machine.
        settings.database.db_statement_timeout_ms = 30_000;
    })
    .await;
    let user = app.create_user("single").await;
    let post = app.create_posts(user, 1).await[0];
    let mut redis = app.redis().await;
    let _: () = redis
        .del(&[
            app.keys.post(PostId::from_trusted(post)),
            app.keys.user(UserId::from_trusted(user)),
        ])
        .await
        .expect("DEL the objects");
    let before = app.metrics().await;

    // Act: 100 reads of each at once.
    let post_path = format!("/api/v1/posts/{post}");
    let user_path = format!("/api/v1/users/{user}");
    let reads = (0..100).flat_map(|_| [app.get(&post_path), app.get(&user_path)]);
    let responses = while_locked(&app, "posts, users", futures::future::join_all(reads)).await;

    // Assert
    for res in responses {
        assert_eq!(res.status(), 200);
    }
    let after = app.metrics().await;
    for (query, kind) in [("posts_by_ids", "post"), ("user_by_id", "user")] {
        let ran = after
            .get("db_queries_total", &[("query", query)])
            .unwrap_or(0.0)
            - before
                .get("db_queries_total", &[("query", query)])
                .unwrap_or(0.0);
        assert_eq!(ran, 1.0, "one {query} for 100 cold reads");
        assert!(
            after
                .get("coalesced_waits_total", &[("kind", kind)])
                .unwrap_or(0.0)
                >= 1.0,
            "{kind} reads waited on the one query"
        );
    }
}
