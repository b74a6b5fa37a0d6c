//! hotfeed: social-media feeds served from a Redis Cluster in front of PostgreSQL.
//!
//! Data flows one way: `routes` -> `feed` -> (`cache`, `store`) -> (`metrics`, `config`,
//! `domain`). `startup` wires every layer together; nothing below `routes` names actix-web;
//! `cache` and `store` never import each other. [`LAYERS`] says which module may import which,
//! and `tests/api/layering.rs` reads every `crate::` path of `src/` and fails on one it does not
//! allow. If a change needs an upward import, the design is asking to be changed: change it. See
//! `docs/ARCHITECTURE.md`.

pub mod cache;
pub mod config;
pub mod domain;
pub mod feed;
pub mod hot;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod stats;
pub mod store;
pub mod tasks;
pub mod telemetry;

/// The layering as data: each module of the crate, top to bottom, and the modules it may import.
/// A module may always import its own submodules.
#[rustfmt::skip]
pub const LAYERS: &[(&str, &[&str])] = &[
    // The composition root: builds every layer and hands each what it needs.
    ("startup", &["routes", "stats", "telemetry", "feed", "limits", "cache", "store", "metrics",
                  "tasks", "config", "domain"]),
    // Everything that names actix-web.
    ("routes", &["stats", "feed", "limits", "metrics", "config", "domain"]),
    // The live view's snapshot, sampled from the feed.
    ("stats", &["feed", "metrics", "tasks", "domain"]),
    // Decides between cache and database.
    ("feed", &["cache", "store", "metrics", "tasks", "domain"]),
    // Rate limiters (the HTTP side of them is routes/limits.rs).
    ("limits", &["config", "metrics", "tasks", "domain"]),
    // Best effort; its settings come as plain values, so it does not import `config`.
    ("cache", &["hot", "metrics", "tasks", "domain"]),
    // PostgreSQL.
    ("store", &["config", "metrics", "tasks", "domain"]),
    // Logging set-up.
    ("telemetry", &["config"]),
    ("metrics", &["domain"]),
    // Top-k counting with a sliding window.
    ("hot", &[]),
    // Every background task, owned and joined at shutdown.
    ("tasks", &[]),
    // A leaf: the typed settings, in domain types.
    ("config", &["domain"]),
    ("domain", &[]),
];
