//! The per-address rate limits of `/api/v1`: reads and writes counted by client address before
//! any handler runs (a wrong key is a write too, so guessing keys is limited). `/metrics`,
//! `/health` and `/ping` are outside the scope and never limited.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, ResponseError as _};

use super::auth;
use super::error::ApiError;
use super::AppState;

/// Refuses a request over its address's read or write limit with 429; the admin key passes.
///
/// # Errors
/// Whatever the inner service returns.
pub async fn limit_by_address<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .expect("startup registers AppState on the app");
    if !auth::is_admin(req.headers(), state.admin_key.as_ref()) {
        let address = client_address(req.request(), state.trust_forwarded_for);
        let counted = if is_read(req.method()) {
            state.limits.read_from(address)
        } else {
            state.limits.write_from(address)
        };
        if let Err(throttled) = counted {
            // A response, not an error, so the access log and the HTTP metrics see the 429.
            let response = ApiError::from(throttled).error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The client's address: the peer of the connection, or, with `TRUST_FORWARDED_FOR`, the last
/// `X-Forwarded-For` entry (the one the proxy in front of us added; earlier ones are the client's
/// say). A request with neither counts as `0.0.0.0`.
fn client_address(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            req.headers()
                .get_all("x-forwarded-for")
                .last()
                .and_then(|value| value.to_str().ok())
                .and_then(|list| list.rsplit(',').next())
                .and_then(|last| last.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    forwarded
        .or_else(|| req.peer_addr().map(|peer| peer.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn a_forwarded_address_counts_only_when_trusted_and_only_the_last_one() {
        let peer = "192.0.2.1:5555".parse().expect("a socket address");
        let cases = [
            ("not trusted", false, Some("198.51.100.7"), "192.0.2.1"),
            ("no header", true, None, "192.0.2.1"),
            ("one entry", true, Some("198.51.100.7"), "198.51.100.7"),
            (
                "the proxy's entry is the last",
                true,
                Some("6.6.6.6, 198.51.100.7"),
                "198.51.100.7",
            ),
            ("IPv6", true, Some("2001:db8::1"), "2001:db8::1"),
            (
                "garbage falls back to the peer",
                true,
                Some("unknown"),
                "192.0.2.1",
            ),
        ];
        for (what, trusted, header, expected) in cases {
            let mut req = TestRequest::default().peer_addr(peer);
            if let Some(header) = header {
                req = req.insert_header(("x-forwarded-for", header));
            }
            let address = client_address(&req.to_http_request(), trusted);
            assert_eq!(address.to_string(), expected, "{what}");
        }
    }
}
