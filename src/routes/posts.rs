use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::served_json;
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

/// `POST /api/v1/posts`: 201 with the post once it is committed and the author's cached pages are
/// invalidated; 422 when the author does not exist.
#[tracing::instrument(skip_all, fields(user_id = body.user_id))]
pub async fn create_post(
    state: web::Data<AppState>,
    body: web::Json<CreatePostBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_post = NewPost::parse(body.user_id, body.content)?;
    let post = state.feed.create_post(&new_post).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/posts/{}", post.id)))
        .json(post))
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

/// `PATCH /api/v1/posts/{id}`: 200 with the edited post; every later read shows the new content.
// Authorization goes here when writes are authenticated: the caller must be the post's author.
#[tracing::instrument(skip(state, body))]
pub async fn edit_post(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<EditPostBody>,
) -> Result<HttpResponse, ApiError> {
    let id = PostId::parse(&id)?;
    let edit = PostEdit::parse(body.into_inner().content)?;
    Ok(HttpResponse::Ok().json(state.feed.edit_post(id, &edit).await?))
}

/// `DELETE /api/v1/posts/{id}`: 204; the post is then a 404 and gone from every page.
// Authorization goes here when writes are authenticated: the caller must be the post's author.
#[tracing::instrument(skip(state))]
pub async fn delete_post(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = PostId::parse(&id)?;
    state.feed.delete_post(id).await?;
    Ok(HttpResponse::NoContent().finish())
}
