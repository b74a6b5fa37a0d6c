use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::AppState;
use crate::feed::{CacheHealth, Overall, PostgresHealth, RedisStatus};

/// `GET /ping`: liveness; the process answers HTTP.
#[utoipa::path(get, path = "/ping", tag = "operations",
    responses((status = 200, description = "Liveness: the process answers HTTP", body = serde_json::Value)))]
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "message": "pong" }))
}

#[derive(Serialize)]
struct Body {
    /// `ok`, `degraded` (Redis impaired: still serving, from PostgreSQL) or `down` (no PostgreSQL).
    status: &'static str,
    postgres: Component,
    redis: RedisBody,
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
struct RedisBody {
    /// `up`, `degraded` (some masters do not answer), `down` or `disabled`.
    status: &'static str,
    masters: Vec<NodeBody>,
}

#[derive(Serialize)]
struct NodeBody {
    node: String,
    #[serde(flatten)]
    component: Component,
}

/// `GET /health`: readiness. 200 while PostgreSQL answers (Redis only speeds reads up, so a Redis
/// problem is `degraded`, not unready); 503 when PostgreSQL does not, and 503 `draining` at once,
/// without asking anything, once a stop has begun (`SHUTDOWN_DRAIN_SECS`).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Ready: PostgreSQL answers (`status` ok, or degraded when Redis is impaired)", body = serde_json::Value),
        (status = 503, description = "Not ready: PostgreSQL does not answer (`status` down), or the instance is stopping (`status` draining: still serving, take it out of the balancer)", body = serde_json::Value),
    ))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "draining" }));
    }
    let health = state.feed.health().await;
    let overall = health.overall();
    let postgres = match health.postgres {
        PostgresHealth::Up(latency) => Component::up(latency),
        PostgresHealth::Down(reason) => Component::down(reason.to_owned()),
    };
    let redis_status = health.redis_status();
    let masters = match health.redis {
        CacheHealth::Masters(masters) => masters
            .into_iter()
            .map(|master| NodeBody {
                node: master.node,
                component: match master.outcome {
                    Ok(latency) => Component::up(latency),
                    Err(error) => Component::down(error),
                },
            })
            .collect(),
        CacheHealth::Disabled | CacheHealth::Unreachable => Vec::new(),
    };
    let body = Body {
        status: match overall {
            Overall::Ok => "ok",
            Overall::Degraded => "degraded",
            Overall::Down => "down",
        },
        postgres,
        redis: RedisBody {
            status: match redis_status {
                RedisStatus::Up => "up",
                RedisStatus::Degraded => "degraded",
                RedisStatus::Down => "down",
                RedisStatus::Disabled => "disabled",
            },
            masters,
        },
    };
    match overall {
        Overall::Down => HttpResponse::ServiceUnavailable().json(body),
        Overall::Ok | Overall::Degraded => HttpResponse::Ok().json(body),
    }
}

impl Component {
    fn up(latency: Duration) -> Self {
        Self {
            status: "up",
            latency_ms: Some((latency.as_secs_f64() * 1e5).round() / 100.0),
            error: None,
        }
    }

    fn down(error: String) -> Self {
        Self {
            status: "down",
            latency_ms: None,
            error: Some(error),
        }
    }
}
