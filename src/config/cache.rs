//! The cache's part of the settings: the Redis Cluster, the in-process tier, the hot-key
//! detection. `startup.rs` turns them into the cache's own `CacheOptions`.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::Switch;

/// Seed nodes of the local stack's Redis Cluster.
pub const DEFAULT_REDIS_URLS: &str =
    "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";
/// Prefix of every Redis key of a deployment, unless configured.
pub const DEFAULT_KEY_PREFIX: &str = "hf";
/// Whether the Redis Cluster cache is used at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheMode {
    /// Read through the Redis Cluster (the normal mode).
    On,
    /// Serve every read from PostgreSQL; used to measure the uncached path.
    Off,
}

/// How a page's post objects are read from the cluster (`CACHE_FETCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheFetch {
    /// One `GET` per post, one pipeline per node: post keys carry no hash tag and spread over
    /// every slot.
    Get,
    /// Post keys carry one of `CACHE_OBJECT_BUCKETS` hash tags (`{b<n>.<k>}`, spread evenly over
    /// the slots), and each node's pipeline carries one `MGET` per bucket.
    BucketMget,
    /// The reference demo's one cross-slot `MGET` of every post key, which the client splits per
    /// slot (one `MGET` per post); untagged keys, as `get`.
    Mget,
}

/// Redis Cluster cache settings.
#[derive(Debug, Clone, Args)]
pub struct CacheSettings {
    /// Use the Redis Cluster cache (`off` serves everything from PostgreSQL).
    #[arg(long = "cache", env = "CACHE", value_enum, default_value_t = CacheMode::On)]
    pub mode: CacheMode,

