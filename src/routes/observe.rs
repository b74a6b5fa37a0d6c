//! The request middleware: request id, span, access log, HTTP metrics by route pattern.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument as _;

use super::AppState;

/// Header carrying the request id, accepted from the client when sane and always returned.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps every request in a span carrying its id, records HTTP metrics by route pattern, logs one
/// line per request and echoes the id in `X-Request-Id`.
///
/// # Errors
/// Whatever the inner service returns.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method,
        path = logged_path(req.path()),
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();

    let mut res = next.call(req).instrument(span.clone()).await?;

    let elapsed = started.elapsed();
    let status = res.status();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    if let Some(state) = state {
        let labels = [method, route.as_str(), status.as_str()];
        state.metrics.http_requests.with_label_values(&labels).inc();
        state
            .metrics
            .http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            route,
            latency_ms = elapsed.as_secs_f64() * 1e3,
            cache = res.headers().get("x-cache").and_then(|v| v.to_str().ok()),
            "request served"
        );
    });
    Ok(res)
}

/// Longest request path written to a log line; longer ones are cut (a client chooses the path).
const MAX_LOGGED_PATH: usize = 256;

/// The `method` label: the methods HTTP defines, every other token a client makes up as `other`,
/// so made-up methods cannot add series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// `path` cut to [`MAX_LOGGED_PATH`] bytes (on a character boundary), marked when cut.
fn logged_path(path: &str) -> String {
    if path.len() <= MAX_LOGGED_PATH {
        return path.to_owned();
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &path[..end], path.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let brew = Method::from_bytes(b"BREW").expect("a token");
        assert_eq!(method_label(&brew), "other");
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(logged_path("/ping"), "/ping");
        let long = format!("/{}", "é".repeat(300));
        let logged = logged_path(&long);
        assert!(logged.len() < MAX_LOGGED_PATH + 20, "{logged}");
        assert!(logged.ends_with("...(601 bytes)"), "{logged}");
    }
}
