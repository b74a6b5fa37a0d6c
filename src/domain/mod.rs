//! Domain types: what the API accepts, parsed once at the edge.

mod api_key;
mod cursor;
mod idempotency;
mod ids;
mod models;
mod page;

pub use api_key::{ApiKey, KeyHash, API_KEY_PREFIX};
pub use cursor::Cursor;
pub use idempotency::{Fingerprint, IdempotencyKey, IDEMPOTENCY_KEY_MAX_LEN, IDEMPOTENCY_KEY_TTL};
pub use ids::{PostId, UserId};
pub use models::{
    Follow, NewPost, NewUser, Post, PostEdit, User, UserEdit, CONTENT_MAX_CHARS,
    DISPLAY_NAME_MAX_CHARS, USERNAME_MAX_CHARS,
};
pub use page::{Page, PageBody, PageLimits, PageRequest, Position};

/// Why a piece of client input was refused; becomes a 400 with this code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidInput {
    /// Stable, machine-readable code such as `invalid_id`.
    pub code: &'static str,
    /// What was wrong, for a human.
    pub message: String,
}

impl InvalidInput {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
