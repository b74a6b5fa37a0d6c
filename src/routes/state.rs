//! The application state every handler shares, apart from the router that mounts the handlers.

use std::sync::Arc;

use super::observe::AccessLogPolicy;
use crate::config::AdminKey;
use crate::domain::PageLimits;
use crate::feed::Feed;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::stats::Stats;

use super::Drain;

/// What every handler shares.
pub struct AppState {
    pub feed: Feed,
    pub metrics: Arc<Metrics>,
    pub page_limits: PageLimits,
    /// `ADMIN_API_KEY`, if set (held as a hash).
    pub admin_key: Option<AdminKey>,
    pub limits: Arc<RateLimits>,
    /// Whether the client address comes from `X-Forwarded-For` (`TRUST_FORWARDED_FOR`).
    pub trust_forwarded_for: bool,
    /// The live view's latest numbers.
    pub stats: Arc<Stats>,
    /// Which requests get a log line (`ACCESS_LOG`, `LOG_SLOW_REQUEST_MS`).
    pub access_log: AccessLogPolicy,
    /// Set when a stop begins: readiness then fails and responses close their connections.
    pub drain: Arc<Drain>,
}
