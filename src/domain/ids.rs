use std::fmt;

use serde::{Deserialize, Serialize};

use super::InvalidInput;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[schema(value_type = i64, format = Int64)]
        pub struct $name(i64);

        impl $name {
            /// Parses a path segment: a positive decimal integer that fits in a `BIGINT`.
            ///
            /// # Errors
            /// `invalid_id` when the text is not such a number.
            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                match raw.parse::<i64>() {
                    Ok(id) if id > 0 => Ok(Self(id)),
                    _ => Err(InvalidInput::new(
                        "invalid_id",
                        format!(concat!($what, " id must be a positive integer, got {:?}"), raw),
                    )),
                }
            }

            /// Wraps an id that is known to be valid (read from the database or the cache).
            pub fn from_trusted(id: i64) -> Self {
                Self(id)
            }

            /// The raw database value.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifier of a user (`users.id`).
    UserId,
    "user"
);
id_type!(
    /// Identifier of a post (`posts.id`).
    PostId,
    "post"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_positive_integers_only() {
        assert_eq!(UserId::parse("42").map(UserId::get), Ok(42));
        for bad in ["0", "-1", "abc", "", "1.5", "99999999999999999999", " 1"] {
            let err = UserId::parse(bad).expect_err(bad);
            assert_eq!(err.code, "invalid_id", "{bad}");
        }
    }
}
