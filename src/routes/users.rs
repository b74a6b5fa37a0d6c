use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorEnvelope};
use super::openapi::{Authenticated, JsonBodyErrors, Throttled};
use super::AppState;
use super::{created_json, idempotency_key, paged_json, served_json, served_page, Caller};
use crate::domain::{
    Follow, InvalidInput, NewUser, Page, PageRequest, Post, User, UserEdit, UserId,
};
use crate::feed::{FollowList, Listing};

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.]+$")]
    username: String,
    /// Defaults to the username.
    #[schema(min_length = 1, max_length = 100)]
    display_name: Option<String>,
}

/// Query of `GET /api/v1/users/{id}/posts`; parsed into a [`PageRequest`].
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
    cursor: Option<String>,
}

/// Body of `PATCH /api/v1/users/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditUserBody {
    #[schema(min_length = 1, max_length = 100)]
    display_name: String,
}

/// Body of a `201` to `POST /api/v1/users`: the user and their API key, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedUser<'a> {
    #[serde(flatten)]
    user: &'a User,
    /// `hf_` and 43 base64url characters; keep it, it is not shown again.
    api_key: &'a str,
}

/// `POST /api/v1/users` (public: anyone may sign up): 201 with the user and their API key, 409 if
/// the username is taken. With an `Idempotency-Key`, a repeat answers with the first user (and a
/// new key for them) instead of a 409.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters; a repeat with the same key and body answers with the first response (Idempotent-Replayed: true) and creates nothing, for 24 h")),
    request_body = CreateUserBody,
    responses(
        (status = 201, description = "Created: the user and its API key, shown this once", body = CreatedUser, headers(("Location" = String, description = "the user's URL"))),
        (status = 400, description = "Invalid username, display name or body", body = ErrorEnvelope),
        (status = 409, description = "username_taken", body = ErrorEnvelope),
        (status = 422, description = "idempotency_key_reused: the same Idempotency-Key with another request", body = ErrorEnvelope),
        JsonBodyErrors, Throttled,
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreateUserBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_user = NewUser::parse(body.username, body.display_name)?;
    let key = idempotency_key(&req)?;
    let created = state.feed.create_user(&new_user, key.as_ref()).await?;
    let account = &created.value;
    Ok(created_json(
        format!("/api/v1/users/{}", account.user.id),
        &created,
        &CreatedUser {
            user: &account.user,
            api_key: account.api_key.expose(),
        },
    ))
}

/// `GET /api/v1/users/{id}`.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "the user's id, a positive integer")),
    responses(
        (status = 200, description = "The user", body = User, headers(
            ("X-Cache" = String, description = "HIT-L1 (in-process tier, pages), HIT, PARTIAL, MISS or BYPASS: how the cache served it"),
            ("Server-Timing" = String, description = "time spent on Redis and PostgreSQL"),
            ("X-Request-Id" = String, description = "the request's id, as in the logs"),
        )),
        (status = 400, description = "invalid_id", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Throttled,
    ))]
#[tracing::instrument(level = "debug", skip(state))]
pub async fn get_user(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id)?;
    Ok(served_json(&state.feed.user(id).await?))
}

/// `PATCH /api/v1/users/{id}` as that user: 200 with the edited user.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users",
    security(("api_key" = [])),
    params(("id" = i64, Path, minimum = 1, description = "the user's id, a positive integer")),
    request_body = EditUserBody,
    responses(
        (status = 200, description = "The edited user", body = User),
        (status = 400, description = "Invalid id, display name or body", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        JsonBodyErrors, Authenticated,
    ))]
#[tracing::instrument(skip(state, body))]
pub async fn edit_user(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<EditUserBody>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id)?;
    let edit = UserEdit::parse(body.into_inner().display_name)?;
    caller.act_as(id)?;
    Ok(HttpResponse::Ok().json(state.feed.edit_user(id, &edit).await?))
}

