//! The home feed: the reader's posts and those of everyone they follow, newest first, by cursor;
//! follows, unfollows, edits and deletes show on the next read.

use std::collections::BTreeSet;

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use std::time::{Duration, Instant};

use hotfeed::cache::BoxKey;
use hotfeed::domain::UserId;
use redis::AsyncCommands as _;

use crate::helpers::{case_runtime, error_code, page_ids, spawn_app, spawn_app_with, TestApp};

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> u16 {
    let mut request = app.client.request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("the app answers")
        .status()
        .as_u16()
}

async fn follow(app: &TestApp, reader: i64, author: i64) {
    let path = format!("/api/v1/users/{reader}/following/{author}");
    assert_eq!(send(app, Method::PUT, &path, None).await, 204, "{path}");
}

/// Every post of a feed walk, as `(id, content)`, following `next_cursor` to the end.
async fn walk(app: &TestApp, reader: i64, limit: u32) -> Vec<(i64, String)> {
    let base = format!("/api/v1/users/{reader}/feed?limit={limit}");
    let mut path = base.clone();
    let mut posts = Vec::new();
    for _ in 0..200 {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 200, "{path}");
        let page: Value = res.json().await.expect("JSON page");
        for post in page["data"].as_array().expect("data") {
            let content = post["content"].as_str().expect("content").to_owned();
            posts.push((post["id"].as_i64().expect("id"), content));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{base}&cursor={cursor}"),
            None => return posts,
        }
    }
    panic!("the feed walk did not end");
}

/// The feed as PostgreSQL alone defines it.
async fn feed_in_db(app: &TestApp, reader: i64) -> Vec<(i64, String)> {
    let mut db = app.db().await;
    sqlx::query_as(
        "SELECT id, content FROM posts
         WHERE user_id = $1 OR user_id IN (SELECT followee_id FROM follows WHERE follower_id = $1)
         ORDER BY created_at DESC, id DESC",
    )
    .bind(reader)
    .fetch_all(&mut db)
    .await
    .expect("the feed in SQL")
}

#[tokio::test]
async fn a_feed_merges_the_readers_and_followees_posts_newest_first() {
    // Arrange: three authors, the reader follows two of them and posts too.
    let app = spawn_app().await;
    let reader = app.create_user("feed.reader").await;
    let followed = [
        app.create_user("followed.a").await,
        app.create_user("followed.b").await,
    ];
    let stranger = app.create_user("stranger").await;
    for author in followed {
        follow(&app, reader, author).await;
    }
    let mut expected = BTreeSet::new();
    for _ in 0..4 {
        for author in [followed[0], reader, stranger, followed[1]] {
            let id = app.create_posts(author, 1).await[0];
            if author != stranger {
                expected.insert(id);
            }
        }
    }

    // Act
    let walked = walk(&app, reader, 5).await;

    // Assert
    let ids: Vec<i64> = walked.iter().map(|(id, _)| *id).collect();
    let newest_first: Vec<i64> = expected.iter().rev().copied().collect();
    assert_eq!(
        ids, newest_first,
        "everyone followed and the reader, never the stranger"
    );
    assert_eq!(walked, feed_in_db(&app, reader).await);
    let first = app
        .get(&format!("/api/v1/users/{reader}/feed?limit=5"))
        .await;
    assert!(
        first.headers().get("link").is_some(),
        "Link rel=next on a page with more"
    );
}

#[tokio::test]
async fn follows_unfollows_edits_and_deletes_show_on_the_next_read() {
    let app = spawn_app().await;
    let reader = app.create_user("reader.next").await;
    let author = app.create_user("author.next").await;
    let posts = app.create_posts(author, 3).await;
    assert!(
        walk(&app, reader, 10).await.is_empty(),
        "nothing followed, nothing posted"
    );

    follow(&app, reader, author).await;
    let ids: Vec<i64> = walk(&app, reader, 10).await.iter().map(|p| p.0).collect();
    assert_eq!(
        ids,
        posts.iter().rev().copied().collect::<Vec<_>>(),
        "after the follow"
    );

    let edited = format!("/api/v1/posts/{}", posts[1]);
    let status = send(
        &app,
        Method::PATCH,
        &edited,
        Some(json!({"content": "edited in feed"})),
    )
    .await;
    assert_eq!(status, 200);
    let deleted = format!("/api/v1/posts/{}", posts[0]);
    assert_eq!(send(&app, Method::DELETE, &deleted, None).await, 204);
    let walked = walk(&app, reader, 10).await;
    let expected = vec![
        (posts[2], format!("post 2 of user {author}")),
        (posts[1], "edited in feed".to_owned()),
    ];
    assert_eq!(walked, expected, "the edit shows, the deleted post is gone");

    let unfollow = format!("/api/v1/users/{reader}/following/{author}");
    assert_eq!(send(&app, Method::DELETE, &unfollow, None).await, 204);
    assert!(
        walk(&app, reader, 10).await.is_empty(),
        "after the unfollow"
    );
}

