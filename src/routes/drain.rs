//! The HTTP side of a graceful stop: while the instance drains, readiness fails (`/health`, in
//! health.rs) and every response closes its connection, so a load balancer stops sending new
//! requests and its pooled keep-alive connections end after their current request instead of
//! being cut by the listener's close.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web;

use super::AppState;

/// Whether the instance is draining: set once by the composition root when a stop begins.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
}

impl Drain {
    /// Starts the drain; it never ends (the process stops after it).
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Answers every request as usual, and once the drain has begun marks the response
/// `Connection: close`, so the client (or the balancer's pool) opens its next connection
/// elsewhere.
///
/// # Errors
/// Whatever the inner service returns.
pub async fn close_when_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = next.call(req).await?;
    if state.is_some_and(|state| state.drain.is_draining()) {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}
