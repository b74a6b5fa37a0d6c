//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]`
//! attributes and the types they return, and served at `GET /api/v1/openapi.json`.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use utoipa::openapi::content::{Content, ContentBuilder};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema as _};

use super::error::{ErrorBody, ErrorEnvelope};
use super::{admin, dashboard, health, metrics, posts, users};
use crate::domain::{Page, Post, User};
use crate::feed::{HotKeyEntry, HotReport, HotSlotEntry, HotUserEntry};

/// The API as one document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hotfeed",
        description = "Social-media feeds served from a Redis Cluster in front of PostgreSQL. \
            Every 4xx and 5xx carries `{\"error\":{\"code\",\"message\"}}`; every response \
            carries `X-Request-Id`; reads say how they were served in `X-Cache` and \
            `Server-Timing`. See docs/API.md."
    ),
    paths(
        health::ping,
        health::health,
        metrics::metrics,
        admin::hot,
        admin::stats,
        dashboard::page,
        dashboard::script,
        dashboard::style,
        openapi,
        users::create_user,
        users::get_user,
        users::edit_user,
        users::list_user_posts,
        users::follow,
        users::unfollow,
        users::list_following,
        users::list_followers,
        users::home_feed,
        posts::create_post,
        posts::get_post,
        posts::edit_post,
        posts::delete_post,
    ),
    components(schemas(
        User,
        Post,
        Page<Post>,
        Page<User>,
        ErrorEnvelope,
        ErrorBody,
        users::CreateUserBody,
        users::CreatedUser,
        users::EditUserBody,
        posts::CreatePostBody,
        posts::EditPostBody,
        HotReport,
        HotKeyEntry,
        HotUserEntry,
        HotSlotEntry,
    )),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "users", description = "Users and their follows"),
        (name = "posts", description = "Posts"),
        (name = "feeds", description = "Listings of posts, newest first, paged by cursor"),
        (name = "operations", description = "Liveness, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The `api_key` security scheme: `Authorization: Bearer <key>`, a key from `POST /api/v1/users`
/// or `hotfeed api-key`, or ADMIN_API_KEY.
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The responses every `/api/v1` operation may give besides its own: rate limited (429) and
/// unavailable, overloaded or timed out (503), each with `Retry-After`.
pub struct Throttled;

impl IntoResponses for Throttled {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "429".to_owned(),
                error_response(
                    "rate_limited: past RATE_LIMIT_* for this client or user",
                    Some("seconds until the limit admits another request"),
                ),
            ),
            (
                "503".to_owned(),
                error_response(
                    "unavailable, overloaded or timeout: PostgreSQL cannot serve it now",
                    Some("seconds before a retry is worth it"),
                ),
            ),
        ])
    }
}

/// [`Throttled`], and what a write with a missing or foreign key gets: 401 and 403.
pub struct Authenticated;

impl IntoResponses for Authenticated {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = Throttled::responses();
        let mut unauthenticated = ResponseBuilder::new()
            .description("unauthenticated: no API key, or one nobody holds")
            .content("application/json", error_content());
        unauthenticated = unauthenticated.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("the Bearer challenge"))
                .build(),
        );
        responses.insert("401".to_owned(), unauthenticated.build().into());
        responses.insert(
            "403".to_owned(),
            error_response("forbidden: the key's user may not act as this one", None),
        );
        responses
    }
}

/// What a JSON body can fail with before the handler sees it: 408, 413 and 415.
pub struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "408".to_owned(),
                error_response(
                    "body_timeout: the body did not arrive within HTTP_BODY_TIMEOUT_MS",
                    None,
                ),
            ),
            (
                "413".to_owned(),
                error_response("payload_too_large: body over 64 KiB", None),
            ),
            (
                "415".to_owned(),
                error_response("unsupported_media_type: not JSON", None),
            ),
        ])
    }
}

/// An [`ErrorEnvelope`] response, with `Retry-After` described when `retry_after` says what it
/// means.
fn error_response(description: &str, retry_after: Option<&str>) -> RefOr<Response> {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content());
    if let Some(meaning) = retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(u32::schema())
                .description(Some(meaning))
                .build(),
        );
    }
    response.build().into()
}

fn error_content() -> Content {
    ContentBuilder::new()
        .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorEnvelope"))))
        .build()
}