#[tokio::test]
async fn bad_feed_requests_get_a_documented_error() {
    let app = spawn_app().await;
    let reader = app.create_user("bad.feed").await;
    for (path, status, code) in [
        (
            format!("/api/v1/users/{reader}/feed?offset=0"),
            400,
            "invalid_query",
        ),
        (
            format!("/api/v1/users/{reader}/feed?cursor=xyz"),
            400,
            "invalid_cursor",
        ),
        (
            format!("/api/v1/users/{reader}/feed?limit=101"),
            400,
            "invalid_limit",
        ),
        ("/api/v1/users/abc/feed".to_owned(), 400, "invalid_id"),
        ("/api/v1/users/987654321/feed".to_owned(), 404, "not_found"),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(error_code(res).await, code, "{path}");
    }
    let empty: Value = app
        .get(&format!("/api/v1/users/{reader}/feed"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(page_ids(&empty), Vec::<i64>::new());
    assert_eq!(empty["next_cursor"], Value::Null);
    assert!(
        empty.get("offset").is_none(),
        "a feed pages by cursor only, so its pages carry no offset: {empty}"
    );
}

/// One step of a random scenario.
#[derive(Debug, Clone)]
enum Step {
    Post(usize),
    Follow(usize, usize),
    Unfollow(usize, usize),
    Edit(usize),
    Delete(usize),
}

fn step(users: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..users).prop_map(Step::Post),
        3 => (0..users, 0..users).prop_map(|(a, b)| Step::Follow(a, b)),
        1 => (0..users, 0..users).prop_map(|(a, b)| Step::Unfollow(a, b)),
        1 => (0..64usize).prop_map(Step::Edit),
        1 => (0..64usize).prop_map(Step::Delete),
    ]
}

