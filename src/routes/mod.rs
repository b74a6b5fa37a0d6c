//! HTTP handlers, one file per resource. Handlers parse, call the feed, and shape the response.
//!
//! Writes are authenticated: the caller's identity is established here (the [`Caller`]
//! extractor, from an API key) and checked in the handler, before the feed is called; the feed
//! and below never see HTTP. Reads are public. Rate limits per client address wrap the whole
//! `/api/v1` scope (`limits.rs`); the per-user write limit is counted by the extractor.

mod admin;
mod auth;
mod dashboard;
mod deadlines;
mod drain;
mod error;
mod health;
mod limits;
mod metrics;
mod observe;
mod openapi;
mod posts;
mod state;
mod users;

use actix_web::dev::HttpServiceFactory;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse, Route};
use serde::Serialize;

use crate::domain::{Cursor, IdempotencyKey, InvalidInput, Page, PageBody};
use crate::feed::{Created, Served};
use error::error_body;

pub use auth::{Admin, Caller};
pub use deadlines::Deadlines;
pub use drain::{close_when_draining, Drain};
pub use error::{ensure_json_error, json_error, query_error, ApiError};
pub use health::{health, ping};
pub use metrics::metrics;
pub use observe::{observe, AccessLogPolicy, REQUEST_ID};
pub use openapi::ApiDoc;
pub use state::AppState;

/// The request header naming a create, so that repeating it creates nothing more.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that marks an answer replayed from an earlier request's create.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Mounts every route, each path one [`resource`] so a wrong method is a 405 with `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use Method as M;
    cfg.service(resource("/ping", [(M::GET, web::to(ping))]))
        .service(resource("/health", [(M::GET, web::to(health))]))
        .service(resource("/metrics", [(M::GET, web::to(metrics))]))
        .service(resource("/dashboard", [(M::GET, web::to(dashboard::page))]))
        .service(resource(
            "/dashboard/app.js",
            [(M::GET, web::to(dashboard::script))],
        ))
        .service(resource(
            "/dashboard/app.css",
            [(M::GET, web::to(dashboard::style))],
        ))
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(limits::limit_by_address))
                // The pages people read first: the router tries patterns in this order, and each
                // pattern with a parameter is a regex match, so the hot paths do not first fail
                // against the others.
                .service(resource(
                    "/users/{id}/posts",
                    [(M::GET, web::to(users::list_user_posts))],
                ))
                .service(resource(
                    "/users/{id}/feed",
                    [(M::GET, web::to(users::home_feed))],
                ))
                .service(resource(
                    "/openapi.json",
                    [(M::GET, web::to(openapi::openapi))],
                ))
                .service(resource("/admin/hot", [(M::GET, web::to(admin::hot))]))
                .service(resource("/admin/stats", [(M::GET, web::to(admin::stats))]))
                .service(resource("/users", [(M::POST, web::to(users::create_user))]))
                .service(resource(
                    "/users/{id}",
                    [
                        (M::GET, web::to(users::get_user)),
                        (M::PATCH, web::to(users::edit_user)),
                    ],
                ))
                .service(resource(
                    "/users/{id}/following/{target}",
                    [
                        (M::PUT, web::to(users::follow)),
                        (M::DELETE, web::to(users::unfollow)),
                    ],
                ))
                .service(resource(
                    "/users/{id}/following",
                    [(M::GET, web::to(users::list_following))],
                ))
                .service(resource(
                    "/users/{id}/followers",
                    [(M::GET, web::to(users::list_followers))],
                ))
                .service(resource("/posts", [(M::POST, web::to(posts::create_post))]))
                .service(resource(
                    "/posts/{id}",
                    [
                        (M::GET, web::to(posts::get_post)),
                        (M::PATCH, web::to(posts::edit_post)),
                        (M::DELETE, web::to(posts::delete_post)),
                    ],
                )),
        );
}

/// A resource serving `routes`, one handler per method; any other method is a 405 whose `Allow`
/// lists these (RFC 9110, section 15.5.6), derived from the same list so the two cannot drift.
///
/// The resource is wrapped in the request [`deadlines`](deadlines): here, after routing,
/// because the deadline middleware keeps a handle on the request to answer a timeout with.
fn resource<const N: usize>(
    path: &str,
    routes: [(Method, Route); N],
) -> impl HttpServiceFactory + 'static {
    let allow = routes
        .iter()
        .map(|(method, _)| method.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let allow = HeaderValue::from_str(&allow).expect("method names are header-safe");
    routes
        .into_iter()
        .fold(web::resource(path), |resource, (method, route)| {
            resource.route(route.method(method))
        })
        .default_service(web::to(move || {
            let allow = allow.clone();
            async move {
                let mut response = error_body(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "method not allowed on this route; Allow lists the ones that are",
                );
                response.headers_mut().insert(header::ALLOW, allow);
                response
            }
        }))
        .wrap(from_fn(deadlines::enforce))
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

/// A rendered page of posts, with the headers of [`served_json`] and the `Link` of
/// [`paged_json`]; the body is sent as it was rendered (or kept by the in-process tier).
fn served_page(path: &str, served: &Served<PageBody>) -> HttpResponse {
    let mut response = served_response(served);
    if let Some(link) = next_link(path, served.value.limit, served.value.next_cursor.as_ref()) {
        response.insert_header((header::LINK, link));
    }
    if let Some(source) = served.source {
        response.insert_header((
            header::HeaderName::from_static("x-feed-source"),
            HeaderValue::from_static(source),
        ));
    }
    response
        .content_type(header::ContentType::json())
        .body(served.value.json.clone())
}

/// A page as JSON, with `Link: <path?limit=..&cursor=..>; rel="next"` when more entries exist.
/// `path` is the listing's own path, relative to this host.
fn paged_json<T: Serialize>(path: &str, page: &Page<T>) -> HttpResponse {
    let mut response = HttpResponse::Ok().json(page);
    if let Some(link) = next_link(path, page.limit, page.next_cursor.as_ref()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn next_link(path: &str, limit: u32, cursor: Option<&Cursor>) -> Option<HeaderValue> {
    let link = format!(
        "<{path}?limit={limit}&cursor={}>; rel=\"next\"",
        cursor?.encode()
    );
    Some(HeaderValue::from_str(&link).expect("a path and base64url are header-safe"))
}

/// A JSON response that says how it was served: `X-Cache` and `Server-Timing`.
fn served_json<T: Serialize>(served: &Served<T>) -> HttpResponse {
    served_response(served).json(&served.value)
}

/// A 200 with the headers that say how `served` was served.
fn served_response<T>(served: &Served<T>) -> actix_web::HttpResponseBuilder {
    let timings = served.timings;
    let mut response = HttpResponse::build(StatusCode::OK);
    response
        .insert_header(("X-Cache", served.cache.as_str()))
        .insert_header((
            "Server-Timing",
            format!(
                "redis;dur={:.3};desc=\"Redis Cluster\", db;dur={:.3};desc=\"PostgreSQL\"",
                timings.redis.as_secs_f64() * 1e3,
                timings.db.as_secs_f64() * 1e3
            ),
        ));
    response
}
