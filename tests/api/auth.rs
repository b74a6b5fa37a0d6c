//! Write authentication: API keys (`Authorization: Bearer …`), stored hashed, issued once; a
//! write acts only as the key's user, the admin key as anyone; reads stay public.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{test as actix_test, web, App, HttpResponse};
use hotfeed::cache::Cache;
use hotfeed::config::{AccessLog, AdminKey, RateLimitSettings};
use hotfeed::domain::{KeyHash, PageLimits};
use hotfeed::feed::Feed;
use hotfeed::limits::RateLimits;
use hotfeed::metrics::Metrics;
use hotfeed::routes::Admin;
use hotfeed::routes::{AccessLogPolicy, AppState};
use hotfeed::store::Store;
use hotfeed::tasks::Tasks;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::helpers::{error_code, spawn_app, TestApp, TEST_ADMIN_KEY};

/// A key shaped like the service's, that nobody holds.
const UNKNOWN_KEY: &str = "hf_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Every write of the API, as `user` on `post` (by `user`), with a valid body.
fn writes(user: i64, other: i64, post: i64) -> Vec<(&'static str, Method, String, Option<Value>)> {
    vec![
        (
            "create a post",
            Method::POST,
            "/api/v1/posts".into(),
            Some(json!({"user_id": user, "content": "hi"})),
        ),
        (
            "edit a post",
            Method::PATCH,
            format!("/api/v1/posts/{post}"),
            Some(json!({"content": "edited"})),
        ),
        (
            "edit a user",
            Method::PATCH,
            format!("/api/v1/users/{user}"),
            Some(json!({"display_name": "Renamed"})),
        ),
        (
            "follow",
            Method::PUT,
            format!("/api/v1/users/{user}/following/{other}"),
            None,
        ),
        (
            "unfollow",
            Method::DELETE,
            format!("/api/v1/users/{user}/following/{other}"),
            None,
        ),
        (
            "delete a post",
            Method::DELETE,
            format!("/api/v1/posts/{post}"),
            None,
        ),
    ]
}

async fn post_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&mut app.db().await)
        .await
        .expect("count posts")
}

