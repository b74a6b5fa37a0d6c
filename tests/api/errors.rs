use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app};

/// One bad request and what the API must answer.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    content_type: Option<&'static str>,
    status: u16,
    code: &'static str,
}

fn get(what: &'static str, path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        what,
        method: Method::GET,
        path: path.into(),
        body: None,
        content_type: None,
        status,
        code,
    }
}

fn post(
    what: &'static str,
    path: &str,
    body: impl Into<String>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method: Method::POST,
        path: path.into(),
        body: Some(body.into()),
        content_type: Some("application/json"),
        status,
        code,
    }
}

fn patch(
    what: &'static str,
    path: &str,
    body: impl Into<String>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method: Method::PATCH,
        ..post(what, path, body, status, code)
    }
}

#[tokio::test]
async fn bad_input_gets_the_documented_status_and_a_json_error_and_writes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let user = app.create_user("existing").await;
    let page = format!("/api/v1/users/{user}/posts");
    let posts = "/api/v1/posts";
    let users = "/api/v1/users";
    let cases = vec![
        get(
            "non-numeric user id",
            "/api/v1/users/abc",
            400,
            "invalid_id",
        ),
        get("negative user id", "/api/v1/users/-1", 400, "invalid_id"),
        get(
            "zero user id in a page",
            "/api/v1/users/0/posts",
            400,
            "invalid_id",
        ),
        get(
            "id beyond BIGINT",
            "/api/v1/users/99999999999999999999/posts",
            400,
            "invalid_id",
        ),
        get("non-numeric post id", "/api/v1/posts/1x", 400, "invalid_id"),
        get(
            "limit zero",
            format!("{page}?limit=0"),
            400,
            "invalid_limit",
        ),
        get(
            "limit over the maximum",
            format!("{page}?limit=101"),
            400,
            "invalid_limit",
        ),
        get(
            "negative limit",
            format!("{page}?limit=-5"),
            400,
            "invalid_limit",
        ),
        get(
            "non-numeric limit",
            format!("{page}?limit=ten"),
            400,
            "invalid_limit",
        ),
        get(
            "negative offset",
            format!("{page}?offset=-1"),
            400,
            "invalid_offset",
        ),
        get(
            "non-numeric offset",
            format!("{page}?offset=1e3"),
            400,
            "invalid_offset",
        ),
        get(
            "offset past PAGE_OFFSET_MAX",
            format!("{page}?offset=10001"),
            400,
            "offset_too_deep",
        ),
        get(
            "offset far past any bound",
            format!("{page}?offset=300000"),
            400,
            "offset_too_deep",
        ),
        get(
            "garbage cursor",
            format!("{page}?cursor=not-a-cursor"),
            400,
            "invalid_cursor",
        ),
        get(
            "empty cursor",
            format!("{page}?cursor="),
            400,
            "invalid_cursor",
        ),
        get(
            "cursor and offset together",
            format!("{page}?offset=0&cursor=AQ"),
            400,
            "invalid_query",
        ),
        get("unknown user", "/api/v1/users/987654321", 404, "not_found"),
        get(
            "unknown user's posts",
            "/api/v1/users/987654321/posts",
            404,
            "not_found",
        ),
        get("unknown post", "/api/v1/posts/987654321", 404, "not_found"),
        get("unknown route", "/api/v1/nothing-here", 404, "not_found"),
        Case {
            method: Method::PUT,
            ..get(
                "method not allowed",
                "/api/v1/posts/1",
                405,
                "method_not_allowed",
            )
        },
        post(
            "malformed JSON",
            users,
            "{\"username\": ",
            400,
            "malformed_json",
        ),
        post("missing username", users, "{}", 400, "invalid_body"),
        post(
            "unknown field",
            users,
            r#"{"username":"abc","admin":true}"#,
            400,
            "invalid_body",
        ),
        post(
            "username too short",
            users,
            r#"{"username":"ab"}"#,
            400,
            "invalid_username",
        ),
        post(
            "username with spaces",
            users,
            r#"{"username":"a b c"}"#,
            400,
            "invalid_username",
        ),
        post(
            "blank display name",
            users,
            r#"{"username":"abcd","display_name":"  "}"#,
            400,
            "invalid_display_name",
        ),
        post(
            "duplicate username",
            users,
            r#"{"username":"existing"}"#,
            409,
            "username_taken",
        ),
        Case {
            content_type: Some("text/plain"),
            ..post(
                "not JSON content type",
                users,
                r#"{"username":"abcde"}"#,
                415,
                "unsupported_media_type",
            )
        },
        post(
            "empty content",
            posts,
            json!({"user_id": user, "content": ""}).to_string(),
            400,
            "invalid_content",
        ),
        post(
            "blank content",
            posts,
            json!({"user_id": user, "content": " \n "}).to_string(),
            400,
            "invalid_content",
        ),
        post(
            "content over 5000 characters",
            posts,
            json!({"user_id": user, "content": "x".repeat(5001)}).to_string(),
            400,
            "invalid_content",
        ),
        post(
            "missing content",
            posts,
            json!({"user_id": user}).to_string(),
            400,
            "invalid_body",
        ),
        post(
            "user_id as a string",
            posts,
            r#"{"user_id":"1","content":"hi"}"#,
            400,
            "invalid_body",
        ),
        post(
            "negative user_id",
            posts,
            r#"{"user_id":-3,"content":"hi"}"#,
            400,
            "invalid_user_id",
        ),
        post(
            "unknown author",
            posts,
            r#"{"user_id":987654321,"content":"hi"}"#,
            422,
            "unknown_user",
        ),
        patch(
            "edit of an unknown post",
            "/api/v1/posts/987654321",
            r#"{"content":"new"}"#,
            404,
            "not_found",
        ),
        patch(
            "edit to blank content",
            "/api/v1/posts/1",
            r#"{"content":"  "}"#,
            400,
            "invalid_content",
        ),
        patch(
            "edit of a field that cannot change",
            "/api/v1/posts/1",
            r#"{"content":"x","user_id":2}"#,
            400,
            "invalid_body",
        ),
        patch(
            "edit with no content",
            "/api/v1/posts/1",
            "{}",
            400,
            "invalid_body",
        ),
        patch(
            "edit of a non-numeric post id",
            "/api/v1/posts/abc",
            r#"{"content":"x"}"#,
            400,
            "invalid_id",
        ),
        Case {
            content_type: Some("text/plain"),
            ..patch(
                "edit without JSON",
                "/api/v1/posts/1",
                r#"{"content":"x"}"#,
                415,
                "unsupported_media_type",
            )
        },
        patch(
            "display name edit of an unknown user",
            "/api/v1/users/987654321",
            r#"{"display_name":"Ada"}"#,
            404,
            "not_found",
        ),
        patch(
            "blank display name edit",
            &format!("/api/v1/users/{user}"),
            r#"{"display_name":" "}"#,
            400,
            "invalid_display_name",
        ),
        patch(
            "username edit",
            &format!("/api/v1/users/{user}"),
            r#"{"username":"renamed"}"#,
            400,
            "invalid_body",
        ),
        Case {
            method: Method::DELETE,
            ..get(
                "delete of an unknown post",
                "/api/v1/posts/987654321",
                404,
                "not_found",
            )
        },
        Case {
            method: Method::DELETE,
            ..get(
                "delete of a non-numeric post id",
                "/api/v1/posts/x1",
                400,
                "invalid_id",
            )
        },
        post(
            "body over 64 KiB",
            posts,
            json!({"user_id": user, "content": "x".repeat(70 * 1024)}).to_string(),
            413,
            "payload_too_large",
        ),
    ];

    for case in cases {
        // Act
        let mut request = app.client.request(case.method.clone(), app.url(&case.path));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = case.body {
            request = request.body(body);
        }
        let res = request.send().await.expect("the app answers");

        // Assert
        assert_eq!(res.status().as_u16(), case.status, "{}: status", case.what);
        assert_eq!(error_code(res).await, case.code, "{}: code", case.what);
    }

    let page: Value = app.get(&page).await.json().await.expect("JSON");
    assert_eq!(page["data"], json!([]), "no bad request wrote a post");
    let user: Value = app
        .get(&format!("/api/v1/users/{user}"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        user["display_name"], "existing",
        "no bad request edited the user"
    );
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = spawn_app().await;
    let user = app.create_user("edge.case_1").await;
    let res = app
        .post_json(
            "/api/v1/posts",
            &json!({"user_id": user, "content": "é".repeat(5000)}),
        )
        .await;
    assert_eq!(
        res.status(),
        201,
        "5000 characters (10000 bytes) is the maximum, inclusive"
    );
    for query in ["limit=1", "limit=100", "offset=0", "limit=100&offset=10000"] {
        let res = app
            .get(&format!("/api/v1/users/{user}/posts?{query}"))
            .await;
        assert_eq!(res.status(), 200, "{query}");
    }
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_allow_naming_the_methods_that_work() {
    // Arrange: every resource, the methods it serves, and one it does not.
    let app = spawn_app().await;
    let cases = [
        ("/ping", "GET", Method::POST),
        ("/health", "GET", Method::DELETE),
        ("/metrics", "GET", Method::PUT),
        ("/api/v1/users", "POST", Method::GET),
        ("/api/v1/users/1", "GET, PATCH", Method::DELETE),
        ("/api/v1/users/1/posts", "GET", Method::POST),
        ("/api/v1/users/1/following/2", "PUT, DELETE", Method::GET),
        ("/api/v1/users/1/following", "GET", Method::PATCH),
        ("/api/v1/users/1/followers", "GET", Method::PUT),
        ("/api/v1/users/1/feed", "GET", Method::POST),
        ("/api/v1/posts", "POST", Method::GET),
        ("/api/v1/posts/1", "GET, PATCH, DELETE", Method::PUT),
    ];

    for (path, allowed, wrong) in cases {
        // Act
        let res = app
            .client
            .request(wrong.clone(), app.url(path))
            .send()
            .await
            .expect("the app answers");

        // Assert
        assert_eq!(res.status(), 405, "{wrong} {path}");
        let allow = res
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{wrong} {path}: a 405 carries Allow (RFC 9110)"))
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(allow, allowed, "{wrong} {path}");
        assert_eq!(
            error_code(res).await,
            "method_not_allowed",
            "{wrong} {path}"
        );
    }
}
