//! Posts and users that change: every acknowledged edit or delete is what the next read shows,
//! and a reader that raced with a write cannot put the old version back into the cache.

use std::sync::Arc;

use chrono::{Duration, Utc};
use hotfeed::cache::{Cache, CacheOptions};
use hotfeed::domain::{Post, PostId, User, UserId};
use hotfeed::metrics::Metrics;
use hotfeed::tasks::Tasks;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, page_ids, spawn_app, test_settings, TestApp};

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the app answers")
}

fn x_cache(res: &reqwest::Response) -> String {
    res.headers()["x-cache"].to_str().expect("ASCII").to_owned()
}

#[tokio::test]
async fn an_edited_post_is_never_read_with_its_old_content() {
    // Arrange: the post and its author's page are cached.
    let app = spawn_app().await;
    let user = app.create_user("editor").await;
    let ids = app.create_posts(user, 3).await;
    let target = ids[1];
    let post_path = format!("/api/v1/posts/{target}");
    let page_path = format!("/api/v1/users/{user}/posts");
    let before: Value = app.get(&post_path).await.json().await.expect("JSON");
    app.get(&page_path).await;
    assert_eq!(x_cache(&app.get(&page_path).await), "HIT");

    // Act
    let res = send(
        &app,
        Method::PATCH,
        &post_path,
        Some(json!({"content": "edited"})),
    )
    .await;

    // Assert: the answer, the object and the page all show the edit, from the cache.
    assert_eq!(res.status(), 200);
    let edited: Value = res.json().await.expect("JSON");
    assert_eq!(edited["content"], "edited");
    assert_eq!(edited["created_at"], before["created_at"]);
    assert!(
        edited["updated_at"].as_str() > before["updated_at"].as_str(),
        "updated_at moves: {} -> {}",
        before["updated_at"],
        edited["updated_at"]
    );
    let read = app.get(&post_path).await;
    assert_eq!(x_cache(&read), "HIT", "the edit rewrote the cached object");
    assert_eq!(read.json::<Value>().await.expect("JSON"), edited);
    let page = app.get(&page_path).await;
    assert_eq!(x_cache(&page), "HIT", "the page's ids did not change");
    let page: Value = page.json().await.expect("JSON");
    let shown = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|post| post["id"] == target)
        .expect("the edited post is still listed");
    assert_eq!(shown, &edited);
}

#[tokio::test]
async fn a_deleted_post_is_a_404_and_gone_from_every_page() {
    // Arrange
    let app = spawn_app().await;
    let user = app.create_user("deleter").await;
    let ids = app.create_posts(user, 4).await;
    let gone = ids[2];
    for path in [
        format!("/api/v1/posts/{gone}"),
        format!("/api/v1/users/{user}/posts"),
        format!("/api/v1/users/{user}/posts?limit=2&offset=1"),
    ] {
        app.get(&path).await;
    }

    // Act
    let res = send(&app, Method::DELETE, &format!("/api/v1/posts/{gone}"), None).await;

    // Assert
    assert_eq!(res.status(), 204);
    let read = app.get(&format!("/api/v1/posts/{gone}")).await;
    assert_eq!(read.status(), 404);
    assert_eq!(error_code(read).await, "not_found");
    let page: Value = app
        .get(&format!("/api/v1/users/{user}/posts"))
        .await
        .json()
        .await
        .expect("JSON");
    let expected: Vec<i64> = ids.iter().rev().copied().filter(|&id| id != gone).collect();
    assert_eq!(page_ids(&page), expected);
    let offset_page: Value = app
        .get(&format!("/api/v1/users/{user}/posts?limit=2&offset=1"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(page_ids(&offset_page), expected[1..3]);
    let again = send(&app, Method::DELETE, &format!("/api/v1/posts/{gone}"), None).await;
    assert_eq!(again.status(), 404, "a second delete finds nothing");
}

#[tokio::test]
async fn an_edited_display_name_is_what_the_next_read_shows() {
    let app = spawn_app().await;
    let user = app.create_user("renamer").await;
    let path = format!("/api/v1/users/{user}");
    app.get(&path).await;

    let res = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"display_name": "  Ada L.  "})),
    )
    .await;

    assert_eq!(res.status(), 200);
    let edited: Value = res.json().await.expect("JSON");
    assert_eq!(edited["display_name"], "Ada L.", "trimmed as on creation");
    assert_eq!(
        edited["username"], "renamer",
        "the username does not change"
    );
    let read: Value = app.get(&path).await.json().await.expect("JSON");
    assert_eq!(read, edited);
}

