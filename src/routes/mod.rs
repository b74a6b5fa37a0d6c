//! HTTP handlers, one file per resource. Handlers parse, call the feed, and shape the response.
//!
//! Writes are authenticated: the caller's identity is established here (the [`Caller`]
//! extractor, from an API key) and checked in the handler, before the feed is called; the feed
//! and below never see HTTP. Reads are public. Rate limits per client address wrap the whole
//! `/api/v1` scope (`limits.rs`); the per-user write limit is counted by the extractor.

mod auth;
mod health;
mod limits;
mod metrics;
mod posts;
mod users;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::domain::{IdempotencyKey, InvalidInput, Page, Post};
use crate::feed::{Created, Served};

pub use auth::{Admin, Caller};
pub use health::{health, ping};
pub use metrics::metrics;

/// The request header naming a create, so that repeating it creates nothing more.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that marks an answer replayed from an earlier request's create.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Mounts every route. Resources (not bare routes) so a wrong method is a 405, not a 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ping").get(ping))
        .service(web::resource("/health").get(health))
        .service(web::resource("/metrics").get(metrics))
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(limits::limit_by_address))
                .service(web::resource("/users").post(users::create_user))
                .service(
                    web::resource("/users/{id}")
                        .get(users::get_user)
                        .patch(users::edit_user),
                )
                .service(web::resource("/users/{id}/posts").get(users::list_user_posts))
                .service(
                    web::resource("/users/{id}/following/{target}")
                        .put(users::follow)
                        .delete(users::unfollow),
                )
                .service(web::resource("/users/{id}/following").get(users::list_following))
                .service(web::resource("/users/{id}/followers").get(users::list_followers))
                .service(web::resource("/users/{id}/feed").get(users::home_feed))
                .service(web::resource("/posts").post(posts::create_post))
                .service(
                    web::resource("/posts/{id}")
                        .get(posts::get_post)
                        .patch(posts::edit_post)
                        .delete(posts::delete_post),
                ),
        );
}

/// The `Idempotency-Key` of a create, if it has one.
///
/// # Errors
/// `invalid_idempotency_key` when it is not 1 to 255 printable ASCII characters, or is sent twice.
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, InvalidInput> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(InvalidInput::new(
            "invalid_idempotency_key",
            "send one Idempotency-Key, not several",
        ));
    }
    IdempotencyKey::parse(value.as_bytes()).map(Some)
}

/// 201 with `Location` and `body`, and `Idempotent-Replayed: true` when an earlier request with the
/// same idempotency key created it.
fn created_json<T, B: Serialize>(location: String, created: &Created<T>, body: &B) -> HttpResponse {
    let mut response = HttpResponse::Created();
    response.insert_header((header::LOCATION, location));
    if created.replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.json(body)
}

/// A page of posts as [`served_json`], plus the `Link` of [`paged_json`].
fn served_page(path: &str, served: &Served<Page<Post>>) -> HttpResponse {
    let mut response = served_json(served);
    if let Some(link) = next_link(path, &served.value) {
        response.headers_mut().insert(header::LINK, link);
    }
    if let Some(source) = served.source {
        response.headers_mut().insert(
            header::HeaderName::from_static("x-feed-source"),
            HeaderValue::from_static(source),
        );
    }
    response
}

/// A page as JSON, with `Link: <path?limit=..&cursor=..>; rel="next"` when more entries exist.
/// `path` is the listing's own path, relative to this host.
fn paged_json<T: Serialize>(path: &str, page: &Page<T>) -> HttpResponse {
    let mut response = HttpResponse::Ok().json(page);
    if let Some(link) = next_link(path, page) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn next_link<T>(path: &str, page: &Page<T>) -> Option<HeaderValue> {
    let cursor = page.next_cursor.as_ref()?;
    let link = format!(
        "<{path}?limit={}&cursor={}>; rel=\"next\"",
        page.limit,
        cursor.encode()
    );
    Some(HeaderValue::from_str(&link).expect("a path and base64url are header-safe"))
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