#[tokio::test]
async fn writes_without_a_usable_key_are_401_with_a_bearer_challenge_and_change_nothing() {
    // Arrange
    let app = spawn_app().await;
    let (ada, _) = app.create_user_with_key("ada").await;
    let bob = app.create_user("bob").await;
    let post = app.create_posts(ada, 1).await[0];
    let unknown = format!("Bearer {UNKNOWN_KEY}");
    let credentials: [(&str, Option<&str>, &str); 5] = [
        ("no Authorization header", None, "Bearer realm=\"hotfeed\""),
        (
            "another scheme",
            Some("Basic YWRhOnNlY3JldA=="),
            "invalid_request",
        ),
        (
            "a bearer without a token",
            Some("Bearer"),
            "invalid_request",
        ),
        ("a key nobody holds", Some(&unknown), "invalid_token"),
        (
            "not even shaped like a key",
            Some("Bearer letmein"),
            "invalid_token",
        ),
    ];

    for (what, method, path, body) in writes(ada, bob, post) {
        for (credential, header, challenge) in credentials {
            // Act
            let mut request = app.anonymous.request(method.clone(), app.url(&path));
            if let Some(value) = header {
                request = request.header("authorization", value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let res = request.send().await.expect("the app answers");

            // Assert
            assert_eq!(res.status(), 401, "{what}, {credential}");
            let header = res.headers()["www-authenticate"]
                .to_str()
                .expect("ASCII")
                .to_owned();
            assert!(
                header.starts_with("Bearer"),
                "{what}, {credential}: {header}"
            );
            assert!(header.contains(challenge), "{what}, {credential}: {header}");
            assert_eq!(
                error_code(res).await,
                "unauthenticated",
                "{what}, {credential}"
            );
        }
    }
    assert_eq!(
        post_count(&app).await,
        1,
        "no refused write created or deleted a post"
    );
    let post: Value = app
        .get(&format!("/api/v1/posts/{post}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        post["content"],
        format!("post 0 of user {ada}"),
        "no refused write edited it"
    );
    let ada: Value = app
        .get(&format!("/api/v1/users/{ada}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        (
            ada["display_name"].as_str(),
            ada["following_count"].as_i64()
        ),
        (Some("ada"), Some(0))
    );
}

#[tokio::test]
async fn a_users_key_is_403_for_every_write_as_someone_else_and_works_as_its_user() {
    // Arrange: mallory holds a key of her own; ada's post and ada herself are the targets.
    let app = spawn_app().await;
    let (ada, ada_key) = app.create_user_with_key("ada").await;
    let bob = app.create_user("bob").await;
    let (_, mallory_key) = app.create_user_with_key("mallory").await;
    let post = app.create_posts(ada, 1).await[0];

    // Act and assert: as mallory, every write is refused; as ada, every write goes through.
    for (what, method, path, body) in writes(ada, bob, post) {
        let res = app
            .request_as(Some(&mallory_key), method.clone(), &path, body.as_ref())
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 403, "mallory: {what}");
        assert_eq!(error_code(res).await, "forbidden", "mallory: {what}");

        let res = app
            .request_as(Some(&ada_key), method, &path, body.as_ref())
            .send()
            .await
            .expect("the app answers");
        assert!(res.status().is_success(), "ada: {what}: {}", res.status());
    }
    let ada: Value = app
        .get(&format!("/api/v1/users/{ada}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        ada["display_name"], "Renamed",
        "ada's own edit went through"
    );
}

#[tokio::test]
async fn the_author_of_an_edit_or_delete_is_the_posts_author_in_postgresql() {
    // Arrange: a post by ada, whose cached object a writer has tampered with to claim mallory.
    let app = spawn_app().await;
    let (ada, _) = app.create_user_with_key("ada").await;
    let (mallory, mallory_key) = app.create_user_with_key("mallory").await;
    let post = app.create_posts(ada, 1).await[0];
    let mut forged: Value = app
        .get(&format!("/api/v1/posts/{post}"))
        .await
        .json()
        .await
        .expect("JSON");
    forged["user_id"] = json!(mallory);
    assert_eq!(
        app.get(&format!("/api/v1/posts/{post}")).await.headers()["x-cache"],
        "HIT"
    );
    let key = app.keys.post(hotfeed::domain::PostId::from_trusted(post));
    let mut redis = app.redis().await;
    let held: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("GET");
    let version = held.split('|').next().expect("a version");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(format!("{version}|{forged}"))
        .query_async(&mut redis)
        .await
        .expect("SET");

    // Act
    let res = app
        .request_as(
            Some(&mallory_key),
            Method::DELETE,
            &format!("/api/v1/posts/{post}"),
            None,
        )
        .send()
        .await
        .expect("the app answers");

    // Assert
    assert_eq!(
        res.status(),
        403,
        "the cache's word on the author does not count"
    );
    assert_eq!(post_count(&app).await, 1);
}

#[tokio::test]
async fn a_write_to_a_missing_post_is_404_for_a_user_key_too() {
    let app = spawn_app().await;
    let (_, key) = app.create_user_with_key("ada").await;
    for method in [Method::PATCH, Method::DELETE] {
        let res = app
            .request_as(
                Some(&key),
                method.clone(),
                "/api/v1/posts/987654321",
                Some(&json!({"content": "x"})),
            )
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 404, "{method}");
        assert_eq!(error_code(res).await, "not_found", "{method}");
    }
}

#[tokio::test]
async fn a_sign_up_shows_its_key_once_and_only_its_hash_is_stored() {
    // Arrange
    let app = spawn_app().await;

    // Act: anyone may sign up, without credentials.
    let res = app
        .request_as(
            None,
            Method::POST,
            "/api/v1/users",
            Some(&json!({"username": "ada"})),
        )
        .send()
        .await
        .expect("the app answers");

    // Assert
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("JSON");
    let key = body["api_key"].as_str().expect("api_key").to_owned();
    assert!(key.starts_with("hf_") && key.len() == 46, "{key}");
    assert_eq!(
        body["username"], "ada",
        "the user is in the body too: {body}"
    );
    let id = body["id"].as_i64().expect("id");
    let read: Value = app
        .get(&format!("/api/v1/users/{id}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert!(
        read.get("api_key").is_none(),
        "a read never shows a key: {read}"
    );

    let mut db = app.db().await;
    let rows = sqlx::query("SELECT user_id, key_hash, prefix FROM api_keys")
        .fetch_all(&mut db)
        .await
        .expect("api_keys");
    assert_eq!(rows.len(), 1);
    let stored: Vec<u8> = rows[0].get("key_hash");
    assert_eq!(stored, KeyHash::of(&key).as_bytes(), "SHA-256 of the key");
    assert_eq!(rows[0].get::<i64, _>("user_id"), id);
    assert_eq!(rows[0].get::<String, _>("prefix"), key[..11]);
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ',') FROM api_keys t")
        .fetch_one(&mut db)
        .await
        .expect("dump");
    assert!(
        !dump.contains(&key[11..]),
        "the secret part is nowhere in the table"
    );

    let posted = app
        .request_as(
            Some(&key),
            Method::POST,
            "/api/v1/posts",
            Some(&json!({"user_id": id, "content": "my first"})),
        )
        .send()
        .await
        .expect("the app answers");
    assert_eq!(posted.status(), 201, "the key works at once");
}

#[tokio::test]
async fn the_admin_key_may_act_as_any_user() {
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    let bob = app.create_user("bob").await;
    for (user, other) in [(ada, bob), (bob, ada)] {
        let res = app
            .request_as(
                Some(TEST_ADMIN_KEY),
                Method::POST,
                "/api/v1/posts",
                Some(&json!({"user_id": user, "content": "by the operator"})),
            )
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 201, "as user {user}");
        let res = app
            .request_as(
                Some(TEST_ADMIN_KEY),
                Method::PUT,
                &format!("/api/v1/users/{user}/following/{other}"),
                None,
            )
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 204, "user {user} follows {other}");
    }
}

