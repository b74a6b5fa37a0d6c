//! loadgen: skewed HTTP load against hotfeed's listings, and a report of what it did to the service.
//!
//! Each read is `GET /api/v1/users/{user}/posts?limit=&offset=` or a walk down
//! `GET /api/v1/users/{user}/feed?limit=&cursor=`: the user is drawn from a Zipf distribution (rank
//! r is user id r, so user 1 is the hottest, as `datagen` seeds them), the offset or the walk's
//! depth from a weighted mix. Load is either open-loop at a fixed rate, with latency measured from
//! each request's intended send time (no coordinated omission), or closed-loop with N workers;
//! posts by Zipf-drawn authors can be written beside it on a schedule of their own. The report adds
//! what the service's `/metrics` moved by during the measured phase: PostgreSQL queries per page,
//! Redis commands per node (so the hot node shows), and the home feed's sources, celebrity pulls and
//! fan-out size and lag. It also measures its own CPU and says when it, not the service, set the
//! rate.

pub mod cli;
pub mod client;
pub mod mix;
pub mod outbox;
pub mod record;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod scrape;

pub use cli::{Args, Load, Plan};
pub use report::Report;
pub use runner::run;
