//! loadgen: skewed HTTP load against hotfeed's feed endpoint, and a report of what it did to the
//! service.
//!
//! Each request reads `GET /api/v1/users/{user}/posts?limit=&offset=`: the user is drawn from a Zipf
//! distribution (rank r is user id r, so user 1 is the hottest, as `datagen` seeds them), the offset
//! from a weighted page mix. Load is either open-loop at a fixed rate, with latency measured from
//! each request's intended send time (no coordinated omission), or closed-loop with N workers. The
//! report adds what the service's `/metrics` moved by during the measured phase: PostgreSQL queries
//! per page and Redis commands per node, so the hot node shows.

pub mod cli;
pub mod mix;
pub mod record;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod scrape;

pub use cli::{Args, Load, Plan};
pub use report::Report;
pub use runner::run;
