//! Follows: idempotent follow and unfollow, counts on the user object, follow lists by cursor.

use futures::future::join_all;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{error_code, spawn_app, TestApp};

async fn send(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .send()
        .await
        .expect("the app answers")
}

async fn user(app: &TestApp, id: i64) -> Value {
    app.get(&format!("/api/v1/users/{id}"))
        .await
        .json()
        .await
        .expect("JSON user")
}

/// Every user id of a follow list, walking its cursors.
async fn walk(app: &TestApp, path: &str, limit: u32) -> Vec<i64> {
    let base = format!("{path}?limit={limit}");
    let mut next = base.clone();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let res = app.get(&next).await;
        assert_eq!(res.status(), 200, "{next}");
        let link = res.headers().get("link").cloned();
        let page: Value = res.json().await.expect("JSON page");
        ids.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|u| u["id"].as_i64().expect("id")),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(link.is_some(), "a next page has a Link header");
                next = format!("{base}&cursor={cursor}");
            }
            None => {
                assert!(link.is_none());
                return ids;
            }
        }
    }
    panic!("the walk did not end");
}

#[tokio::test]
async fn follows_are_idempotent_counted_and_listed_newest_first() {
    // Arrange: the reader's user object is cached before it follows anyone.
    let app = spawn_app().await;
    let reader = app.create_user("reader").await;
    let authors = [
        app.create_user("author.a").await,
        app.create_user("author.b").await,
        app.create_user("author.c").await,
    ];
    assert_eq!(user(&app, reader).await["following_count"], 0);

    // Act: follow all three (the first one twice).
    for author in authors {
        let res = send(
            &app,
            Method::PUT,
            &format!("/api/v1/users/{reader}/following/{author}"),
        )
        .await;
        assert_eq!(res.status(), 204);
    }
    let again = send(
        &app,
        Method::PUT,
        &format!("/api/v1/users/{reader}/following/{}", authors[0]),
    )
    .await;

    // Assert
    assert_eq!(again.status(), 204, "following again is fine");
    let me = user(&app, reader).await;
    assert_eq!(me["following_count"], 3, "counted once each: {me}");
    assert_eq!(me["followers_count"], 0);
    assert_eq!(user(&app, authors[0]).await["followers_count"], 1);
    let following = walk(&app, &format!("/api/v1/users/{reader}/following"), 2).await;
    assert_eq!(
        following,
        [authors[2], authors[1], authors[0]],
        "newest follow first"
    );
    let followers = walk(&app, &format!("/api/v1/users/{}/followers", authors[1]), 2).await;
    assert_eq!(followers, [reader]);

    // And an unfollow undoes it, idempotently.
    for _ in 0..2 {
        let res = send(
            &app,
            Method::DELETE,
            &format!("/api/v1/users/{reader}/following/{}", authors[1]),
        )
        .await;
        assert_eq!(res.status(), 204);
    }
    assert_eq!(user(&app, reader).await["following_count"], 2);
    assert_eq!(user(&app, authors[1]).await["followers_count"], 0);
    let following = walk(&app, &format!("/api/v1/users/{reader}/following"), 10).await;
    assert_eq!(following, [authors[2], authors[0]]);
}

#[tokio::test]
async fn concurrent_follows_of_one_account_are_counted_exactly() {
    let app = spawn_app().await;
    let star = app.create_user("star").await;
    let mut fans = Vec::new();
    for n in 0..12 {
        fans.push(app.create_user(&format!("fan{n}")).await);
    }

    // Each fan follows twice, all at once.
    let requests = fans.iter().chain(&fans).map(|fan| {
        let path = format!("/api/v1/users/{fan}/following/{star}");
        let app = &app;
        async move { send(app, Method::PUT, &path).await.status().as_u16() }
    });
    let statuses = join_all(requests).await;

    assert!(statuses.iter().all(|&s| s == 204), "{statuses:?}");
    assert_eq!(user(&app, star).await["followers_count"], 12);
    let mut followers = walk(&app, &format!("/api/v1/users/{star}/followers"), 5).await;
    followers.sort_unstable();
    assert_eq!(followers, fans);
}

#[tokio::test]
async fn bad_follows_get_a_documented_error_and_change_nothing() {
    let app = spawn_app().await;
    let me = app.create_user("careful").await;
    let other = app.create_user("other").await;
    let cases = [
        (
            Method::PUT,
            format!("/api/v1/users/{me}/following/{me}"),
            400,
            "cannot_follow_self",
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{me}/following/987654321"),
            404,
            "not_found",
        ),
        (
            Method::PUT,
            format!("/api/v1/users/987654321/following/{me}"),
            404,
            "not_found",
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{me}/following/987654321"),
            404,
            "not_found",
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{me}/following/abc"),
            400,
            "invalid_id",
        ),
        (
            Method::PUT,
            format!("/api/v1/users/0/following/{other}"),
            400,
            "invalid_id",
        ),
        (
            Method::POST,
            format!("/api/v1/users/{me}/following/{other}"),
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            format!("/api/v1/users/{me}/following?offset=5"),
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            format!("/api/v1/users/{me}/followers?cursor=nope"),
            400,
            "invalid_cursor",
        ),
        (
            Method::GET,
            format!("/api/v1/users/{me}/following?limit=0"),
            400,
            "invalid_limit",
        ),
        (
            Method::GET,
            "/api/v1/users/987654321/followers".to_owned(),
            404,
            "not_found",
        ),
    ];
    for (method, path, status, code) in cases {
        let res = send(&app, method.clone(), &path).await;
        assert_eq!(res.status().as_u16(), status, "{method} {path}");
        assert_eq!(error_code(res).await, code, "{method} {path}");
    }
    let me = user(&app, me).await;
    assert_eq!(
        (
            me["following_count"].as_i64(),
            me["followers_count"].as_i64()
        ),
        (Some(0), Some(0))
    );
}
