//! datagen against the real PostgreSQL and Redis Cluster: one database per test, small sizes.

mod atomicity;
mod cache;
mod cli;
mod data;
mod follows;
mod helpers;
mod schema;
