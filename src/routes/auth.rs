//! Who is calling: the `Authorization: Bearer <api key>` of a write, resolved to a [`Caller`] by
//! an extractor before the handler runs. Handlers check what the caller may do before they call
//! the feed; reads take no caller and stay public.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, FromRequest, HttpRequest};

use super::error::{ApiError, Unauthenticated};
use super::AppState;
use crate::config::AdminKey;
use crate::domain::{ApiKey, KeyHash, UserId};

/// Who a request acts as, from its API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The admin key (`ADMIN_API_KEY`): may act as any user, and is not rate limited.
    Admin,
    /// A user's API key: acts as that user only.
    User(UserId),
}

impl Caller {
    /// Checks that this caller may act as `user`.
    ///
    /// # Errors
    /// 403 `forbidden` for another user's key.
    pub fn act_as(self, user: UserId) -> Result<(), ApiError> {
        match self {
            Self::User(me) if me != user => Err(ApiError::Forbidden(format!(
                "this API key acts as user {me}, not as user {user}"
            ))),
            Self::Admin | Self::User(_) => Ok(()),
        }
    }
}

/// Resolves the request's API key (401 without one that counts) and counts a user's write
/// against their rate limit (429), so every handler that takes a `Caller` is an authenticated,
/// rate-limited write.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = app_state(req);
        let presented = presented_key(req.headers());
        Box::pin(async move {
            let caller = authenticate(&state, presented?).await?;
            if let Self::User(user) = caller {
                state.limits.write_as(user)?;
            }
            Ok(caller)
        })
    }
}

/// Proof that a request carries the admin key: what `/api/v1/admin/*` handlers take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin;

/// 401 without a key that counts, 403 with a user's key.
impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = app_state(req);
        let presented = presented_key(req.headers());
        Box::pin(async move {
            match authenticate(&state, presented?).await? {
                Caller::Admin => Ok(Self),
                Caller::User(_) => Err(ApiError::Forbidden(
                    "this endpoint needs the admin API key".to_owned(),
                )),
            }
        })
    }
}

/// A bearer token as presented: its hash, and whether it is shaped like a user's key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Presented {
    hash: KeyHash,
    user_key_shaped: bool,
}

/// The bearer token of `Authorization`, hashed at once so the token itself goes no further.
///
/// # Errors
/// [`Unauthenticated::Missing`] without the header, [`Unauthenticated::Malformed`] when it is not
/// exactly one `Bearer <token>`.
pub(super) fn presented_key(headers: &HeaderMap) -> Result<Presented, Unauthenticated> {
    let mut values = headers.get_all(header::AUTHORIZATION);
    let value = values.next().ok_or(Unauthenticated::Missing)?;
    if values.next().is_some() {
        return Err(Unauthenticated::Malformed);
    }
    let value = value.to_str().map_err(|_| Unauthenticated::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Unauthenticated::Malformed)?;
    let token = token.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(Unauthenticated::Malformed);
    }
    Ok(Presented {
        hash: KeyHash::of(token),
        user_key_shaped: ApiKey::parse(token).is_some(),
    })
}

/// Whether a request carries the admin key (rate limits do not apply to it).
pub(super) fn is_admin(headers: &HeaderMap, admin: Option<&AdminKey>) -> bool {
    match (presented_key(headers), admin) {
        (Ok(presented), Some(admin)) => admin.matches(&presented.hash),
        _ => false,
    }
}

/// The admin key first (compared in constant time), then a user's key by its hash in PostgreSQL.
async fn authenticate(state: &AppState, presented: Presented) -> Result<Caller, ApiError> {
    if state
        .admin_key
        .is_some_and(|admin| admin.matches(&presented.hash))
    {
        return Ok(Caller::Admin);
    }
    if !presented.user_key_shaped {
        return Err(ApiError::Unauthenticated(Unauthenticated::UnknownKey));
    }
    match state.feed.api_key_owner(&presented.hash).await? {
        Some(user) => Ok(Caller::User(user)),
        None => Err(ApiError::Unauthenticated(Unauthenticated::UnknownKey)),
    }
}

fn app_state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .expect("startup registers AppState on the app")
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn only_one_bearer_token_is_a_credential() {
        let key = ApiKey::generate();
        let cases = [
            ("no header", vec![], Unauthenticated::Missing),
            (
                "basic",
                vec!["Basic dXNlcjpwYXNz"],
                Unauthenticated::Malformed,
            ),
            ("scheme only", vec!["Bearer"], Unauthenticated::Malformed),
            ("empty token", vec!["Bearer "], Unauthenticated::Malformed),
            ("two tokens", vec!["Bearer a b"], Unauthenticated::Malformed),
            (
                "two headers",
                vec!["Bearer a", "Bearer b"],
                Unauthenticated::Malformed,
            ),
        ];
        for (what, values, why) in cases {
            let refused = presented_key(&headers(&values)).expect_err(what);
            assert_eq!(refused, why, "{what}");
        }
        let bearer = format!("bearer {}", key.expose());
        let presented =
            presented_key(&headers(&[&bearer])).expect("the scheme is case-insensitive");
        assert!(presented.user_key_shaped);
        assert!(presented.hash.matches(&key.hash()));
    }

    #[test]
    fn a_user_key_acts_as_its_user_only_and_the_admin_key_as_anyone() {
        let me = UserId::from_trusted(1);
        let other = UserId::from_trusted(2);
        assert!(Caller::User(me).act_as(me).is_ok());
        let refused = Caller::User(me).act_as(other).expect_err("another user");
        assert_eq!(refused.code(), "forbidden");
        assert!(Caller::Admin.act_as(other).is_ok());
    }
}
