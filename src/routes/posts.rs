use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::{ApiError, ErrorEnvelope};
use super::openapi::{Authenticated, JsonBodyErrors, Throttled};
use super::AppState;
use super::{created_json, idempotency_key, served_json, Caller};
use crate::domain::{NewPost, Post, PostEdit, PostId};

/// Body of `POST /api/v1/posts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePostBody {
    #[schema(minimum = 1)]
    user_id: i64,
    /// Not blank; at most 5000 characters.
    #[schema(min_length = 1, max_length = 5000, pattern = "\\S")]
    content: String,
}

/// `POST /api/v1/posts` as `user_id`: 201 with the post once it is committed and the author's
/// cached pages are invalidated; 422 when the author does not exist. With an `Idempotency-Key`,
/// a repeat answers with the first post instead of creating another.
#[utoipa::path(post, path = "/api/v1/posts", tag = "posts",
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters; a repeat with the same key and body answers with the first response (Idempotent-Replayed: true) and creates nothing, for 24 h")),
    request_body = CreatePostBody,
    responses(
        (status = 201, description = "Created; the author's pages are invalidated and the followers' inboxes fed", body = Post,
            headers(("Location" = String, description = "the post's URL"))),
        (status = 400, description = "Invalid content or body", body = ErrorEnvelope),
        (status = 422, description = "unknown_user: user_id names no user; or idempotency_key_reused", body = ErrorEnvelope),
        JsonBodyErrors, Authenticated,
    ))]
#[tracing::instrument(skip_all, fields(user_id = body.user_id))]
pub async fn create_post(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreatePostBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_post = NewPost::parse(body.user_id, body.content)?;
    let key = idempotency_key(&req)?;
    caller.act_as(new_post.user_id)?;
    let created = state.feed.create_post(&new_post, key.as_ref()).await?;
    let post = &created.value;
    Ok(created_json(
        format!("/api/v1/posts/{}", post.id),
        &created,
        post,
    ))
}

/// `GET /api/v1/posts/{id}`.
#[utoipa::path(get, path = "/api/v1/posts/{id}", tag = "posts",
    params(("id" = i64, Path, minimum = 1, description = "the post's id, a positive integer")),
    responses(
        (status = 200, description = "The post", body = Post, headers(
            ("X-Cache" = String, description = "HIT-L1 (in-process tier, pages), HIT, PARTIAL, MISS or BYPASS: how the cache served it"),
            ("Server-Timing" = String, description = "time spent on Redis and PostgreSQL"),
            ("X-Request-Id" = String, description = "the request's id, as in the logs"),
        )),
        (status = 400, description = "invalid_id", body = ErrorEnvelope),
        (status = 404, description = "No such post", body = ErrorEnvelope),
        Throttled,
    ))]
#[tracing::instrument(level = "debug", skip(state))]
pub async fn get_post(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = PostId::parse(&id)?;
    Ok(served_json(&state.feed.post(id).await?))
}

/// Body of `PATCH /api/v1/posts/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditPostBody {
    /// Not blank; at most 5000 characters.
    #[schema(min_length = 1, max_length = 5000, pattern = "\\S")]
    content: String,
}

/// `PATCH /api/v1/posts/{id}` as the post's author: 200 with the edited post; every later read
/// shows the new content.
#[utoipa::path(patch, path = "/api/v1/posts/{id}", tag = "posts",
    security(("api_key" = [])),
    params(("id" = i64, Path, minimum = 1, description = "the post's id, a positive integer")),
    request_body = EditPostBody,
    responses(
        (status = 200, description = "The edited post; every later read shows it", body = Post),
        (status = 400, description = "Invalid id, content or body", body = ErrorEnvelope),
        (status = 404, description = "No such post", body = ErrorEnvelope),
        JsonBodyErrors, Authenticated,
    ))]
#[tracing::instrument(skip(state, body))]
pub async fn edit_post(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<EditPostBody>,
) -> Result<HttpResponse, ApiError> {
    let id = PostId::parse(&id)?;
    let edit = PostEdit::parse(body.into_inner().content)?;
    act_as_author(caller, &state, id).await?;
    Ok(HttpResponse::Ok().json(state.feed.edit_post(id, &edit).await?))
}

/// `DELETE /api/v1/posts/{id}` as the post's author: 204; the post is then a 404 and gone from
/// every page.
#[utoipa::path(delete, path = "/api/v1/posts/{id}", tag = "posts",
    security(("api_key" = [])),
    params(("id" = i64, Path, minimum = 1, description = "the post's id, a positive integer")),
    responses(
        (status = 204, description = "Deleted; gone from every page"),
        (status = 400, description = "invalid_id", body = ErrorEnvelope),
        (status = 404, description = "No such post", body = ErrorEnvelope),
        Authenticated,
    ))]
#[tracing::instrument(skip(state))]
pub async fn delete_post(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = PostId::parse(&id)?;
    act_as_author(caller, &state, id).await?;
    state.feed.delete_post(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Checks that the caller may act as the post's author, as PostgreSQL has it (a post never
/// changes author). The admin key may act as anyone, so its author is not looked up.
async fn act_as_author(caller: Caller, state: &AppState, id: PostId) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::User(_) => caller.act_as(state.feed.post_author(id).await?),
    }
}
