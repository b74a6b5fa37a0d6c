use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Fingerprint, InvalidInput, PostId, UserId};

/// Longest post content accepted, in Unicode scalar values.
pub const CONTENT_MAX_CHARS: usize = 5000;
/// Longest username accepted.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Longest display name accepted.
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// A user as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    /// Users who follow this one.
    pub followers_count: i64,
    /// Users this one follows.
    pub following_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A post as stored and as returned by the API (the reference document's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Post {
    pub id: PostId,
    pub user_id: UserId,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated request to create a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
}

impl NewUser {
    /// Validates a username (3 to 32 of `[A-Za-z0-9_.]`) and a display name (1 to 100 characters,
    /// defaulting to the username).
    ///
    /// # Errors
    /// `invalid_username` or `invalid_display_name`.
    pub fn parse(username: String, display_name: Option<String>) -> Result<Self, InvalidInput> {
        let valid_username = (3..=USERNAME_MAX_CHARS).contains(&username.chars().count())
            && username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid_username {
            return Err(InvalidInput::new(
                "invalid_username",
                format!(
                    "username must be 3 to {USERNAME_MAX_CHARS} characters of letters, digits, '_' or '.'"
                ),
            ));
        }
        let display_name = match display_name {
            None => username.clone(),
            Some(name) => parse_display_name(name)?,
        };
        Ok(Self {
            username,
            display_name,
        })
    }

    /// What this create asks for, to tell a repeat from another request under the same key.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&[
            b"user",
            self.username.as_bytes(),
            self.display_name.as_bytes(),
        ])
    }
}

/// A validated request to create a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub user_id: UserId,
    pub content: String,
}

impl NewPost {
    /// Validates the author id and the content (not blank, at most 5000 characters).
    ///
    /// # Errors
    /// `invalid_user_id` or `invalid_content`.
    pub fn parse(user_id: i64, content: String) -> Result<Self, InvalidInput> {
        if user_id <= 0 {
            return Err(InvalidInput::new(
                "invalid_user_id",
                format!("user_id must be a positive integer, got {user_id}"),
            ));
        }
        let content = parse_content(content)?;
        Ok(Self {
            user_id: UserId::from_trusted(user_id),
            content,
        })
    }

    /// What this create asks for, to tell a repeat from another request under the same key.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&[
            b"post",
            &self.user_id.get().to_be_bytes(),
            self.content.as_bytes(),
        ])
    }
}

/// A validated follow: who follows whom, two different users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow {
    pub follower: UserId,
    pub followee: UserId,
}

impl Follow {
    /// Checks that nobody follows themselves.
    ///
    /// # Errors
    /// `cannot_follow_self`.
    pub fn parse(follower: UserId, followee: UserId) -> Result<Self, InvalidInput> {
        if follower == followee {
            return Err(InvalidInput::new(
                "cannot_follow_self",
                format!("user {follower} cannot follow themselves"),
            ));
        }
        Ok(Self { follower, followee })
    }
}

/// A validated edit of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostEdit {
    pub content: String,
}

impl PostEdit {
    /// Validates the new content as for a new post.
    ///
    /// # Errors
    /// `invalid_content`.
    pub fn parse(content: String) -> Result<Self, InvalidInput> {
        Ok(Self {
            content: parse_content(content)?,
        })
    }
}

/// A validated edit of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEdit {
    pub display_name: String,
}

impl UserEdit {
    /// Validates the new display name as for a new user.
    ///
    /// # Errors
    /// `invalid_display_name`.
    pub fn parse(display_name: String) -> Result<Self, InvalidInput> {
        Ok(Self {
            display_name: parse_display_name(display_name)?,
        })
    }
}

/// Post content: not blank, at most [`CONTENT_MAX_CHARS`], no NUL (PostgreSQL refuses it).
fn parse_content(content: String) -> Result<String, InvalidInput> {
    if content.trim().is_empty() {
        return Err(InvalidInput::new(
            "invalid_content",
            "content must not be empty",
        ));
    }
    let len = content.chars().count();
    if len > CONTENT_MAX_CHARS {
        return Err(InvalidInput::new(
            "invalid_content",
            format!("content must be at most {CONTENT_MAX_CHARS} characters, got {len}"),
        ));
    }
    if content.contains('\0') {
        return Err(InvalidInput::new(
            "invalid_content",
            "content must not contain NUL characters",
        ));
    }
    Ok(content)
}

/// A display name: trimmed, 1 to [`DISPLAY_NAME_MAX_CHARS`], no control characters.
fn parse_display_name(name: String) -> Result<String, InvalidInput> {
    let name = name.trim().to_owned();
    let len = name.chars().count();
    if len == 0 || len > DISPLAY_NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            "invalid_display_name",
            format!(
                "display_name must be 1 to {DISPLAY_NAME_MAX_CHARS} characters without control characters"
            ),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_outside_the_alphabet_or_length_are_refused() {
        for bad in ["ab", "has space", "émile", &"x".repeat(33), ""] {
            assert!(NewUser::parse(bad.into(), None).is_err(), "{bad:?}");
        }
        let user = NewUser::parse("ada_l".into(), None).expect("valid username");
        assert_eq!(user.display_name, "ada_l");
    }

    #[test]
    fn content_must_be_present_and_bounded() {
        assert!(NewPost::parse(1, "   ".into()).is_err());
        assert!(NewPost::parse(1, "x".repeat(CONTENT_MAX_CHARS + 1)).is_err());
        assert!(NewPost::parse(1, "a\0b".into()).is_err());
        assert!(NewPost::parse(0, "hi".into()).is_err());
        assert!(NewPost::parse(1, "é".repeat(CONTENT_MAX_CHARS)).is_ok());
    }
}
