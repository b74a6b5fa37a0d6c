//! `GET /dashboard`: the live view of the hot partition, a page served by the service itself.
//!
//! The page, its script and its style sheet (`dashboard/` at the repository root, plain HTML,
//! JavaScript and SVG with no dependency) are compiled into the binary, so the view needs no
//! network, no CDN and no build step. The script polls `GET /api/v1/admin/stats` once a second.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use actix_web::HttpResponse;

const INDEX: &str = include_str!("../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../dashboard/app.js");
const STYLE: &str = include_str!("../../dashboard/app.css");

/// Everything the page may load comes from this service; it builds its DOM without
/// `innerHTML`, so no inline script is needed either.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /dashboard`.
#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, description = "The live view of the cluster and the hot keys (HTML; polls /api/v1/admin/stats)", content_type = "text/html")))]
pub async fn page() -> HttpResponse {
    embedded(INDEX, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "operations",
    responses((status = 200, description = "The dashboard's script", content_type = "text/javascript")))]
pub async fn script() -> HttpResponse {
    embedded(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/app.css`.
#[utoipa::path(get, path = "/dashboard/app.css", tag = "operations",
    responses((status = 200, description = "The dashboard's style sheet", content_type = "text/css")))]
pub async fn style() -> HttpResponse {
    embedded(STYLE, "text/css; charset=utf-8")
}

fn embedded(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CONTENT_SECURITY_POLICY, POLICY))
        // Embedded in the binary: a new release is a new page, so revalidate on every load.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}
