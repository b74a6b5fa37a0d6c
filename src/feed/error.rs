//! The one error type of the feed: what went wrong in the service's terms, not the database's.

use std::fmt;
use std::sync::Arc;

use crate::domain::{PostId, UserId};
use crate::store::{Constraint, StoreError};

/// Something a client can name that may not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    User(UserId),
    Post(PostId),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user {id}"),
            Self::Post(id) => write!(f, "post {id}"),
        }
    }
}

/// A write that contradicts what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Another user has this username.
    UsernameTaken,
}

/// A reference inside a request body that names nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// A post's `user_id`.
    Author,
}

/// Why a feed operation failed; cloneable, so a coalesced read can hand its outcome to every
/// request that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FeedError {
    /// The resource the request is about does not exist.
    #[error("{0} does not exist")]
    NotFound(Resource),
    /// The write contradicts existing data.
    #[error("{}", match .0 { Conflict::UsernameTaken => "username is already taken" })]
    Conflict(Conflict),
    /// The request refers to something that does not exist.
    #[error("{}", match .0 { Reference::Author => "user_id does not name an existing user" })]
    InvalidReference(Reference),
    /// An idempotency key already named a different request; nothing was done.
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// PostgreSQL cannot serve this right now; the client may retry.
    #[error("the database is unavailable, try again later")]
    Unavailable(#[source] Arc<StoreError>),
    /// Too many requests already wait on PostgreSQL; the client may retry shortly.
    #[error("the service is overloaded, try again shortly")]
    Overloaded,
    /// A bug or an unexpected database state; the cause is for the log only.
    #[error("internal error")]
    Internal(#[source] Arc<StoreError>),
}

impl From<StoreError> for FeedError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unique(Constraint::UsernameUnique) => {
                Self::Conflict(Conflict::UsernameTaken)
            }
            StoreError::ForeignKey(Constraint::PostAuthor) => {
                Self::InvalidReference(Reference::Author)
            }
            StoreError::Unavailable(_) => Self::Unavailable(Arc::new(error)),
            StoreError::Overloaded => Self::Overloaded,
            StoreError::Unique(_) | StoreError::ForeignKey(_) | StoreError::Other(_) => {
                Self::Internal(Arc::new(error))
            }
        }
    }
}