#[tokio::test]
async fn without_an_admin_key_configured_no_bearer_token_is_the_admin() {
    let app = crate::helpers::spawn_app_with(|settings| settings.auth.admin_api_key = None).await;
    let ada = app.create_user("ada").await;
    let res = app
        .request_as(
            Some(TEST_ADMIN_KEY),
            Method::POST,
            "/api/v1/posts",
            Some(&json!({"user_id": ada, "content": "x"})),
        )
        .send()
        .await
        .expect("the app answers");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn reads_need_no_key() {
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    let bob = app.create_user("bob").await;
    let post = app.create_posts(ada, 1).await[0];
    app.client
        .put(app.url(&format!("/api/v1/users/{bob}/following/{ada}")))
        .send()
        .await
        .expect("follow");
    for path in [
        format!("/api/v1/users/{ada}"),
        format!("/api/v1/users/{ada}/posts"),
        format!("/api/v1/posts/{post}"),
        format!("/api/v1/users/{bob}/feed"),
        format!("/api/v1/users/{bob}/following"),
        format!("/api/v1/users/{ada}/followers"),
        "/health".to_owned(),
        "/metrics".to_owned(),
    ] {
        let res = app
            .anonymous
            .get(app.url(&path))
            .send()
            .await
            .expect("answer");
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_api_key_command_issues_a_working_key_for_an_existing_user() {
    // Arrange: a user, as datagen would leave one (its sign-up key is not at hand).
    let app = spawn_app().await;
    let ada = app.create_user("ada").await;
    let run = |user: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hotfeed"))
            .args(["api-key", "--user-id", &user])
            .env("DATABASE_URL", &app.settings.database.database_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("hotfeed runs")
    };

    // Act
    let issued = run(ada.to_string());

    // Assert: the key alone on stdout, and it writes as ada.
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let key = String::from_utf8(issued.stdout).expect("UTF-8");
    let key = key.trim_end_matches('\n');
    assert!(key.starts_with("hf_") && key.len() == 46, "{key:?}");
    let res = app
        .request_as(
            Some(key),
            Method::POST,
            "/api/v1/posts",
            Some(&json!({"user_id": ada, "content": "seeded"})),
        )
        .send()
        .await
        .expect("the app answers");
    assert_eq!(res.status(), 201);

    let unknown = run("987654321".into());
    assert!(
        !unknown.status.success(),
        "no key for a user that does not exist"
    );
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("user 987654321 does not exist"), "{stderr}");
    assert!(unknown.stdout.is_empty());
}

#[tokio::test]
async fn the_admin_guard_admits_the_admin_key_only() {
    // Arrange: a route behind the guard, on the state the service builds, over a real database.
    let app = spawn_app().await;
    let (_, user_key) = app.create_user_with_key("ada").await;
    let metrics = Arc::new(Metrics::new(10));
    let store = Store::connect_lazy(&app.settings.database, Arc::clone(&metrics), &Tasks::new())
        .expect("store");
    let state = web::Data::new(AppState {
        feed: Feed::new(
            store,
            Cache::None,
            Arc::clone(&metrics),
            1000,
            &Tasks::new(),
        ),
        metrics: Arc::clone(&metrics),
        page_limits: PageLimits {
            default: 50,
            max: 100,
            offset_max: 10_000,
        },
        admin_key: Some(AdminKey::parse(TEST_ADMIN_KEY).expect("valid")),
        limits: Arc::new(RateLimits::new(&RateLimitSettings::disabled(), metrics)),
        trust_forwarded_for: false,
        stats: hotfeed::stats::Stats::new(),
        access_log: AccessLogPolicy {
            which: AccessLog::All,
            slow: Duration::from_secs(1),
        },
        drain: Arc::default(),
    });
    let service = actix_test::init_service(App::new().app_data(state).route(
        "/api/v1/admin/ping",
        web::get().to(|_: Admin| async { HttpResponse::Ok().finish() }),
    ))
    .await;
    let cases = [
        ("no key", None, 401),
        ("a key nobody holds", Some(UNKNOWN_KEY.to_owned()), 401),
        ("a user's key", Some(user_key), 403),
        ("the admin key", Some(TEST_ADMIN_KEY.to_owned()), 200),
    ];

    for (what, key, status) in cases {
        // Act
        let mut request = actix_test::TestRequest::get().uri("/api/v1/admin/ping");
        if let Some(key) = key {
            request = request.insert_header(("authorization", format!("Bearer {key}")));
        }
        let res = actix_test::call_service(&service, request.to_request()).await;

        // Assert
        assert_eq!(res.status().as_u16(), status, "{what}");
    }
}
