//! What the cache is built with, as plain values: `config.rs` parses the environment into its
//! `CacheSettings`, and the composition root (`startup.rs`) translates them into these, so the
//! cache never depends on how the service is configured.

use std::path::PathBuf;
use std::time::Duration;

/// How a page's post objects are read from the cluster (`CACHE_FETCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// One `GET` per post, one pipeline per node: post keys carry no hash tag.
    Get,
    /// Post keys carry one of a fixed number of hash tags, and each node's pipeline carries one
    /// `MGET` per bucket.
    BucketMget,
    /// One cross-slot `MGET` of every post key, which the client splits per slot.
    Mget,
}

/// Everything [`Cache::connect`](super::Cache::connect) needs to know.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// `false` serves every read from PostgreSQL (`CACHE=off`).
    pub enabled: bool,
    /// The cluster's seed nodes.
    pub redis_urls: Vec<String>,
    /// The certificate authority of `rediss://` nodes with a private CA.
    pub redis_ca_cert: Option<PathBuf>,
    /// Budget of one Redis round trip.
    pub redis_timeout: Duration,
    /// Budget of one connection attempt.
    pub redis_connect_timeout: Duration,
    /// Each HTTP worker thread drives its own cluster connection.
    pub connection_per_worker: bool,
    /// Consecutive failed calls after which the cluster connection is rebuilt.
    pub rebuild_after_errors: u32,
    /// Consecutive unreachable calls (timeouts, connection failures) to one node that open its
    /// circuit breaker; 0 switches the breakers off.
    pub breaker_after_failures: u32,
    /// Shortest time an open breaker fails calls at once before one probe call may go through.
    pub breaker_open: Duration,
    /// Lifetime of a cached page of post ids, in seconds.
    pub list_ttl_secs: u64,
    /// Lifetime of a cached object, in seconds.
    pub object_ttl_secs: u64,
    /// Entries kept in each inbox and outbox.
    pub box_cap: u32,
    /// Lifetime of an inbox or outbox from its build, in seconds.
    pub box_ttl_secs: u64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// How a page's posts are read.
    pub fetch: Fetch,
    /// Hash-tag buckets of the post keys under [`Fetch::BucketMget`].
    pub object_buckets: u16,
    /// Window of the probabilistic early refresh of a page; zero switches it off.
    pub early_refresh: Duration,
    /// The in-process tier in front of Redis.
    pub l1: bool,
    /// Longest an in-process entry lives.
    pub l1_ttl: Duration,
    /// Most bytes the in-process tier holds.
    pub l1_max_bytes: u64,
    /// Reads of a key within the hot-key window before the in-process tier admits it.
    pub l1_admit_reads: u64,
    /// Interval and budget of the invalidation channel's pings.
    pub l1_ping: Duration,
    /// The hot-key detection's window.
    pub hot_window: Duration,
    /// Hottest keys, users and slots the detection reports.
    pub hot_top_k: usize,
}

impl CacheOptions {
    /// The post key buckets, when the fetch strategy uses them.
    pub fn post_buckets(&self) -> Option<u16> {
        (self.fetch == Fetch::BucketMget).then_some(self.object_buckets)
    }
}