/// `GET /api/v1/users/{id}/posts?limit=50&cursor=...` (or `&offset=N`): newest first.
#[utoipa::path(get, path = "/api/v1/users/{id}/posts", tag = "feeds",
    params(("id" = i64, Path, minimum = 1, description = "the user's id, a positive integer"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "page size (PAGE_SIZE_DEFAULT 50, at most PAGE_SIZE_MAX 100)"), ("offset" = Option<u32>, Query, minimum = 0, maximum = 10000, description = "entries to skip, at most PAGE_OFFSET_MAX (10000); not with `cursor`"), ("cursor" = Option<String>, Query, description = "a `next_cursor` from the previous page; opaque")),
    responses(
        (status = 200, description = "A page of the user's posts, newest first", body = Page<Post>, headers(
            ("X-Cache" = String, description = "HIT-L1 (in-process tier, pages), HIT, PARTIAL, MISS or BYPASS: how the cache served it"),
            ("Server-Timing" = String, description = "time spent on Redis and PostgreSQL"),
            ("Link" = String, description = "`<...>; rel=\"next\"` when a next page exists"),
            ("X-Request-Id" = String, description = "the request's id, as in the logs"),
        )),
        (status = 400, description = "invalid_id, invalid_limit, invalid_offset, offset_too_deep, invalid_cursor or invalid_query", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Throttled,
    ))]
#[tracing::instrument(level = "debug", skip(state))]
pub async fn list_user_posts(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id)?;
    let page = PageRequest::parse(
        query.limit.as_deref(),
        query.offset.as_deref(),
        query.cursor.as_deref(),
        state.page_limits,
    )?;
    let served = state.feed.page(Listing::user_posts(id), page).await?;
    Ok(served_page(&format!("/api/v1/users/{id}/posts"), &served))
}

/// `PUT /api/v1/users/{id}/following/{target}` as `id`: 204 once `id` follows `target`
/// (idempotent).
#[utoipa::path(put, path = "/api/v1/users/{id}/following/{target}", tag = "users",
    security(("api_key" = [])),
    params(("id" = i64, Path, minimum = 1, description = "the follower"), ("target" = i64, Path, minimum = 1, description = "the account followed")),
    responses(
        (status = 204, description = "`id` follows `target` (already did: the same)"),
        (status = 400, description = "invalid_id or cannot_follow_self", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Authenticated,
    ))]
#[tracing::instrument(skip(state))]
pub async fn follow(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let follow = parse_follow(&path)?;
    caller.act_as(follow.follower)?;
    state.feed.follow(follow).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /api/v1/users/{id}/following/{target}` as `id`: 204 once `id` does not follow
/// `target` (idempotent).
#[utoipa::path(delete, path = "/api/v1/users/{id}/following/{target}", tag = "users",
    security(("api_key" = [])),
    params(("id" = i64, Path, minimum = 1, description = "the follower"), ("target" = i64, Path, minimum = 1, description = "the account followed")),
    responses(
        (status = 204, description = "`id` does not follow `target` (already did not: the same)"),
        (status = 400, description = "invalid_id or cannot_follow_self", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Authenticated,
    ))]
#[tracing::instrument(skip(state))]
pub async fn unfollow(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let follow = parse_follow(&path)?;
    caller.act_as(follow.follower)?;
    state.feed.unfollow(follow).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/v1/users/{id}/following?limit=&cursor=`: whom the user follows, newest follow first.
#[utoipa::path(get, path = "/api/v1/users/{id}/following", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "the user's id, a positive integer"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "page size (PAGE_SIZE_DEFAULT 50, at most PAGE_SIZE_MAX 100)"), ("cursor" = Option<String>, Query, description = "a `next_cursor` from the previous page; opaque")),
    responses(
        (status = 200, description = "Whom the user follows, newest follow first", body = Page<User>,
            headers(("Link" = String, description = "`<...>; rel=\"next\"` when a next page exists"))),
        (status = 400, description = "invalid_id, invalid_limit, invalid_cursor or invalid_query (offset)", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Throttled,
    ))]
