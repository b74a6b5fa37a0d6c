//! The request middleware: request id, span, access log, HTTP metrics by route pattern.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::{Instrument as _, Level};

use super::AppState;
use crate::config::AccessLog;

/// Header carrying the request id, accepted from the client when sane and always returned.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which requests the access log writes a line for, and what counts as slow.
#[derive(Debug, Clone, Copy)]
pub struct AccessLogPolicy {
    pub which: AccessLog,
    pub slow: Duration,
}

impl AccessLogPolicy {
    /// Whether a request that ended with `status` after `elapsed` gets an info (or warn) line.
    fn logs(self, status: StatusCode, elapsed: Duration) -> bool {
        self.which == AccessLog::All || status.is_server_error() || elapsed >= self.slow
    }
}

/// Wraps every request in a span carrying its id, records HTTP metrics by route pattern, logs
/// the requests the [`AccessLogPolicy`] names and echoes the id in `X-Request-Id`.
///
/// The common case, a fast 2xx, is kept cheap: its id is a counter (no random number per
/// request), its span fields are formatted without allocating, and it is logged at `debug`, which
/// the default filter drops before anything is formatted. One line per request, formatted and
/// written under stderr's lock, cost more than serving a page from the in-process tier
/// (docs/benchmarks.md, comparison 14).
///
/// # Errors
/// Whatever the inner service returns.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = RequestId::of(&req);
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = request_id.as_str(),
        method,
        path = %LoggedPath(req.path()),
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();

    let mut res = next.call(req).instrument(span.clone()).await?;

    let elapsed = started.elapsed();
    let status = res.status();
    let route = res.request().match_pattern();
    let route = route.as_deref().unwrap_or("unmatched");
    let mut policy = None;
    if let Some(state) = state {
        let labels = [method, route, status.as_str()];
        state.metrics.http_requests.with_label_values(&labels).inc();
        state
            .metrics
            .http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        policy = Some(state.access_log);
    }
    res.headers_mut()
        .insert(REQUEST_ID, request_id.into_header());
    let cache = || res.headers().get("x-cache").and_then(|v| v.to_str().ok());
    let latency_ms = elapsed.as_secs_f64() * 1e3;
    let _entered = span.enter();
    // One event, at the level the policy gives (tracing's levels are per call site).
    macro_rules! served {
        ($level:expr) => {
            tracing::event!(
                $level,
                status = status.as_u16(),
                route,
                latency_ms,
                cache = cache(),
                "request served"
            )
        };
    }
    match policy {
        Some(policy) if !policy.logs(status, elapsed) => served!(Level::DEBUG),
        _ if status.is_server_error() => served!(Level::WARN),
        _ => served!(Level::INFO),
    }
    Ok(res)
}

/// A request's id: the client's `X-Request-Id` when it is sane, else one made here.
enum RequestId {
    Client(HeaderValue),
    Made([u8; 32]),
}

/// What makes this process's request ids: a random prefix drawn once, then a counter. Unique
/// across instances as long as their prefixes differ (64 random bits), and far cheaper than a
/// random UUID per request; an id names a request, it is not a secret.
struct IdMaker {
    prefix: u64,
    next: AtomicU64,
}

static IDS: LazyLock<IdMaker> = LazyLock::new(|| IdMaker {
    prefix: rand::random(),
    next: AtomicU64::new(0),
});

impl RequestId {
    fn of(req: &ServiceRequest) -> Self {
        match req.headers().get(&REQUEST_ID) {
            Some(value) if is_sane_id(value.as_bytes()) => Self::Client(value.clone()),
            _ => Self::made(IDS.prefix, IDS.next.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// 32 lowercase hex digits: the prefix, then the counter.
    fn made(prefix: u64, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            let word = if i < 16 { prefix } else { n };
            let shift = 60 - 4 * (i % 16);
            *byte = HEX[((word >> shift) & 0xf) as usize];
        }
        Self::Made(id)
    }

    fn as_str(&self) -> &str {
        match self {
            // Checked by `is_sane_id`: visible ASCII.
            Self::Client(value) => value.to_str().unwrap_or_default(),
            Self::Made(id) => std::str::from_utf8(id).unwrap_or_default(),
        }
    }

    fn into_header(self) -> HeaderValue {
        match self {
            Self::Client(value) => value,
            Self::Made(id) => HeaderValue::from_bytes(&id).expect("hex digits are a header value"),
        }
    }
}

/// A client's id is kept when it is 1 to 64 visible ASCII characters.
fn is_sane_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 64 && id.iter().all(u8::is_ascii_graphic)
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

/// A request path as the log shows it: cut to [`MAX_LOGGED_PATH`] bytes (on a character
/// boundary) and marked when cut; formatted only when a line is written.
struct LoggedPath<'a>(&'a str);

impl fmt::Display for LoggedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.0;
        if path.len() <= MAX_LOGGED_PATH {
            return f.write_str(path);
        }
        let mut end = MAX_LOGGED_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}...({} bytes)", &path[..end], path.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_32_hex_digits_of_prefix_then_counter() {
        let id = RequestId::made(0x0123_4567_89ab_cdef, 42);
        assert_eq!(id.as_str(), "0123456789abcdef000000000000002a");
        assert_eq!(id.into_header(), "0123456789abcdef000000000000002a");
    }

    #[test]
    fn only_sane_client_ids_are_kept() {
        assert!(is_sane_id(b"trace-me-123"));
        assert!(!is_sane_id(b""));
        assert!(!is_sane_id(b"two words"));
        assert!(!is_sane_id(&[b'a'; 65]));
    }

    #[test]
    fn fast_successes_are_not_logged_by_default_but_errors_and_slow_requests_are() {
        let policy = AccessLogPolicy {
            which: AccessLog::ErrorsAndSlow,
            slow: Duration::from_millis(250),
        };
        let fast = Duration::from_millis(1);
        assert!(!policy.logs(StatusCode::OK, fast));
        assert!(!policy.logs(StatusCode::NOT_FOUND, fast));
        assert!(policy.logs(StatusCode::SERVICE_UNAVAILABLE, fast));
        assert!(policy.logs(StatusCode::OK, Duration::from_millis(250)));
        let all = AccessLogPolicy {
            which: AccessLog::All,
            ..policy
        };
        assert!(all.logs(StatusCode::OK, fast));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let brew = Method::from_bytes(b"BREW").expect("a token");
        assert_eq!(method_label(&brew), "other");
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(LoggedPath("/ping").to_string(), "/ping");
        let long = format!("/{}", "é".repeat(300));
        let logged = LoggedPath(&long).to_string();
        assert!(logged.len() < MAX_LOGGED_PATH + 20, "{logged}");
        assert!(logged.ends_with("...(601 bytes)"), "{logged}");
    }
}
