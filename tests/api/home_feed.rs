//! The home feed: the reader's posts and those of everyone they follow, newest first, by cursor;
//! follows, unfollows, edits and deletes show on the next read.

use std::collections::BTreeSet;

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, page_ids, spawn_app, TestApp};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let app = spawn_app().await;
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
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_feed_walk_equals_the_feed_postgres_defines(
        steps in proptest::collection::vec(step(4), 1..40),
        limit in 1u32..6,
    ) {
        feeds_match_postgres(steps, limit)?;
    }
}
