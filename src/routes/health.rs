use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::startup::AppState;

/// Longest a readiness probe waits on PostgreSQL.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ping`: liveness; the process answers HTTP.
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "message": "pong" }))
}

#[derive(Serialize)]
struct Health {
    /// `ok`, `degraded` (Redis impaired: still serving, from PostgreSQL) or `down` (no PostgreSQL).
    status: &'static str,
    postgres: Component,
    redis: RedisHealth,
}

#[derive(Serialize)]
struct Component {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct RedisHealth {
    /// `up`, `degraded` (some masters do not answer), `down` or `disabled`.
    status: &'static str,
    masters: Vec<NodeHealth>,
}

#[derive(Serialize)]
struct NodeHealth {
    node: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `GET /health`: readiness. 200 while PostgreSQL answers (Redis only speeds reads up, so a Redis
/// problem is `degraded`, not unready); 503 when PostgreSQL does not.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let store = state.feed.store();
    let db_probe = async {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            DB_PROBE_TIMEOUT,
            sqlx::query("SELECT 1").execute(store.pool()),
        )
        .await;
        match outcome {
            Ok(Ok(_)) => Component {
                status: "up",
                latency_ms: Some(millis(started.elapsed())),
                error: None,
            },
            Ok(Err(error)) => {
                tracing::warn!(%error, "health: PostgreSQL probe failed");
                Component {
                    status: "down",
                    latency_ms: None,
                    error: Some("query failed".into()),
                }
            }
            Err(_) => Component {
                status: "down",
                latency_ms: None,
                error: Some("timed out".into()),
            },
        }
    };
    let redis_probe = async {
        let Some(cache) = state.feed.cache() else {
            return RedisHealth {
                status: "disabled",
                masters: Vec::new(),
            };
        };
        let Ok(pings) = cache.cluster().ping_primaries().await else {
            return RedisHealth {
                status: "down",
                masters: Vec::new(),
            };
        };
        let masters: Vec<NodeHealth> = pings
            .into_iter()
            .map(|(node, result)| match result {
                Ok(latency) => NodeHealth {
                    node,
                    status: "up",
                    latency_ms: Some(millis(latency)),
                    error: None,
                },
                Err(error) => NodeHealth {
                    node,
                    status: "down",
                    latency_ms: None,
                    error: Some(error),
                },
            })
            .collect();
        let up = masters.iter().filter(|m| m.status == "up").count();
        let status = match up {
            0 => "down",
            n if n == masters.len() => "up",
            _ => "degraded",
        };
        RedisHealth { status, masters }
    };
    let (postgres, redis) = futures::join!(db_probe, redis_probe);
    let status = match (postgres.status, redis.status) {
        ("down", _) => "down",
        (_, "up" | "disabled") => "ok",
        _ => "degraded",
    };
    let body = Health {
        status,
        postgres,
        redis,
    };
    if status == "down" {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 100.0
}