#[tokio::test]
async fn an_edit_on_one_instance_is_read_on_another() {
    // Two replicas of the service share the cluster; the edit goes through one.
    let app = spawn_app().await;
    let other = app.sibling(|_| {}).await;
    let user = app.create_user("replicated").await;
    let post = app.create_posts(user, 1).await[0];
    let path = format!("/api/v1/posts/{post}");
    other.get(&path).await;

    send(&app, Method::PATCH, &path, Some(json!({"content": "v2"}))).await;

    let read: Value = other.get(&path).await.json().await.expect("JSON");
    assert_eq!(read["content"], "v2");
    drop(other);
}

fn post_at(id: i64, content: &str, updated_micros: i64) -> Post {
    let created = Utc::now() - Duration::hours(1);
    Post {
        id: PostId::from_trusted(id),
        user_id: UserId::from_trusted(1),
        content: content.to_owned(),
        created_at: created,
        updated_at: chrono::DateTime::from_timestamp_micros(updated_micros).expect("in range"),
    }
}

/// The classic stale set, replayed step by step on the real cluster: a reader misses and loads
/// version 1 from PostgreSQL; a writer commits version 2 and publishes it; the reader, late, fills
/// version 1. Without the version check the cache would hold version 1 until its TTL.
#[tokio::test]
async fn a_reader_that_raced_an_edit_cannot_put_the_old_post_back() {
    let (settings, _, _) = test_settings();
    let cache = Cache::connect(
        &CacheOptions::from(&settings.cache),
        Arc::new(Metrics::new(10)),
        &Tasks::new(),
    )
    .await
    .expect("valid settings");
    let now = Utc::now().timestamp_micros();
    let old = post_at(1, "version 1", now);
    let new = post_at(1, "version 2", now + 1);

    // The reader missed and loaded `old`; then the writer committed and published `new`.
    assert_eq!(
        cache.object::<Post>(old.id).await,
        None,
        "the reader's miss"
    );
    cache.put(&new).await.expect("the writer's publish");
    // The reader's late fill.
    cache.fill(&[&old]).await;

    assert_eq!(cache.object::<Post>(old.id).await, Some(new.clone()));

    // The same interleaving with a delete: the tombstone outranks the deleted row.
    cache.forget(&new).await.expect("the writer's tombstone");
    cache.fill(&[&new]).await;
    assert_eq!(
        cache.object::<Post>(new.id).await,
        None,
        "the tombstone holds"
    );

    // A genuinely newer version (a later edit, read after it) is accepted.
    let newer = post_at(1, "version 3", now + 10);
    cache.fill(&[&newer]).await;
    assert_eq!(cache.object::<Post>(newer.id).await, Some(newer));
}

#[tokio::test]
async fn a_reader_that_raced_a_rename_cannot_put_the_old_user_back() {
    let (settings, _, _) = test_settings();
    let cache = Cache::connect(
        &CacheOptions::from(&settings.cache),
        Arc::new(Metrics::new(10)),
        &Tasks::new(),
    )
    .await
    .expect("valid settings");
    let now = Utc::now();
    let user = |name: &str, micros: i64| User {
        id: UserId::from_trusted(9),
        username: "racer".into(),
        display_name: name.into(),
        followers_count: 0,
        following_count: 0,
        created_at: now,
        updated_at: chrono::DateTime::from_timestamp_micros(now.timestamp_micros() + micros)
            .expect("in range"),
    };
    let (old, new) = (user("Old", 0), user("New", 1));

    cache.put(&new).await.expect("the writer's publish");
    cache.fill(&[&old]).await;

    assert_eq!(cache.object::<User>(old.id).await, Some(new));
}
