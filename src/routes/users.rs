use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{created_json, idempotency_key, paged_json, served_json, served_page, Caller};
use crate::domain::{Follow, InvalidInput, NewUser, PageRequest, User, UserEdit, UserId};
use crate::error::ApiError;
use crate::feed::Listing;
use crate::startup::AppState;
use crate::store::FollowList;

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    username: String,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditUserBody {
    display_name: String,
}

/// Body of a `201` to `POST /api/v1/users`: the user and their API key, shown this once.
#[derive(Serialize)]
struct CreatedUser<'a> {
    #[serde(flatten)]
    user: &'a User,
    api_key: &'a str,
}

/// `POST /api/v1/users` (public: anyone may sign up): 201 with the user and their API key, 409 if
/// the username is taken. With an `Idempotency-Key`, a repeat answers with the first user (and a
/// new key for them) instead of a 409.
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
#[tracing::instrument(skip(state))]
pub async fn get_user(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id)?;
    Ok(served_json(&state.feed.user(id).await?))
}

/// `PATCH /api/v1/users/{id}` as that user: 200 with the edited user.
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
#[tracing::instrument(skip(state))]
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
#[tracing::instrument(skip(state))]
pub async fn list_following(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    list_follows(&state, &id, &query, FollowList::Following, "following").await
}

/// `GET /api/v1/users/{id}/followers?limit=&cursor=`: who follows the user, newest follow first.
#[tracing::instrument(skip(state))]
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
#[tracing::instrument(skip(state))]
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
