//! Integration tests: the real app on port 0, a real PostgreSQL (one fresh database per test) and the
//! real Redis Cluster (one fresh key prefix per test). `scripts/stack.sh up` provides both.

mod auth;
mod breaker;
mod cache;
mod cursors;
mod dashboard;
mod deadlines;
mod edits;
mod errors;
mod failover;
mod follows;
mod health;
mod helpers;
mod home_feed;
mod idempotency;
mod layering;
mod live_view;
mod loadgen;
mod local_tier;
mod metrics;
mod openapi;
mod outage;
mod postgres;
mod rate_limits;
mod resilience;
mod shutdown;
mod tls;
