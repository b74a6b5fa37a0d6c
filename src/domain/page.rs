use bytes::Bytes;

use serde::Serialize;

use super::{Cursor, InvalidInput};

/// Page size and depth limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// Page size when the client names none.
    pub default: u32,
    /// Largest page size a client may ask for.
    pub max: u32,
    /// Deepest `offset` accepted; a cursor reads any depth.
    pub offset_max: u32,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// After skipping this many newer posts (the reference demo's paging; bounded).
    Offset(u32),
    /// Right after the post a previous page ended with.
    After(Cursor),
}

/// A validated page request: a size and a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    limit: u32,
    position: Position,
}

impl PageRequest {
    /// Parses the raw query parameters. Nothing is clamped silently: out-of-range input is an error.
    ///
    /// # Errors
    /// `invalid_limit`, `invalid_offset`, `offset_too_deep` (pointing to `cursor`),
    /// `invalid_cursor`, or `invalid_query` when both `offset` and `cursor` are given.
    pub fn parse(
        limit: Option<&str>,
        offset: Option<&str>,
        cursor: Option<&str>,
        limits: PageLimits,
    ) -> Result<Self, InvalidInput> {
        let limit = match limit {
            None => limits.default,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=limits.max).contains(&n) => n,
                _ => {
                    return Err(InvalidInput::new(
                        "invalid_limit",
                        format!(
                            "limit must be an integer from 1 to {}, got {raw:?}",
                            limits.max
                        ),
                    ))
                }
            },
        };
        let position = match (offset, cursor) {
            (Some(_), Some(_)) => {
                return Err(InvalidInput::new(
                    "invalid_query",
                    "give either offset or cursor, not both",
                ))
            }
            (None, Some(raw)) => Position::After(Cursor::parse(raw)?),
            (None, None) => Position::Offset(0),
            (Some(raw), None) => match raw.parse::<u64>() {
                Ok(n) if n <= u64::from(limits.offset_max) => {
                    Position::Offset(u32::try_from(n).expect("bounded by a u32"))
                }
                Ok(_) => {
                    return Err(InvalidInput::new(
                        "offset_too_deep",
                        format!(
                            "offset must be at most {}; to read further, follow next_cursor \
                             (?cursor=...), which costs the same at any depth",
                            limits.offset_max
                        ),
                    ))
                }
                Err(_) => {
                    return Err(InvalidInput::new(
                        "invalid_offset",
                        format!(
                            "offset must be an integer from 0 to {}, got {raw:?}",
                            limits.offset_max
                        ),
                    ))
                }
            },
        };
        Ok(Self { limit, position })
    }

    /// A page at an offset, from values already known to be in range.
    pub fn new(limit: u32, offset: u32) -> Self {
        Self {
            limit,
            position: Position::Offset(offset),
        }
    }

    /// A page after a cursor.
    pub fn after(limit: u32, cursor: Cursor) -> Self {
        Self {
            limit,
            position: Position::After(cursor),
        }
    }

    /// Number of posts on the page.
    pub fn limit(self) -> u32 {
        self.limit
    }

    /// Where the page starts.
    pub fn position(self) -> Position {
        self.position
    }

    /// The offset, for an offset page.
    pub fn offset(self) -> Option<u32> {
        match self.position {
            Position::Offset(offset) => Some(offset),
            Position::After(_) => None,
        }
    }
}

/// One page of a listing, in the reference document's response shape plus `next_cursor`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub limit: u32,
    /// Present on offset pages, as in the reference demo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    /// Where the next (older) page starts; `null` on the last page. Opaque: pass it back as
    /// `cursor`.
    #[schema(value_type = Option<String>)]
    pub next_cursor: Option<Cursor>,
}

/// A page rendered once: its JSON body (a `Page` of posts) and what its headers need. Cheap to
/// clone: the body is shared.
#[derive(Debug, Clone)]
pub struct PageBody {
    /// The response body.
    pub json: Bytes,
    /// The page size it was asked with.
    pub limit: u32,
    /// Where the next page starts, as in the body.
    pub next_cursor: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 50,
        max: 100,
        offset_max: 10_000,
    };

    #[test]
    fn missing_parameters_take_the_defaults() {
        assert_eq!(
            PageRequest::parse(None, None, None, LIMITS),
            Ok(PageRequest::new(50, 0))
        );
    }

    #[test]
    fn out_of_range_parameters_are_refused_not_clamped() {
        let cases = [
            (Some("0"), None, None, "invalid_limit"),
            (Some("101"), None, None, "invalid_limit"),
            (Some("-1"), None, None, "invalid_limit"),
            (Some("ten"), None, None, "invalid_limit"),
            (None, Some("-1"), None, "invalid_offset"),
            (None, Some("x"), None, "invalid_offset"),
            (None, Some("10001"), None, "offset_too_deep"),
            (None, Some("99999999999"), None, "offset_too_deep"),
            (None, None, Some("garbage"), "invalid_cursor"),
            (None, Some("0"), Some("garbage"), "invalid_query"),
        ];
        for (limit, offset, cursor, code) in cases {
            let err = PageRequest::parse(limit, offset, cursor, LIMITS).expect_err(code);
            assert_eq!(
                err.code, code,
                "limit={limit:?} offset={offset:?} cursor={cursor:?}"
            );
        }
        assert_eq!(
            PageRequest::parse(Some("100"), Some("10000"), None, LIMITS),
            Ok(PageRequest::new(100, 10_000))
        );
    }

    #[test]
    fn the_too_deep_message_points_to_the_cursor() {
        let err = PageRequest::parse(None, Some("300000"), None, LIMITS).expect_err("too deep");
        assert!(err.message.contains("cursor"), "{}", err.message);
    }
}
