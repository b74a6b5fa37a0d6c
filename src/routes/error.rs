//! The one API error type and its mapping to HTTP.
//!
//! Each layer has its own error type and translates the one below once: `store` returns
//! `StoreError` (SQLSTATEs, constraints), `cache` returns `CacheError` and never fails a request
//! (a cache error is a miss), `feed` returns `FeedError` (the service's terms: not found,
//! conflict, unavailable), and `routes` turns a `FeedError` into an [`ApiError`] here (a status
//! and a stable `code`).
//!
//! Every 4xx carries `{"error":{"code":"...","message":"..."}}` saying what was wrong; a 5xx carries
//! the same shape with a generic message, and its cause goes to the log only.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use std::time::Duration;

use super::deadlines::is_body_timeout;
use crate::domain::InvalidInput;
use crate::feed::{Conflict, FeedError, Reference};
use crate::limits::Throttled;

/// `Retry-After` of every 503, in seconds.
pub const RETRY_AFTER_SECS: &str = "1";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Input that does not parse (400).
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The named resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The username is taken (409).
    #[error("username is already taken")]
    UsernameTaken,
    /// A post names an author that does not exist (422).
    #[error("user_id does not name an existing user")]
    UnknownAuthor,
    /// No usable credentials (401, with `WWW-Authenticate: Bearer`).
    #[error("{}", .0.message())]
    Unauthenticated(Unauthenticated),
    /// The credentials do not allow this (403): another user's key, or a user's key where the
    /// admin key is needed.
    #[error("{0}")]
    Forbidden(String),
    /// Too many requests for a rate limit (429, with `Retry-After`).
    #[error("too many requests ({limit}); retry after {} s", retry_after_secs(*.retry_after))]
    RateLimited {
        /// Which limit, for the message and the log.
        limit: &'static str,
        /// How long until the limit admits a request again.
        retry_after: Duration,
    },
    /// An `Idempotency-Key` already named a different request (422).
    #[error(
        "this Idempotency-Key was used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// The request body is larger than accepted (413).
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The request body did not arrive within `HTTP_BODY_TIMEOUT_MS` (408).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The request body is not JSON (415).
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// PostgreSQL cannot serve the request right now (503).
    #[error("the database is unavailable, try again later")]
    Unavailable(#[source] FeedError),
    /// Too many requests already wait on PostgreSQL (503), answered at once.
    #[error("too many requests are waiting on the database; try again shortly")]
    Overloaded,
    /// Anything else (500); the cause is logged, never returned.
    #[error("internal error")]
    Internal(#[source] FeedError),
}

impl ApiError {
    /// The stable `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(invalid) => invalid.code,
            Self::NotFound(_) => "not_found",
            Self::UsernameTaken => "username_taken",
            Self::UnknownAuthor => "unknown_user",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTimeout => "body_timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(error: FeedError) -> Self {
        match error {
            FeedError::NotFound(resource) => Self::NotFound(format!("{resource} does not exist")),
            FeedError::Conflict(Conflict::UsernameTaken) => Self::UsernameTaken,
            FeedError::InvalidReference(Reference::Author) => Self::UnknownAuthor,
            FeedError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            FeedError::Unavailable(_) => Self::Unavailable(error),
            FeedError::Overloaded => Self::Overloaded,
            FeedError::Internal(_) => Self::Internal(error),
        }
    }
}

impl From<Unauthenticated> for ApiError {
    fn from(why: Unauthenticated) -> Self {
        Self::Unauthenticated(why)
    }
}

