//! Operator views of the service's own state.

use actix_web::{web, HttpResponse};

use crate::cache::HotReport;
use crate::startup::AppState;

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