/// Random small follow graphs, posts, follows, unfollows, edits and deletes: every reader's feed
/// walk, served with the cache, equals the feed PostgreSQL alone defines.
fn feeds_match_postgres(steps: Vec<Step>, limit: u32) -> Result<(), TestCaseError> {
    case_runtime().block_on(async {
        // Small boxes and a low celebrity bar, so that walks cross the end of the boxes and
        // readers pull outboxes as well as read inboxes.
        let app = spawn_app_with(|settings| {
            settings.cache.feed_box_cap = 4;
            settings.feed_celebrity_followers = 2;
        })
        .await;
        let mut users = Vec::new();
        for n in 0..4 {
            users.push(app.create_user(&format!("prop.user{n}")).await);
        }
        let mut posts: Vec<i64> = Vec::new();
        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::Post(author) => posts.extend(app.create_posts(users[author], 1).await),
                Step::Follow(a, b) if a != b => follow(&app, users[a], users[b]).await,
                Step::Unfollow(a, b) if a != b => {
                    let path = format!("/api/v1/users/{}/following/{}", users[a], users[b]);
                    prop_assert_eq!(send(&app, Method::DELETE, &path, None).await, 204);
                }
                Step::Edit(i) if !posts.is_empty() => {
                    let path = format!("/api/v1/posts/{}", posts[i % posts.len()]);
                    let body = json!({"content": format!("edit {n}")});
                    send(&app, Method::PATCH, &path, Some(body)).await;
                }
                Step::Delete(i) if !posts.is_empty() => {
                    let id = posts.remove(i % posts.len());
                    send(&app, Method::DELETE, &format!("/api/v1/posts/{id}"), None).await;
                }
                _ => {}
            }
            // Read feeds between writes too, so cached objects exist when later writes land.
            if n % 3 == 0 {
                walk(&app, users[n % users.len()], limit).await;
            }
        }
        for &reader in &users {
            prop_assert_eq!(
                walk(&app, reader, limit).await,
                feed_in_db(&app, reader).await
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_feed_walk_equals_the_feed_postgres_defines(
        steps in proptest::collection::vec(step(4), 1..40),
        limit in 1u32..6,
    ) {
        feeds_match_postgres(steps, limit)?;
    }
}

/// Reads the first feed page until it is served from the boxes (the rebuild runs in the
/// background); the outcome sequence seen on the way.
async fn until_hit(app: &TestApp, reader: i64) -> Vec<String> {
    let path = format!("/api/v1/users/{reader}/feed?limit=5");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let res = app.get(&path).await;
        let outcome = res.headers()["x-cache"].to_str().expect("ASCII").to_owned();
        seen.push(outcome.clone());
        if outcome == "HIT" {
            return seen;
        }
        assert!(Instant::now() < deadline, "the inbox was rebuilt: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cold_feed_is_complete_at_once_then_served_from_the_inbox_and_fanned_out_to() {
    // Arrange
    let app = spawn_app().await;
    let reader = app.create_user("cold.reader").await;
    let authors = [
        app.create_user("cold.a").await,
        app.create_user("cold.b").await,
    ];
    for author in authors {
        follow(&app, reader, author).await;
        app.create_posts(author, 4).await;
    }
    let expected = feed_in_db(&app, reader).await;

    // Act: the first read misses (no inbox yet) and is answered in full from PostgreSQL.
    let first = app
        .get(&format!("/api/v1/users/{reader}/feed?limit=5"))
        .await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let first: Value = first.json().await.expect("JSON");
    assert_eq!(
        page_ids(&first).len(),
        5,
        "a complete first page, not an empty or partial one"
    );
    let seen = until_hit(&app, reader).await;

    // Assert: served from the inbox, the same walk; a new post lands in the inbox at once.
    assert_eq!(walk(&app, reader, 3).await, expected, "after: {seen:?}");
    let fresh = app.create_posts(authors[1], 1).await[0];
    let res = app
        .get(&format!("/api/v1/users/{reader}/feed?limit=5"))
        .await;
    assert_eq!(
        res.headers()["x-cache"],
        "HIT",
        "fan-out on write: no rebuild needed"
    );
    let page: Value = res.json().await.expect("JSON");
    assert_eq!(page_ids(&page)[0], fresh);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics
            .get("feed_sources_total", &[("source", "inbox")])
            .map(|v| v > 0.0),
        Some(true)
    );
}

#[tokio::test]
async fn many_concurrent_readers_of_a_cold_feed_cause_one_rebuild() {
    let app = spawn_app().await;
    let reader = app.create_user("crowd.reader").await;
    let author = app.create_user("crowd.author").await;
    follow(&app, reader, author).await;
    app.create_posts(author, 3).await;

    let path = format!("/api/v1/users/{reader}/feed");
    let reads = (0..50).map(|_| {
        let app = &app;
        let path = path.clone();
        async move { app.get(&path).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(reads).await;
    until_hit(&app, reader).await;

    assert!(statuses.iter().all(|&s| s == 200));
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.get("feed_rebuilds_total", &[("box", "inbox")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.get("db_queries_total", &[("query", "feed_sources")]),
        Some(1.0),
        "one rebuild read the followees once"
    );
}

#[tokio::test]
async fn a_celebritys_posts_are_pulled_from_its_outbox_not_pushed() {
    // Arrange: with a bar of 2 followers, `star` is a celebrity once two readers follow it.
    let app = spawn_app_with(|settings| settings.feed_celebrity_followers = 2).await;
    let star = app.create_user("star").await;
    let readers = [
        app.create_user("fan.one").await,
        app.create_user("fan.two").await,
    ];
    for reader in readers {
        follow(&app, reader, star).await;
    }
    app.create_posts(star, 2).await;
    until_hit(&app, readers[0]).await;

    // Act
    let post = app.create_posts(star, 1).await[0];
    let res = app
        .get(&format!("/api/v1/users/{}/feed?limit=5", readers[0]))
        .await;

    // Assert: served from the boxes, newest first, without the post in the reader's inbox.
    assert_eq!(res.headers()["x-cache"], "HIT");
    assert_eq!(res.headers()["x-feed-source"], "inbox+pulled");
    let page: Value = res.json().await.expect("JSON");
    assert_eq!(page_ids(&page)[0], post);
    let mut redis = app.redis().await;
    let [inbox, _, _] = app
        .keys
        .feed_box(BoxKey::Inbox(UserId::from_trusted(readers[0])));
    let [outbox, _, _] = app
        .keys
        .feed_box(BoxKey::Outbox(UserId::from_trusted(star)));
    let inbox_size: i64 = redis.zcard(&inbox).await.expect("ZCARD");
    let outbox_size: i64 = redis.zcard(&outbox).await.expect("ZCARD");
    assert_eq!(inbox_size, 0, "nothing of the celebrity's was pushed");
    assert_eq!(outbox_size, 3, "the outbox holds its posts");
    let metrics = app.metrics().await;
    assert!(
        metrics
            .get("feed_celebrity_pulls_total", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        walk(&app, readers[0], 2).await,
        feed_in_db(&app, readers[0]).await
    );
}

#[tokio::test]
async fn becoming_a_celebrity_drops_the_followers_inboxes_so_none_misses_its_next_posts() {
    let app = spawn_app_with(|settings| settings.feed_celebrity_followers = 2).await;
    let rising = app.create_user("rising").await;
    let early = app.create_user("early.fan").await;
    follow(&app, early, rising).await;
    app.create_posts(rising, 2).await;
    until_hit(&app, early).await;

    // A second follower makes `rising` a celebrity: from now on its posts are not pushed.
    let late = app.create_user("late.fan").await;
    follow(&app, late, rising).await;
    let post = app.create_posts(rising, 1).await[0];

    let walked = walk(&app, early, 2).await;
    assert_eq!(
        walked.first().map(|p| p.0),
        Some(post),
        "the early fan sees the new post"
    );
    assert_eq!(walked, feed_in_db(&app, early).await);
}
