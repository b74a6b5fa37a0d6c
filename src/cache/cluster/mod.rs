//! A Redis Cluster connection that a request can never wait on for long.
//!
//! The `redis` crate's cluster client has no response timeout by default, retries for seconds, never
//! refreshes its topology after a timeout and splits a cross-slot `MGET` per slot (see
//! `docs/ARCHITECTURE.md`). This wrapper fixes each of those for the service:
//!
//! - every call has a time budget; past it the call is a miss, and PostgreSQL serves the request;
//! - multi-key reads and writes are grouped by the primary that owns each key, one pipeline per node,
//!   all nodes at once; a group that meets `MOVED`/`ASK` (stale slot map) falls back to per-key
//!   commands, which also refreshes the map;
//! - after a run of consecutive failures on one node the connection is rebuilt in the background, which reloads
//!   the topology (failover behind a hung master); while none exists, calls fail at once;
//! - after a few consecutive timeouts on one node its circuit breaker opens, and calls to that node
//!   fail at once (a miss) until one probe call finds it answering again.
//!
//! This file holds the connection and its single-slot calls; the rest is one concern a file:
//! `budget.rs` (time budgets, failure streaks, rebuilds), `breaker.rs` (per-node circuit
//! breakers), `workers.rs` (per-worker connections),
//! `batches.rs` (node-grouped pipelines), `watch.rs` (the slot map and its watch) and `admin.rs`
//! (shards, probes of the primaries, publish).

mod admin;
mod batches;
mod breaker;
mod budget;
mod watch;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::ClusterTopology;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{ErrorKind, FromRedisValue, RedisError, ServerErrorKind};

use super::error::CacheError;
use super::keys::slot;
use super::options::CacheOptions;
use crate::metrics::{zero_series, Metrics};
use crate::tasks::Tasks;

use breaker::{Breakers, Policy};
use watch::TopologyTap;
pub use workers::drive_connections_on_this_thread;

/// Shortest pause between two rebuilds of the connection.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_secs(1);

/// The failure-streak and error label of cross-slot `MGET`s, which span every node.
const CROSS_SLOT: &str = "cross-slot";

/// The service's handle on the Redis Cluster; cheap to clone.
#[derive(Clone)]
pub struct ClusterCache {
    inner: Arc<Inner>,
}

struct Inner {
    client: ClusterClient,
    connection: RwLock<Option<ClusterConnection>>,
    topology: Arc<RwLock<Option<ClusterTopology>>>,
    timeout: Duration,
    connect_timeout: Duration,
    rebuild_after: u32,
    /// Consecutive failed calls per node. Per node, so that a hung master is noticed even while
    /// the healthy ones keep answering the same pages' other keys.
    failure_streaks: Mutex<HashMap<String, u32>>,
    /// Each known node's circuit breaker; shared with the topology tap, which adds the nodes.
    breakers: Arc<Breakers>,
    rebuilding: AtomicBool,
    last_rebuild: Mutex<Option<Instant>>,
    runtime: tokio::runtime::Handle,
    /// Where the topology check, the rebuilds and the workers' connection openings run.
    tasks: Tasks,
    metrics: Arc<Metrics>,
    /// `REDIS_CONNECTION_PER_WORKER`: each HTTP worker thread that asks for it gets a connection
    /// of its own, driven on that thread.
    per_worker: bool,
    /// Bumped whenever the shared connection is replaced: the workers' connections of an older
    /// generation are replaced too.
    generation: AtomicU64,
}

/// One shard as the client last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// The master, `host:port`.
    pub master: String,
    /// Its slot ranges, first and last slot included.
    pub slots: Vec<(u16, u16)>,
    /// Its replicas, `host:port`.
    pub replicas: Vec<String>,
}

