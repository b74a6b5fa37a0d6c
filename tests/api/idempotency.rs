//! Idempotent creates: `Idempotency-Key` on `POST /api/v1/posts` and `POST /api/v1/users`. A repeat
//! answers with the first response and creates nothing; another request under the same key is a
//! 422; PostgreSQL serializes concurrent repeats; keys expire after 24 h.

use std::sync::Arc;

use futures::future::join_all;
use hotfeed::cache::Cache;
use hotfeed::feed::Feed;
use hotfeed::metrics::Metrics;
use hotfeed::store::Store;
use hotfeed::tasks::Tasks;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, TestApp};

async fn create_post(app: &TestApp, key: &str, user: i64, content: &str) -> Response {
    app.client
        .post(app.url("/api/v1/posts"))
        .header("idempotency-key", key)
        .json(&json!({"user_id": user, "content": content}))
        .send()
        .await
        .expect("the app answers")
}

async fn sign_up(app: &TestApp, key: &str, username: &str) -> Response {
    app.anonymous
        .post(app.url("/api/v1/users"))
        .header("idempotency-key", key)
        .json(&json!({"username": username}))
        .send()
        .await
        .expect("the app answers")
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut app.db().await)
        .await
        .expect("count")
}

fn replayed(res: &Response) -> Option<&str> {
    res.headers()
        .get("idempotent-replayed")
        .map(|value| value.to_str().expect("ASCII"))
}

