//! datagen: seeds hotfeed's PostgreSQL with users and Zipf-skewed posts at COPY speed, in one
//! transaction, then flushes the service's cache. See `docs/datagen.md`.

pub mod cache;
pub mod cli;
pub mod generate;
pub mod load;
pub mod progress;
pub mod report;
pub mod seed;
