//! HTTP handlers, one file per resource. Handlers parse, call the feed, and shape the response.

mod health;
mod metrics;
mod posts;
mod users;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::feed::Served;

pub use health::{health, ping};
pub use metrics::metrics;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(ping))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .service(
            web::scope("/api/v1")
                .route("/users", web::post().to(users::create_user))
                .route("/users/{id}", web::get().to(users::get_user))
                .route("/users/{id}/posts", web::get().to(users::list_user_posts))
                .route("/posts", web::post().to(posts::create_post))
                .route("/posts/{id}", web::get().to(posts::get_post)),
        );
}

/// A JSON response that says how it was served: `X-Cache` and `Server-Timing`.
fn served_json<T: Serialize>(served: &Served<T>) -> HttpResponse {
    let timings = served.timings;
    HttpResponse::build(StatusCode::OK)
        .insert_header(("X-Cache", served.cache.as_str()))
        .insert_header((
            "Server-Timing",
            format!(
                "redis;dur={:.3};desc=\"Redis Cluster\", db;dur={:.3};desc=\"PostgreSQL\"",
                timings.redis.as_secs_f64() * 1e3,
                timings.db.as_secs_f64() * 1e3
            ),
        ))
        .json(&served.value)
}