#[tokio::test]
async fn a_repeated_post_answers_with_the_first_response_and_creates_nothing() {
    // Arrange
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    let first = create_post(&app, "retry-1", ada, "once only").await;
    assert_eq!(first.status(), 201);
    assert_eq!(replayed(&first), None);
    let location = first.headers()["location"].clone();
    let first_body = first.text().await.expect("body");
    let id = serde_json::from_str::<Value>(&first_body).expect("JSON")["id"].clone();
    app.client
        .patch(app.url(&format!("/api/v1/posts/{id}")))
        .json(&json!({"content": "edited since"}))
        .send()
        .await
        .expect("edit");

    // Act
    let again = create_post(&app, "retry-1", ada, "once only").await;

    // Assert: the same status, Location and body, byte for byte, even after an edit.
    assert_eq!(again.status(), 201);
    assert_eq!(replayed(&again), Some("true"));
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.text().await.expect("body"), first_body);
    assert_eq!(count(&app, "posts").await, 1, "never a second post");
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422_and_creates_nothing() {
    // Arrange
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    assert_eq!(create_post(&app, "k", ada, "first").await.status(), 201);

    // Act
    let other = create_post(&app, "k", ada, "something else").await;

    // Assert
    assert_eq!(other.status(), 422);
    assert_eq!(error_code(other).await, "idempotency_key_reused");
    assert_eq!(count(&app, "posts").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_posts_create_exactly_one_and_all_answer_its_id() {
    // Arrange: a pool big enough that the repeats really run at once.
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.database.db_max_connections = 20;
        settings.app_workers = Some(2);
    })
    .await;
    let ada = app.create_user("ada").await;

    // Act
    let answers = join_all((0..20).map(|_| create_post(&app, "burst", ada, "just once"))).await;

    // Assert
    let mut ids = Vec::new();
    let mut replays = 0;
    for res in answers {
        assert_eq!(res.status(), 201);
        replays += usize::from(replayed(&res) == Some("true"));
        ids.push(res.json::<Value>().await.expect("JSON")["id"].clone());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id for all: {ids:?}"
    );
    assert_eq!(replays, 19, "one created, nineteen replayed");
    assert_eq!(count(&app, "posts").await, 1, "exactly one post");
    let page: Value = app
        .get(&format!("/api/v1/users/{ada}/posts"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn keys_are_scoped_to_the_acting_user() {
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    let bob = app.create_user("bob").await;
    assert_eq!(
        create_post(&app, "shared", ada, "same words")
            .await
            .status(),
        201
    );
    let bobs = create_post(&app, "shared", bob, "same words").await;
    assert_eq!(bobs.status(), 201);
    assert_eq!(replayed(&bobs), None, "bob's key is not ada's");
    assert_eq!(count(&app, "posts").await, 2);
}

#[tokio::test]
async fn a_repeated_sign_up_answers_with_the_same_user_and_a_new_working_key() {
    // Arrange
    let app = spawn_app().await;
    let first = sign_up(&app, "signup-1", "ada").await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("JSON");

    // Act
    let again = sign_up(&app, "signup-1", "ada").await;

    // Assert: the user of the first answer; a key is shown once, so the repeat gets a new one.
    assert_eq!(again.status(), 201, "not a 409 username_taken");
    assert_eq!(replayed(&again), Some("true"));
    let again: Value = again.json().await.expect("JSON");
    let mut user = again.clone();
    user["api_key"] = first["api_key"].clone();
    assert_eq!(user, first, "the same user, as first answered");
    assert_ne!(again["api_key"], first["api_key"]);
    assert_eq!(count(&app, "users").await, 1);
    for key in [&first["api_key"], &again["api_key"]] {
        let res = app
            .request_as(
                key.as_str(),
                Method::PATCH,
                &format!("/api/v1/users/{}", first["id"]),
                Some(&json!({"display_name": "Ada"})),
            )
            .send()
            .await
            .expect("answer");
        assert_eq!(res.status(), 200, "both keys work");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sign_ups_with_one_key_create_one_user() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.database.db_max_connections = 10;
        settings.app_workers = Some(2);
    })
    .await;
    let answers = join_all((0..10).map(|_| sign_up(&app, "one-signup", "ada"))).await;
    let mut ids = Vec::new();
    for res in answers {
        assert_eq!(res.status(), 201);
        ids.push(res.json::<Value>().await.expect("JSON")["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(count(&app, "users").await, 1);
}

#[tokio::test]
async fn a_failed_create_does_not_use_up_its_key() {
    // Arrange: the username is taken, so a sign-up with it fails.
    let app = spawn_app().await;
    app.create_user("taken").await;
    let failed = sign_up(&app, "k1", "taken").await;
    assert_eq!(failed.status(), 409);

    // Act: the client fixes the request and sends it under the same key.
    let fixed = sign_up(&app, "k1", "fresh").await;

    // Assert
    assert_eq!(fixed.status(), 201);
    assert_eq!(replayed(&fixed), None);
}

#[tokio::test]
async fn malformed_idempotency_keys_are_400_and_create_nothing() {
    // Arrange
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    let cases: [(&str, Vec<&[u8]>); 4] = [
        ("256 characters", vec![&[b'k'; 256]]),
        ("a byte outside ASCII", vec![b"cl\xc3\xa9"]),
        ("a tab", vec![b"a\tb"]),
        ("two keys", vec![b"one", b"two"]),
    ];
    for path in ["/api/v1/posts", "/api/v1/users"] {
        for (what, values) in &cases {
            // Act
            let body = if path.ends_with("users") {
                json!({"username": "bob"})
            } else {
                json!({"user_id": ada, "content": "x"})
            };
            let mut request = app.client.post(app.url(path)).json(&body);
            for value in values {
                request = request.header(
                    "idempotency-key",
                    reqwest::header::HeaderValue::from_bytes(value).expect("a header value"),
                );
            }
            let res = request.send().await.expect("the app answers");

            // Assert
            assert_eq!(res.status(), 400, "{path}: {what}");
            assert_eq!(
                error_code(res).await,
                "invalid_idempotency_key",
                "{path}: {what}"
            );
        }
    }
    assert_eq!(count(&app, "posts").await, 0);
    assert_eq!(count(&app, "users").await, 1);
    let longest = "k".repeat(255);
    assert_eq!(
        create_post(&app, &longest, ada, "x").await.status(),
        201,
        "255 is allowed"
    );
}

#[tokio::test]
async fn a_key_past_24_hours_runs_as_a_new_request_and_the_sweep_deletes_it_an_hour_later() {
    // Arrange: two keys, one 25 h old and one 23 h old.
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    assert_eq!(
        create_post(&app, "old", ada, "yesterday").await.status(),
        201
    );
    assert_eq!(
        create_post(&app, "recent", ada, "today").await.status(),
        201
    );
    let mut db = app.db().await;
    for (key, age) in [("old", "25 hours"), ("recent", "23 hours")] {
        sqlx::query(&format!(
            "UPDATE idempotency_keys SET created_at = now() - interval '{age}' WHERE idempotency_key = $1"
        ))
        .bind(key)
        .execute(&mut db)
        .await
        .expect("age the key");
    }

    // Act
    let expired = create_post(&app, "old", ada, "yesterday").await;
    let remembered = create_post(&app, "recent", ada, "today").await;

    // Assert
    assert_eq!(expired.status(), 201);
    assert_eq!(replayed(&expired), None, "an expired key is forgotten");
    assert_eq!(replayed(&remembered), Some("true"));
    assert_eq!(count(&app, "posts").await, 3);

    // The sweep leaves keys alone for an hour past expiry, then deletes them.
    for (key, age) in [
        ("old", "24 hours 30 minutes"),
        ("recent", "25 hours 1 minute"),
    ] {
        sqlx::query(&format!(
            "UPDATE idempotency_keys SET created_at = now() - interval '{age}' WHERE idempotency_key = $1"
        ))
        .bind(key)
        .execute(&mut db)
        .await
        .expect("age the key");
    }
    let metrics = Arc::new(Metrics::new(10));
    let store = Store::connect_lazy(&app.settings.database, Arc::clone(&metrics), &Tasks::new())
        .expect("store");
    let feed = Feed::new(store, Cache::None, metrics, 1000, &Tasks::new());
    assert_eq!(feed.sweep_idempotency_keys().await.expect("sweep"), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys")
        .fetch_all(&mut db)
        .await
        .expect("keys");
    assert_eq!(left, ["old"]);
    feed.close().await;
}