impl ClusterCache {
    /// Builds the client and tries to connect once within the connect budget. A cluster that is down
    /// is not an error: the service starts, serves from PostgreSQL and keeps reconnecting in the
    /// background. Must be called inside a Tokio runtime, which then drives the reconnections.
    ///
    /// `rediss://` seeds connect with TLS (rustls), verifying the nodes against `REDIS_CA_CERT`
    /// when set, else the system's trust store.
    ///
    /// # Errors
    /// A seed URL in `REDIS_URLS` cannot be parsed, or `REDIS_CA_CERT` cannot be read.
    pub async fn connect(
        settings: &CacheOptions,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Result<Self, RedisError> {
        let topology = Arc::new(RwLock::new(None));
        let breakers = Arc::new(Breakers::new(Policy {
            after_failures: settings.breaker_after_failures,
            open_for: settings.breaker_open,
            // The probe is cut at the call budget; past twice that its caller was dropped (a
            // cancelled request) and another call may probe.
            probe_budget: settings.redis_timeout * 2,
        }));
        let seeds: Vec<&str> = settings
            .redis_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .collect();
        let mut builder = ClusterClient::builder(seeds);
        if let Some(path) = &settings.redis_ca_cert {
            let root_cert = std::fs::read(path).map_err(|error| {
                RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "REDIS_CA_CERT cannot be read",
                    format!("{}: {error}", path.display()),
                ))
            })?;
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            });
        }
        let client = builder
            .connection_timeout(settings.redis_connect_timeout)
            .response_timeout(settings.redis_timeout)
            .overall_response_timeout(Some(settings.redis_timeout))
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(50)
            .read_routing_strategy(TopologyTap {
                topology: Arc::clone(&topology),
                metrics: Arc::clone(&metrics),
                breakers: Arc::clone(&breakers),
            })
            .build()?;
        zero_series(&metrics.cache_errors, CacheError::KINDS);
        // Calls routed by slot before the topology is known, and cross-slot MGETs, carry these.
        zero_series(&metrics.redis_errors, ["unknown", CROSS_SLOT]);
        let cache = Self {
            inner: Arc::new(Inner {
                client,
                connection: RwLock::new(None),
                topology,
                timeout: settings.redis_timeout,
                connect_timeout: settings.redis_connect_timeout,
                rebuild_after: settings.rebuild_after_errors,
                failure_streaks: Mutex::new(HashMap::new()),
                breakers,
                rebuilding: AtomicBool::new(false),
                last_rebuild: Mutex::new(None),
                runtime: tokio::runtime::Handle::current(),
                tasks: tasks.clone(),
                metrics,
                per_worker: settings.connection_per_worker,
                generation: AtomicU64::new(0),
            }),
        };
        match cache.inner.open().await {
            Ok(connection) => cache.inner.install(connection),
            Err(error) => {
                tracing::warn!(%error, "Redis Cluster unreachable at start; serving from PostgreSQL until it answers");
                cache.spawn_rebuild();
            }
        }
        cache.spawn_topology_check();
        Ok(cache)
    }

    /// Runs a pipeline whose keys all share one slot (the client routes it); `T` is the replies.
    ///
    /// # Errors
    /// Any [`CacheError`]; it has been counted and logged already.
    pub async fn single_slot<T: FromRedisValue>(
        &self,
        first_key: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, CacheError> {
        let mut connection = self.connection_or_record().ok_or(CacheError::Unavailable)?;
        let label = self.node_label(first_key);
        self.guarded(&label, pipe.len().max(1), pipe.query_async(&mut connection))
            .await
    }

    /// Runs a Lua script whose keys share one slot (routed by its first key).
    ///
    /// # Errors
    /// Any [`CacheError`]; it has been counted and logged already.
    pub async fn script<T: FromRedisValue>(
        &self,
        first_key: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, CacheError> {
        let mut connection = self.connection_or_record().ok_or(CacheError::Unavailable)?;
        let label = self.node_label(first_key);
        self.guarded(&label, 1, invocation.invoke_async(&mut connection))
            .await
    }
}

impl Inner {
    async fn open(&self) -> Result<ClusterConnection, CacheError> {
        // `get_async_connection` can hang (redis-rs #1953): bound it.
        let budget = self.connect_timeout * 2;
        match tokio::time::timeout(budget, self.client.get_async_connection()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(CacheError::Redis(error)),
            Err(_) => Err(CacheError::Timeout),
        }
    }

    fn install(&self, connection: ClusterConnection) {
        *self
            .connection
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection);
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.failure_streaks).clear();
    }
}

/// The route that sends a pipeline to the primary owning `key`'s slot.
fn route_for(key: &str) -> SingleNodeRoutingInfo {
    let slot = Slot::new(slot(key.as_bytes())).expect("slot() is always below 16384");
    SingleNodeRoutingInfo::SpecificNode(Route::with_slot(slot, SlotAddr::Master))
}

fn is_redirect(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::CrossSlot
        )
    )
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
