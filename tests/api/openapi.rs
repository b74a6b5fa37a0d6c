//! The OpenAPI document: served, valid JSON, and complete: every route the app mounts is in it
//! with every method it serves, so the spec cannot silently fall behind the code.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

/// Every path `routes::configure` mounts; a new route must be added here and documented.
const MOUNTED: [&str; 18] = [
    "/ping",
    "/health",
    "/metrics",
    "/dashboard",
    "/dashboard/app.js",
    "/dashboard/app.css",
    "/api/v1/openapi.json",
    "/api/v1/admin/hot",
    "/api/v1/admin/stats",
    "/api/v1/users",
    "/api/v1/users/{id}",
    "/api/v1/users/{id}/posts",
    "/api/v1/users/{id}/following/{target}",
    "/api/v1/users/{id}/following",
    "/api/v1/users/{id}/followers",
    "/api/v1/users/{id}/feed",
    "/api/v1/posts",
    "/api/v1/posts/{id}",
];

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_method_the_app_serves() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let res = app.get("/api/v1/openapi.json").await;

    // Assert
    assert_eq!(res.status(), 200);
    let spec: Value = res.json().await.expect("JSON");
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |method| (path.clone(), method.to_uppercase()))
        })
        .collect();
    // What the app serves, read from its own 405s: each path's Allow header.
    let mut served = BTreeSet::new();
    for path in MOUNTED {
        let concrete = path
            .replace("{id}", "1")
            .replace("{target}", "2")
            .replace("{asset}", "app.js");
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(b"BREW").expect("token"),
                app.url(&concrete),
            )
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 405, "{path} is a route of the app");
        let allow = res.headers()["allow"].to_str().expect("ASCII").to_owned();
        for method in allow.split(", ") {
            served.insert((path.to_owned(), method.to_owned()));
        }
    }
    assert_eq!(
        documented, served,
        "documented operations = served operations"
    );
    for (path, method) in &documented {
        let operation = &spec["paths"][path][method.to_lowercase()];
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} documents its responses"
        );
    }
}