impl From<Throttled> for ApiError {
    fn from(throttled: Throttled) -> Self {
        Self::RateLimited {
            limit: throttled.limit.as_str(),
            retry_after: throttled.retry_after,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::UsernameTaken => StatusCode::CONFLICT,
            Self::UnknownAuthor | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Unavailable(e) | Self::Internal(e) => {
                tracing::error!(code = self.code(), cause = error_chain(e), "request failed");
            }
            // Counted by `db_shed_total`; a line each would flood the log exactly when it hurts.
            Self::Overloaded => tracing::debug!("request shed: DB_MAX_INFLIGHT reached"),
            _ => {}
        }
        let mut response = error_body(status, self.code(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            Self::Unauthenticated(why) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(why.challenge()),
                );
            }
            Self::RateLimited { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(retry_after_secs(*retry_after)),
                );
            }
            // Whatever made it unavailable (PostgreSQL restarting, a failover) is usually over in
            // seconds; say when a retry is worth it, so clients do not hammer or give up.
            Self::Unavailable(_) | Self::Overloaded => {
                headers.insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

/// Why a request that needs credentials has none that count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A bearer token that is no key of this service (or no longer one).
    UnknownKey,
}

impl Unauthenticated {
    fn message(self) -> &'static str {
        match self {
            Self::Missing => "this request needs an API key: send Authorization: Bearer <api key>",
            Self::Malformed => "the Authorization header must be Bearer <api key>",
            Self::UnknownKey => "the API key is not valid",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750): which scheme, and what was wrong if a
    /// credential was sent.
    fn challenge(self) -> &'static str {
        match self {
            Self::Missing => r#"Bearer realm="hotfeed""#,
            Self::Malformed => r#"Bearer realm="hotfeed", error="invalid_request""#,
            Self::UnknownKey => r#"Bearer realm="hotfeed", error="invalid_token""#,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1: a client that waits that long is
/// admitted.
fn retry_after_secs(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

/// `error: cause: cause ...`, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Every error response: `{"error":{"code","message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

/// What went wrong: a stable `code` to branch on and a `message` for people.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Stable, machine-readable: `invalid_id`, `not_found`, `unavailable`, ... (docs/API.md).
    code: &'a str,
    /// What was wrong and, where it helps, what to send instead.
    message: &'a str,
}

/// The JSON error response every failure uses.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorEnvelope {
        error: ErrorBody { code, message },
    })
}

/// Maps actix-web's JSON extractor failures to [`ApiError`].
pub fn json_error(error: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge(*limit),
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Payload(payload) if is_body_timeout(payload) => ApiError::BodyTimeout,
        JsonPayloadError::Deserialize(serde) if serde.is_data() => InvalidInput::new(
            "invalid_body",
            format!("request body is not valid: {serde}"),
        )
        .into(),
        JsonPayloadError::Deserialize(serde) => InvalidInput::new(
            "malformed_json",
            format!("request body is not valid JSON: {serde}"),
        )
        .into(),
        other => InvalidInput::new(
            "invalid_body",
            format!("request body could not be read: {other}"),
        )
        .into(),
    };
    api.into()
}

/// Maps actix-web's query string extractor failures to [`ApiError`].
pub fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::from(InvalidInput::new(
        "invalid_query",
        format!("query string is not valid: {error}"),
    ))
    .into()
}

/// Replaces the body of any error response that is not already JSON (unknown route, wrong method,
/// an extractor's plain-text error, a panic turned into a 500) with the JSON error shape.
///
/// # Errors
/// Never; the signature is the one `ErrorHandlers` expects.
pub fn ensure_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route")
        }
        s if s.is_server_error() => ("internal", "internal error"),
        _ => (
            "bad_request",
            status.canonical_reason().unwrap_or("bad request"),
        ),
    };
    let (req, _) = res.into_parts();
    let response = error_body(status, code, message).map_into_boxed_body();
    let response: HttpResponse<EitherBody<B, BoxBody>> = response.map_into_right_body();
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(
        req, response,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        let cases = [
            ("no wait", Duration::ZERO, 1),
            ("a millisecond", Duration::from_millis(1), 1),
            ("exactly one second", Duration::from_secs(1), 1),
            ("just over one second", Duration::from_millis(1001), 2),
            ("2.5 s", Duration::from_millis(2500), 3),
        ];
        for (what, wait, secs) in cases {
            assert_eq!(retry_after_secs(wait), secs, "{what}");
        }
    }
}
