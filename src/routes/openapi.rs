//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]`
//! attributes and the types they return, and served at `GET /api/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{health, metrics, posts, users};
use crate::domain::{Page, Post, User};
use crate::error::{ErrorBody, ErrorEnvelope};

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
