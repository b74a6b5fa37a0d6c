//! The one API error type and its mapping to HTTP.
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

use crate::deadlines::is_body_timeout;
use crate::domain::InvalidInput;
use crate::feed::{Conflict, FeedError, Reference};

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
            FeedError::Unavailable(_) => Self::Unavailable(error),
            FeedError::Overloaded => Self::Overloaded,
            FeedError::Internal(_) => Self::Internal(error),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::UsernameTaken => StatusCode::CONFLICT,
            Self::UnknownAuthor => StatusCode::UNPROCESSABLE_ENTITY,
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Whatever made it unavailable (PostgreSQL restarting, a failover) is usually over in
            // seconds; say when a retry is worth it, so clients do not hammer or give up.
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
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