    /// Comma-separated Redis Cluster seed nodes.
    #[arg(
        long,
        env = "REDIS_URLS",
        value_delimiter = ',',
        default_value = DEFAULT_REDIS_URLS
    )]
    pub redis_urls: Vec<String>,

    /// PEM file of the certificate authority that signed the nodes' certificates, for `rediss://`
    /// seeds with a private CA (default: the system's trust store).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,

    /// Time budget of one Redis round trip, in milliseconds; past it the read is a miss served by PostgreSQL.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// Time budget to connect to a Redis node, in milliseconds.
    #[arg(long, env = "REDIS_CONNECT_TIMEOUT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_connect_timeout_ms: u64,

    /// Each HTTP worker thread opens and drives its own cluster connection, so a request's Redis
    /// round trips stay on its thread (off: every worker shares one connection, driven by a task
    /// of the main runtime, and each round trip hops between threads twice).
    #[arg(long, env = "REDIS_CONNECTION_PER_WORKER", value_enum, default_value_t = Switch::On)]
    pub redis_connection_per_worker: Switch,

    /// Consecutive failed Redis calls after which the cluster connection is rebuilt (topology refreshed).
    #[arg(long, env = "REDIS_REBUILD_AFTER_ERRORS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub redis_rebuild_after_errors: u32,

    /// Consecutive timeouts or connection failures of one Redis node after which its circuit
    /// breaker opens (at once on a timeout while the node answered nothing since that call was
    /// sent: it hangs): calls to that node then fail at once (a miss, served from PostgreSQL) until
    /// one probe call finds it answering. 0 switches the breakers off.
    #[arg(long, env = "REDIS_BREAKER_AFTER_FAILURES", default_value_t = 3)]
    pub redis_breaker_after_failures: u32,

    /// How long an open breaker fails calls to its node at once before one probe call decides, in
    /// milliseconds; up to half as much again is added at random, so instances probe apart.
    #[arg(long, env = "REDIS_BREAKER_OPEN_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub redis_breaker_open_ms: u64,

    /// Lifetime of a cached page of post IDs, in seconds; also bounds staleness after a lost invalidation.
    #[arg(long = "cache-list-ttl-secs", env = "CACHE_LIST_TTL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub list_ttl_secs: u64,

    /// Lifetime of a cached post or user object, in seconds.
    #[arg(long = "cache-object-ttl-secs", env = "CACHE_OBJECT_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub object_ttl_secs: u64,

    /// Entries kept in each home-feed inbox and author outbox; deeper pages are read from
    /// PostgreSQL. At most 127, so a box never leaves Redis's compact listpack encoding (128
    /// entries by default), even with the one entry an append adds before trimming.
    #[arg(long, env = "FEED_BOX_CAP", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub feed_box_cap: u32,

    /// Lifetime of an inbox or outbox from its build, in seconds (never extended): bounds how long
    /// a fan-out lost to a failover or a failed node can be missing from a feed.
    #[arg(long, env = "FEED_BOX_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_box_ttl_secs: u64,

    /// Prefix of every Redis key this service writes, so several deployments can share a cluster.
    #[arg(
        long = "cache-key-prefix",
        env = "CACHE_KEY_PREFIX",
        default_value = DEFAULT_KEY_PREFIX,
        value_parser = parse_key_prefix
    )]
    pub key_prefix: String,

    /// How a page's posts are read from Redis: `get`, `bucket-mget` or `mget` (docs/CONFIGURATION.md
    /// compares them). `bucket-mget` uses keys of its own: every instance of a deployment must use
    /// the same strategy.
    #[arg(long = "cache-fetch", env = "CACHE_FETCH", value_enum, default_value_t = CacheFetch::BucketMget)]
    pub fetch: CacheFetch,

    /// Hash-tag buckets of the post keys under `CACHE_FETCH=bucket-mget`: a page's posts cost at
    /// most this many `MGET`s; more buckets spread the posts more evenly over the masters.
    #[arg(long = "cache-object-buckets", env = "CACHE_OBJECT_BUCKETS", default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub object_buckets: u16,

    /// Refresh a cached page in the background shortly before its pages hash expires, so a hot
    /// page never misses (probabilistic early expiration): a read that finds `t` ms left
    /// refreshes with probability exp(-t / this). 0 switches it off.
    #[arg(long, env = "CACHE_EARLY_REFRESH_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub early_refresh_ms: u64,

    /// The in-process tier (L1) in front of Redis for the hottest pages, posts and outboxes,
    /// kept correct across instances by the invalidation channel.
    #[arg(long = "l1", env = "L1", value_enum, default_value_t = Switch::On)]
    pub l1: Switch,

    /// Longest an in-process entry lives, in milliseconds: the staleness bound should an
    /// invalidation message be lost (a publish that failed twice). Writes reach every instance
    /// through the channel long before it; what it sets in normal operation is how often each
    /// entry is read from Redis again, which on a mix of hundreds of hot pages is most of what
    /// the tier costs (docs/benchmarks.md, comparison 14).
    #[arg(long, env = "L1_TTL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub l1_ttl_ms: u64,

    /// Most bytes the in-process tier holds (values plus a fixed cost per entry).
    #[arg(long, env = "L1_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub l1_max_bytes: u64,

    /// Reads of a key within the hot-key window before the in-process tier admits it.
    #[arg(long, env = "L1_ADMIT_READS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub l1_admit_reads: u64,

    /// How often the invalidation channel is pinged, in milliseconds; an unanswered ping takes
    /// the in-process tier off until the channel is back.
    #[arg(long, env = "L1_PING_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub l1_ping_ms: u64,

    /// Length of the sliding window of the hot-key detection, in seconds.
    #[arg(long, env = "HOT_WINDOW_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hot_window_secs: u64,

    /// Hottest keys, users and slots the hot-key detection reports.
    #[arg(long, env = "HOT_TOP_K", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub hot_top_k: u64,
}

impl CacheSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.mode == CacheMode::On && self.redis_urls.iter().all(|u| u.trim().is_empty()) {
            return Err("REDIS_URLS must name at least one cluster node when CACHE=on".into());
        }
        Ok(())
    }

    /// Budget of one Redis round trip.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Budget of one connection attempt.
    pub fn redis_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_connect_timeout_ms)
    }

    /// Longest an in-process entry lives.
    pub fn l1_ttl(&self) -> Duration {
        Duration::from_millis(self.l1_ttl_ms)
    }

    /// Interval and budget of the invalidation channel's pings.
    pub fn l1_ping(&self) -> Duration {
        Duration::from_millis(self.l1_ping_ms)
    }

    /// The hot-key detection's window.
    pub fn hot_window(&self) -> Duration {
        Duration::from_secs(self.hot_window_secs)
    }
}

/// Parses a `CACHE_KEY_PREFIX`: non-empty, `[A-Za-z0-9_.:-]` only, so it can neither carry a
/// `{hash tag}` nor a glob character into `SCAN MATCH <prefix>:*`.
///
/// # Errors
/// A one-line reason naming the accepted alphabet.
pub fn parse_key_prefix(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "the key prefix {raw:?} must be non-empty and use only [A-Za-z0-9_.:-]"
        ))
    }
}
