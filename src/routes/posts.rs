use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{created_json, idempotency_key, served_json, Caller};
use crate::domain::{NewPost, PostEdit, PostId};
use crate::error::ApiError;
use crate::startup::AppState;

/// Body of `POST /api/v1/posts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePostBody {
    user_id: i64,
    content: String,
}

/// `POST /api/v1/posts` as `user_id`: 201 with the post once it is committed and the author's
/// cached pages are invalidated; 422 when the author does not exist. With an `Idempotency-Key`,
/// a repeat answers with the first post instead of creating another.
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
#[tracing::instrument(skip(state))]
pub async fn get_post(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = PostId::parse(&id)?;
    Ok(served_json(&state.feed.post(id).await?))
}

/// Body of `PATCH /api/v1/posts/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditPostBody {
    content: String,
}

/// `PATCH /api/v1/posts/{id}` as the post's author: 200 with the edited post; every later read
/// shows the new content.
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
