//! hotfeed: social-media feeds served from a Redis Cluster in front of PostgreSQL.
//!
//! Data flows one way: `routes` -> `feed` -> (`cache`, `store`). See `docs/ARCHITECTURE.md`.

pub mod cache;
pub mod config;
pub mod deadlines;
pub mod domain;
pub mod error;
pub mod feed;
pub mod hot;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod stats;
pub mod store;
pub mod telemetry;