#[tracing::instrument(level = "debug", skip(state))]
pub async fn list_following(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    list_follows(&state, &id, &query, FollowList::Following, "following").await
}

/// `GET /api/v1/users/{id}/followers?limit=&cursor=`: who follows the user, newest follow first.
#[utoipa::path(get, path = "/api/v1/users/{id}/followers", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "the user's id, a positive integer"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "page size (PAGE_SIZE_DEFAULT 50, at most PAGE_SIZE_MAX 100)"), ("cursor" = Option<String>, Query, description = "a `next_cursor` from the previous page; opaque")),
    responses(
        (status = 200, description = "Who follows the user, newest follow first", body = Page<User>,
            headers(("Link" = String, description = "`<...>; rel=\"next\"` when a next page exists"))),
        (status = 400, description = "invalid_id, invalid_limit, invalid_cursor or invalid_query (offset)", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Throttled,
    ))]
#[tracing::instrument(level = "debug", skip(state))]
pub async fn list_followers(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    list_follows(&state, &id, &query, FollowList::Followers, "followers").await
}

async fn list_follows(
    state: &AppState,
    id: &str,
    query: &PageQuery,
    list: FollowList,
    segment: &str,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(id)?;
    let page = cursor_page(query, state, "a follow list")?;
    let page = state.feed.follows(id, list, page).await?;
    Ok(paged_json(&format!("/api/v1/users/{id}/{segment}"), &page))
}

fn parse_follow(path: &(String, String)) -> Result<Follow, InvalidInput> {
    Follow::parse(UserId::parse(&path.0)?, UserId::parse(&path.1)?)
}

/// `GET /api/v1/users/{id}/feed?limit=&cursor=`: the user's own posts and those of everyone they
/// follow, newest first. Paged by cursor only.
#[utoipa::path(get, path = "/api/v1/users/{id}/feed", tag = "feeds",
    params(("id" = i64, Path, minimum = 1, description = "the user's id, a positive integer"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "page size (PAGE_SIZE_DEFAULT 50, at most PAGE_SIZE_MAX 100)"), ("cursor" = Option<String>, Query, description = "a `next_cursor` from the previous page; opaque")),
    responses(
        (status = 200, description = "A page of the user's home feed: their posts and those of everyone they follow, newest first", body = Page<Post>,
            headers(
                ("X-Cache" = String, description = "HIT, PARTIAL, MISS or BYPASS"),
                ("X-Feed-Source" = String, description = "inbox, inbox+pulled or database: where the ids came from"),
                ("Server-Timing" = String, description = "time spent on Redis and PostgreSQL"),
                ("Link" = String, description = "`<...>; rel=\"next\"` when a next page exists"),
            )),
        (status = 400, description = "invalid_id, invalid_limit, invalid_cursor or invalid_query (offset)", body = ErrorEnvelope),
        (status = 404, description = "No such user", body = ErrorEnvelope),
        Throttled,
    ))]
#[tracing::instrument(level = "debug", skip(state))]
pub async fn home_feed(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id)?;
    let page = cursor_page(&query, &state, "the feed")?;
    let served = state.feed.page(Listing::home_feed(id), page).await?;
    Ok(served_page(&format!("/api/v1/users/{id}/feed"), &served))
}

/// A cursor-only page request: `offset` is refused with a pointer to `cursor`.
fn cursor_page(
    query: &PageQuery,
    state: &AppState,
    what: &str,
) -> Result<PageRequest, InvalidInput> {
    if query.offset.is_some() {
        return Err(InvalidInput::new(
            "invalid_query",
            format!("{what} pages by cursor only: pass next_cursor as cursor"),
        ));
    }
    PageRequest::parse(
        query.limit.as_deref(),
        None,
        query.cursor.as_deref(),
        state.page_limits,
    )
}
