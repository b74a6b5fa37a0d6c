use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn ping_answers_pong() {
    let app = spawn_app().await;
    let res = app.get("/ping").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("JSON")["message"], "pong");
}

#[tokio::test]
async fn health_reports_postgres_and_every_redis_master() {
    let app = spawn_app().await;
    let res = app.get("/health").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["postgres"]["status"], "up");
    let masters = body["redis"]["masters"].as_array().expect("masters");
    assert_eq!(masters.len(), 3, "3 masters: {body}");
    assert!(masters.iter().all(|m| m["status"] == "up"), "{body}");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let app = spawn_app().await;
    let generated = app.get("/ping").await;
    let id = generated.headers()["x-request-id"].to_str().expect("ASCII");
    assert_eq!(id.len(), 32, "a generated id: {id}");

    let echoed = app
        .client
        .get(app.url("/api/v1/users/nope"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("answer");
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");
}
