//! Deadlines a client cannot stretch: on reading the request body, and on the whole request.
//!
//! actix-web bounds the request head (`HTTP_HEAD_TIMEOUT_MS`, its client request timeout) but not
//! the body, so a client announcing a body and sending a byte now and then would hold its
//! connection, and whatever the handler took, for ever. Here the body is a stream that fails at
//! `HTTP_BODY_TIMEOUT_MS` after the request began (answered 408 `body_timeout`), and the whole
//! request, body and handler, is bounded by `HTTP_REQUEST_TIMEOUT_MS` (503 `timeout`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage as _;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::error::{error_body, RETRY_AFTER_SECS};

/// The deadlines of every request.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From the start of the request to the last byte of its body.
    pub body: Duration,
    /// From the start of the request to its response.
    pub request: Duration,
}

/// What a body read fails with at the body deadline; [`json_error`](super::error::json_error) answers 408.
pub fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(io) if io.kind() == io::ErrorKind::TimedOut)
}

/// Middleware: the body stream fails at the body deadline, and a request still unanswered at the
/// request deadline is answered 503 `timeout` (its handler is dropped, and with it any statement
/// in flight, which PostgreSQL rolls back).
///
/// # Errors
/// Whatever the inner service returns.
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(deadlines) = req.app_data::<web::Data<Deadlines>>().map(|d| *d.get_ref()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let started = Instant::now();
    let body = DeadlineBody {
        inner: req.take_payload(),
        deadline: Box::pin(tokio::time::sleep_until(started + deadlines.body)),
    };
    req.set_payload(Payload::from(
        Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
    ));
    let http = req.request().clone();
    match tokio::time::timeout_at(started + deadlines.request, next.call(req)).await {
        Ok(response) => response.map(ServiceResponse::map_into_left_body),
        Err(_) => {
            let mut response = error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request did not complete within HTTP_REQUEST_TIMEOUT_MS; try again later",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            Ok(ServiceResponse::new(http, response).map_into_right_body())
        }
    }
}

/// A request body that fails with `TimedOut` once its deadline passes.
struct DeadlineBody {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body did not arrive within HTTP_BODY_TIMEOUT_MS",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}
