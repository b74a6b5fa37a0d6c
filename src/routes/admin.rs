//! Operator views of the service's own state.

use actix_web::http::header::{ContentType, CACHE_CONTROL};
use actix_web::{web, HttpResponse};

use super::AppState;
use crate::feed::HotReport;

/// `GET /api/v1/admin/hot`: the hottest keys, users and slots of this instance's reads over the
/// hot-key window (`HOT_WINDOW_SECS`, top `HOT_TOP_K` of each). Read-only and public, like
/// `/metrics`: it names keys and user ids, which the API shows anyway.
#[utoipa::path(get, path = "/api/v1/admin/hot", tag = "operations",
    responses(
        (status = 200, description = "The hottest keys, users and slots of this instance; empty lists when nothing is cached", body = HotReport),
    ))]
pub async fn hot(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.feed.hot_report())
}

/// `GET /api/v1/admin/stats`: the live view's numbers (what `GET /dashboard` draws), renewed
/// once a second by one sampler: per Redis node its role, slots, commands and round trips per
/// second; the hottest keys and users; page rate, latency and `X-Cache` shares; PostgreSQL
/// queries; cache errors; the health of both backends. Every viewer gets the same snapshot, so
/// a request costs a copy of it, however many dashboards are open. Read-only and public, like
/// `/metrics`.
#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "operations",
    responses(
        (status = 200, description = "The latest snapshot (`{}` during the first second); see docs/API.md", content_type = "application/json", body = Object),
    ))]
pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(state.stats.latest())
}
