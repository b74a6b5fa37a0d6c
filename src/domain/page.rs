use serde::Serialize;

use super::InvalidInput;

/// Page size limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// Page size when the client names none.
    pub default: u32,
    /// Largest page size a client may ask for.
    pub max: u32,
}

/// A validated `limit`/`offset` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    limit: u32,
    offset: u32,
}

impl PageRequest {
    /// Largest offset accepted; deeper pages are refused rather than left to scan millions of rows.
    pub const MAX_OFFSET: u32 = 10_000_000;

    /// Parses the raw query parameters. Nothing is clamped silently: out-of-range input is an error.
    ///
    /// # Errors
    /// `invalid_limit` or `invalid_offset`, naming the accepted range.
    pub fn parse(
        limit: Option<&str>,
        offset: Option<&str>,
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
        let offset = match offset {
            None => 0,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if n <= Self::MAX_OFFSET => n,
                _ => {
                    return Err(InvalidInput::new(
                        "invalid_offset",
                        format!(
                            "offset must be an integer from 0 to {}, got {raw:?}",
                            Self::MAX_OFFSET
                        ),
                    ))
                }
            },
        };
        Ok(Self { limit, offset })
    }

    /// Builds a page request from values already known to be in range.
    pub fn new(limit: u32, offset: u32) -> Self {
        Self { limit, offset }
    }

    /// Number of posts on the page.
    pub fn limit(self) -> u32 {
        self.limit
    }

    /// Number of newer posts skipped.
    pub fn offset(self) -> u32 {
        self.offset
    }
}

/// One page of a listing, in the reference document's response shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub limit: u32,
    pub offset: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 50,
        max: 100,
    };

    #[test]
    fn missing_parameters_take_the_defaults() {
        assert_eq!(
            PageRequest::parse(None, None, LIMITS),
            Ok(PageRequest::new(50, 0))
        );
    }

    #[test]
    fn out_of_range_parameters_are_refused_not_clamped() {
        let cases = [
            (Some("0"), None, "invalid_limit"),
            (Some("101"), None, "invalid_limit"),
            (Some("-1"), None, "invalid_limit"),
            (Some("ten"), None, "invalid_limit"),
            (None, Some("-1"), "invalid_offset"),
            (None, Some("x"), "invalid_offset"),
            (None, Some("10000001"), "invalid_offset"),
        ];
        for (limit, offset, code) in cases {
            let err = PageRequest::parse(limit, offset, LIMITS).expect_err(code);
            assert_eq!(err.code, code, "limit={limit:?} offset={offset:?}");
        }
        assert_eq!(
            PageRequest::parse(Some("100"), Some("10000000"), LIMITS),
            Ok(PageRequest::new(100, 10_000_000))
        );
    }
}
