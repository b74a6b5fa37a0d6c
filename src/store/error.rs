//! What a PostgreSQL call can fail with, decoded once: SQLSTATEs and constraint names stop here.

/// A constraint of the schema whose violation the service expects and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// `users_username_key`: a username is taken.
    UsernameUnique,
    /// `posts_user_id_fkey`: a post names an author that does not exist.
    PostAuthor,
    /// `api_keys_user_id_fkey`: a key is issued for a user that does not exist.
    ApiKeyUser,
}

impl Constraint {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "users_username_key" => Some(Self::UsernameUnique),
            "posts_user_id_fkey" => Some(Self::PostAuthor),
            "api_keys_user_id_fkey" => Some(Self::ApiKeyUser),
            _ => None,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write.
    #[error("unique constraint {0:?} violated")]
    Unique(Constraint),
    /// A foreign key refused the write.
    #[error("foreign key {0:?} violated")]
    ForeignKey(Constraint),
    /// PostgreSQL cannot serve the call right now: no pooled connection in time, a broken
    /// connection, a server shutting down or starting up, a statement past `DB_STATEMENT_TIMEOUT_MS`.
    /// Retrying later may succeed.
    #[error("PostgreSQL is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// `DB_MAX_INFLIGHT` requests already wait on PostgreSQL: this one is shed, not queued.
    #[error("too many requests are waiting on PostgreSQL")]
    Overloaded,
    /// Anything else: a bug or a schema mismatch.
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            let constraint = db.constraint().and_then(Constraint::from_name);
            let code = db.code().unwrap_or_default();
            match (code.as_ref(), constraint) {
                ("23505", Some(constraint)) => return Self::Unique(constraint),
                ("23503", Some(constraint)) => return Self::ForeignKey(constraint),
                _ => {}
            }
            if is_transient(&code) {
                return Self::Unavailable(error);
            }
            return Self::Other(error);
        }
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error)
            }
            other => Self::Other(other),
        }
    }
}

/// SQLSTATEs after which the same statement may succeed later: connection exceptions (class 08),
/// statement timeout and cancellation (57014), shutdown, crash and start-up (57P01-57P03), too
/// many connections (53300) and a read-only server after a failover (25006).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57014" | "57P01" | "57P02" | "57P03" | "53300" | "25006"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates_are_unavailable_and_the_rest_are_not() {
        for code in [
            "08006", "57014", "57P01", "57P02", "57P03", "53300", "25006",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", ""] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
