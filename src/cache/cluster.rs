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
//!   the topology (failover behind a hung master); while none exists, calls fail at once.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::ConnectionLike as _;
use redis::cluster::{ClusterClient, NodeAddress};
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::{
    ClusterTopology, ReadCandidates, ReadRoutingStrategy, ReadRoutingStrategyFactory,
};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{ErrorKind, FromRedisValue, RedisError, ServerErrorKind, Value};

use super::keys::slot;
use super::topology::SlotMap;
use super::{CacheError, CacheOptions};
use crate::metrics::{zero_series, Metrics};
use crate::tasks::Tasks;

/// How often the cluster's slot map is compared with the client's: the client refreshes its map
/// only when a command meets `MOVED`, so after a resharding the slots nobody read stay routed (and
/// shown on the dashboard) by the old map until then.
const TOPOLOGY_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Shortest pause between two rebuilds of the connection.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_secs(1);
/// The failure-streak and error label of cross-slot `MGET`s, which span every node.
const CROSS_SLOT: &str = "cross-slot";
/// Longest pause between reconnection attempts while the cluster is unreachable.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

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

/// A worker thread's own connection to one cluster (one [`Inner`]), by state.
enum Local {
    /// Being opened, for this generation.
    Opening(u64),
    /// Open, driven by a task of this thread.
    Open(u64, ClusterConnection),
    /// The last attempt failed at this instant; the next waits [`MIN_REBUILD_INTERVAL`].
    Failed(u64, Instant),
}

thread_local! {
    /// The connections this thread drives, by cluster; `None` on a thread that did not ask for
    /// them (see [`drive_connections_on_this_thread`]).
    static LOCAL: RefCell<Option<HashMap<usize, Local>>> = const { RefCell::new(None) };
}

/// Lets this thread (an HTTP worker: one single-threaded runtime with a `LocalSet`, as actix's)
/// open and drive Redis connections of its own, so that its requests' round trips never hop to
/// the thread that drives the shared connection and back. Call it once on the thread.
pub fn drive_connections_on_this_thread() {
    LOCAL.with_borrow_mut(|locals| {
        locals.get_or_insert_with(HashMap::new);
    });
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

/// Where a group of keys is sent: the primary that owns them, or (topology not yet known) their slot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Node(NodeAddress),
    Slot(u16),
}

impl Target {
    fn label(&self) -> String {
        match self {
            Self::Node(node) => node.to_string(),
            Self::Slot(_) => "unknown".to_owned(),
        }
    }
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

    /// Once a [`TOPOLOGY_CHECK_EVERY`], asks a node for the slot map and rebuilds the connection
    /// (which reloads the client's map) when it routes any slot differently, so a resharding is
    /// followed within about a second whether or not its slots are read. Ends with the cache.
    fn spawn_topology_check(&self) {
        let weak = Arc::downgrade(&self.inner);
        let check = async move {
            let mut ticks = tokio::time::interval(TOPOLOGY_CHECK_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let cache = Self { inner };
                if cache.topology_moved().await {
                    // Counted with the other rebuilds, in `redis_reconnects_total`.
                    tracing::info!("the cluster's slot map changed; reloading it");
                    cache.spawn_rebuild();
                }
            }
        };
        self.inner.tasks.spawn_on(check, &self.inner.runtime);
    }

    /// Whether the cluster's slot map, as a node reports it now, differs from the client's.
    async fn topology_moved(&self) -> bool {
        let Some(mut connection) = read(&self.inner.connection).clone() else {
            return false;
        };
        let shards = self.shards();
        if shards.is_empty() {
            return false;
        }
        let mut known: Vec<(u16, u16, String)> = shards
            .into_iter()
            .flat_map(|shard| {
                let master = shard.master;
                shard
                    .slots
                    .into_iter()
                    .map(move |(start, end)| (start, end, master.clone()))
            })
            .collect();
        known.sort_unstable();
        let reported =
            tokio::time::timeout(self.inner.timeout, SlotMap::read(&mut connection)).await;
        match reported {
            Ok(Ok(map)) => merge_ranges(map.owners()) != merge_ranges(known),
            // A node that does not answer is the failure path's business, not this check's.
            _ => false,
        }
    }

    /// Reads many keys spread over the cluster: one pipeline of `GET`s per owning primary, all
    /// nodes concurrently. A key whose node failed or timed out reads as `None` (a miss), so one bad
    /// shard costs only its own keys.
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let mut values = vec![None; keys.len()];
        let batches = self
            .scatter(keys, |i| {
                let mut get = redis::cmd("GET");
                get.arg(&keys[i]);
                get
            })
            .await;
        for (indexes, result) in batches {
            let Ok(replies) = result else { continue };
            for (i, reply) in indexes.into_iter().zip(replies) {
                match Option::<Vec<u8>>::from_redis_value(reply) {
                    Ok(value) => values[i] = value,
                    Err(error) => self.record_failure(&CacheError::Decode(error.to_string())),
                }
            }
        }
        values
    }

    /// Sends `command(i)` for every key `i` (a write), one pipeline per owning primary. Best
    /// effort: a failed node leaves its keys unwritten, which the next read repairs.
    pub async fn send_many(&self, keys: &[String], command: impl Fn(usize) -> redis::Cmd + Sync) {
        self.scatter(keys, command).await;
    }

    /// Sends `command(i)` for every key `i`, one pipeline per owning primary, and returns each
    /// reply, or `Err` for a key whose node failed or timed out (so a caller can tell a failed
    /// write from a refused one).
    pub async fn query_many(
        &self,
        keys: &[String],
        command: impl Fn(usize) -> redis::Cmd + Sync,
    ) -> Vec<Result<Value, ()>> {
        let mut replies: Vec<Result<Value, ()>> = vec![Err(()); keys.len()];
        if keys.is_empty() {
            return replies;
        }
        for (indexes, result) in self.scatter(keys, command).await {
            let Ok(values) = result else { continue };
            for (i, value) in indexes.into_iter().zip(values) {
                replies[i] = Ok(value);
            }
        }
        replies
    }

    /// Sends `command(i)` for every key `i`, grouped into one pipeline per owning primary, all nodes
    /// concurrently. Returns each group's key indexes with its replies (in the same order) or error.
    async fn scatter(
        &self,
        keys: &[String],
        command: impl Fn(usize) -> redis::Cmd + Sync,
    ) -> Vec<(Vec<usize>, Result<Vec<Value>, CacheError>)> {
        let Some(connection) = self.connection_or_record() else {
            return Vec::new();
        };
        let groups = self.group_by_node(keys);
        self.inner
            .metrics
            .cache_nodes_per_op
            .observe(groups.len() as f64);
        let command = &command;
        let batches = groups.into_iter().map(|(target, indexes)| {
            let connection = connection.clone();
            async move {
                let result = self
                    .node_batch(
                        connection,
                        target,
                        &keys[indexes[0]],
                        indexes.len(),
                        indexes.len(),
                        &|j| command(indexes[j]),
                    )
                    .await;
                (indexes, result)
            }
        });
        join_all(batches).await
    }

    /// Reads many keys with one `MGET` per slot in each owning primary's pipeline, all nodes at
    /// once: for keys that share hash tags (the post buckets), a few commands instead of one per
    /// key. A slot whose node failed or timed out reads as `None`, as in [`ClusterCache::get_many`].
    pub async fn mget_by_slot(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let mut values = vec![None; keys.len()];
        let Some(connection) = self.connection_or_record() else {
            return values;
        };
        // Each key's slot, hashed once: it both picks the node and splits its pipeline.
        let key_slots: Vec<u16> = keys.iter().map(|key| slot(key.as_bytes())).collect();
        let groups = self.group_slots_by_node(&key_slots);
        self.inner
            .metrics
            .cache_nodes_per_op
            .observe(groups.len() as f64);
        let key_slots = &key_slots;
        let batches = groups.into_iter().map(|(target, indexes)| {
            let connection = connection.clone();
            async move {
                let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
                for &i in &indexes {
                    by_slot.entry(key_slots[i]).or_default().push(i);
                }
                let slots: Vec<Vec<usize>> = by_slot.into_values().collect();
                let mget = |j: usize| {
                    let mut mget = redis::cmd("MGET");
                    for &i in &slots[j] {
                        mget.arg(&keys[i]);
                    }
                    mget
                };
                let result = self
                    .node_batch(
                        connection,
                        target,
                        &keys[indexes[0]],
                        indexes.len(),
                        slots.len(),
                        &mget,
                    )
                    .await;
                (slots, result)
            }
        });
        for (slots, result) in join_all(batches).await {
            let Ok(replies) = result else { continue };
            for (group, reply) in slots.into_iter().zip(replies) {
                match Vec::<Option<Vec<u8>>>::from_redis_value(reply) {
                    Ok(found) => {
                        for (i, value) in group.into_iter().zip(found) {
                            values[i] = value;
                        }
                    }
                    Err(error) => self.record_failure(&CacheError::Decode(error.to_string())),
                }
            }
        }
        values
    }

    /// Reads many keys with one cross-slot `MGET`, as the reference demo does: the client splits it
    /// into one `MGET` per slot and merges the replies. Kept to be compared with the other
    /// strategies (`CACHE_FETCH=mget`); the whole read fails, and misses, if any node does.
    pub async fn mget_cross_slot(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        if keys.is_empty() {
            // Redis refuses an `MGET` of no keys.
            return Vec::new();
        }
        let Some(mut connection) = self.connection_or_record() else {
            return vec![None; keys.len()];
        };
        // What the client sends: one command per slot, one request stream per node.
        let groups = self.group_by_node(keys);
        for (target, indexes) in &groups {
            let slots: std::collections::BTreeSet<u16> =
                indexes.iter().map(|&i| slot(keys[i].as_bytes())).collect();
            self.count_round_trip(&target.label(), slots.len());
        }
        let mut mget = redis::cmd("MGET");
        mget.arg(keys);
        let call = async move {
            mget.query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
                .await
        };
        self.guarded(CROSS_SLOT, call)
            .await
            .unwrap_or_else(|_| vec![None; keys.len()])
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
        self.count_round_trip(&label, pipe.len().max(1));
        self.guarded(&label, pipe.query_async(&mut connection))
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
        self.count_round_trip(&label, 1);
        self.guarded(&label, invocation.invoke_async(&mut connection))
            .await
    }

    /// Publishes `payload` on a classic pub/sub channel through a random primary; the cluster
    /// forwards it to every node, so each subscriber hears it whichever node it listens on.
    ///
    /// # Errors
    /// Any [`CacheError`]; it has been counted and logged already.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), CacheError> {
        let mut connection = self.connection_or_record().ok_or(CacheError::Unavailable)?;
        let node = {
            let topology = read(&self.inner.topology);
            let primaries: Vec<NodeAddress> = topology
                .as_ref()
                .map(|t| t.shards().map(|shard| shard.primary().clone()).collect())
                .unwrap_or_default();
            // Any primary relays a PUBLISH to the whole cluster: prefer one that has not just
            // failed, so a write does not wait out a frozen master's budget (twice, with the
            // retry) to tell the other instances about itself.
            let streaks = lock(&self.inner.failure_streaks);
            let healthy: Vec<&NodeAddress> = primaries
                .iter()
                .filter(|node| !streaks.contains_key(&node.to_string()))
                .collect();
            let candidates: Vec<&NodeAddress> = if healthy.is_empty() {
                primaries.iter().collect()
            } else {
                healthy
            };
            match candidates.get(rand::random_range(0..candidates.len().max(1))) {
                Some(node) => (*node).clone(),
                None => return Err(CacheError::Unavailable),
            }
        };
        let label = node.to_string();
        self.count_round_trip(&label, 1);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: node.host().to_owned(),
            port: node.port(),
        });
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(payload);
        self.guarded(&label, connection.route_command(publish, routing))
            .await
            .map(drop)
    }

    /// Pings every primary of the last known topology: `(node, Ok(round trip) | Err(reason))`.
    pub async fn ping_primaries(
        &self,
    ) -> Result<Vec<(String, Result<Duration, String>)>, CacheError> {
        let connection = self.connection().ok_or(CacheError::Unavailable)?;
        let primaries: Vec<NodeAddress> = {
            let topology = read(&self.inner.topology);
            let topology = topology.as_ref().ok_or(CacheError::Unavailable)?;
            topology
                .shards()
                .map(|shard| shard.primary().clone())
                .collect()
        };
        let pings = primaries.into_iter().map(|node| {
            let mut connection = connection.clone();
            let timeout = self.inner.timeout;
            async move {
                let started = Instant::now();
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host().to_owned(),
                    port: node.port(),
                });
                let outcome = tokio::time::timeout(
                    timeout,
                    connection.route_command(redis::cmd("PING"), routing),
                )
                .await;
                let result = match outcome {
                    Ok(Ok(_)) => Ok(started.elapsed()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                };
                (node.to_string(), result)
            }
        });
        let mut results = join_all(pings).await;
        results.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(results)
    }

    /// Sends one node's batch of `count` commands, `command(j)` the `j`-th (covering `key_count`
    /// keys, `route_key` among them): the pipeline to the node that owns their slots, or, if the
    /// slot map was stale (`MOVED`/`ASK`/`CROSSSLOT`), each command on its own so the client
    /// re-routes it.
    async fn node_batch(
        &self,
        mut connection: ClusterConnection,
        target: Target,
        route_key: &str,
        key_count: usize,
        count: usize,
        command: &(dyn Fn(usize) -> redis::Cmd + Sync),
    ) -> Result<Vec<Value>, CacheError> {
        let label = target.label();
        self.count_round_trip(&label, count);
        self.inner
            .metrics
            .cache_keys_per_batch
            .observe(key_count as f64);
        let mut pipe = redis::pipe();
        for j in 0..count {
            pipe.add_command(command(j));
        }
        let route = route_for(route_key);
        let call = async {
            match connection.route_pipeline(pipe, 0, count, route).await {
                Err(error) if is_redirect(&error) => {
                    tracing::debug!(node = %label, %error, "stale slot map; retrying the batch command by command");
                    self.inner
                        .metrics
                        .cache_errors
                        .with_label_values(&["moved"])
                        .inc();
                    let singles = (0..count).map(|j| {
                        let mut connection = connection.clone();
                        let command = command(j);
                        async move { connection.req_packed_command(&command).await }
                    });
                    join_all(singles).await.into_iter().collect()
                }
                other => other,
            }
        };
        self.guarded(&label, call).await
    }

    /// Applies the time budget, classifies the outcome and keeps the failure streak.
    async fn guarded<T, F>(&self, node: &str, call: F) -> Result<T, CacheError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let outcome = match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CacheError::Redis(error)),
            Err(_) => Err(CacheError::Timeout),
        };
        match &outcome {
            Ok(_) => {
                lock(&self.inner.failure_streaks).remove(node);
            }
            Err(error) => {
                self.inner
                    .metrics
                    .redis_errors
                    .with_label_values(&[node])
                    .inc();
                self.record_failure(error);
                let streak = {
                    let mut streaks = lock(&self.inner.failure_streaks);
                    let streak = streaks.entry(node.to_owned()).or_insert(0);
                    *streak += 1;
                    *streak
                };
                if streak >= self.inner.rebuild_after {
                    self.spawn_rebuild();
                }
            }
        }
        outcome
    }

    fn record_failure(&self, error: &CacheError) {
        let kind = error.kind();
        self.inner
            .metrics
            .cache_errors
            .with_label_values(&[kind])
            .inc();
        tracing::warn!(kind, %error, "cache call failed; serving from PostgreSQL");
    }

    /// The connection to send a call on: this worker thread's own when it has one for the
    /// current generation, else the shared one (while the worker's opens in the background).
    fn connection(&self) -> Option<ClusterConnection> {
        let shared = read(&self.inner.connection).clone()?;
        if !self.inner.per_worker {
            return Some(shared);
        }
        Some(self.local_connection().unwrap_or(shared))
    }

    fn local_connection(&self) -> Option<ClusterConnection> {
        let key = Arc::as_ptr(&self.inner) as usize;
        let generation = self.inner.generation.load(Ordering::Acquire);
        let open = LOCAL.with_borrow_mut(|locals| {
            let locals = locals.as_mut()?;
            match locals.get(&key) {
                Some(Local::Open(seen, connection)) if *seen == generation => {
                    return Some(Ok(connection.clone()));
                }
                Some(Local::Opening(seen)) if *seen == generation => return None,
                Some(Local::Failed(seen, at))
                    if *seen == generation && at.elapsed() < MIN_REBUILD_INTERVAL =>
                {
                    return None;
                }
                _ => {}
            }
            locals.insert(key, Local::Opening(generation));
            Some(Err(()))
        })?;
        match open {
            Ok(connection) => Some(connection),
            Err(()) => {
                let inner = Arc::clone(&self.inner);
                let tasks = inner.tasks.clone();
                tasks.spawn_local(async move {
                    let opened = inner.open().await;
                    LOCAL.with_borrow_mut(|locals| {
                        let Some(locals) = locals.as_mut() else { return };
                        let state = match opened {
                            Ok(connection) => Local::Open(generation, connection),
                            Err(error) => {
                                tracing::debug!(%error, "a worker's own Redis connection did not open; using the shared one");
                                Local::Failed(generation, Instant::now())
                            }
                        };
                        locals.insert(key, state);
                    });
                });
                None
            }
        }
    }

    fn connection_or_record(&self) -> Option<ClusterConnection> {
        let connection = self.connection();
        if connection.is_none() {
            self.inner
                .metrics
                .cache_errors
                .with_label_values(&[CacheError::Unavailable.kind()])
                .inc();
        }
        connection
    }

    /// Replaces the connection in the background (which reloads the slot map), retrying with
    /// backoff while the cluster does not answer. At most one rebuild runs at a time, and at most
    /// one starts per [`MIN_REBUILD_INTERVAL`].
    fn spawn_rebuild(&self) {
        if self.inner.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let rebuild = async move {
            let since_last = lock(&inner.last_rebuild).map(|at| at.elapsed());
            if let Some(elapsed) = since_last.filter(|e| *e < MIN_REBUILD_INTERVAL) {
                tokio::time::sleep(MIN_REBUILD_INTERVAL - elapsed).await;
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                *lock(&inner.last_rebuild) = Some(Instant::now());
                match inner.open().await {
                    Ok(connection) => {
                        inner.install(connection);
                        inner.metrics.redis_reconnects.inc();
                        tracing::info!("Redis Cluster connection rebuilt");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Redis Cluster still unreachable");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                    }
                }
            }
            inner.rebuilding.store(false, Ordering::Release);
        };
        self.inner.tasks.spawn_on(rebuild, &self.inner.runtime);
    }

    /// Groups key indexes by the primary that owns each key's slot.
    fn group_by_node(&self, keys: &[String]) -> BTreeMap<Target, Vec<usize>> {
        let slots: Vec<u16> = keys.iter().map(|key| slot(key.as_bytes())).collect();
        self.group_slots_by_node(&slots)
    }

    /// Groups indexes into `slots` by the primary that owns each slot.
    fn group_slots_by_node(&self, slots: &[u16]) -> BTreeMap<Target, Vec<usize>> {
        let topology = read(&self.inner.topology);
        let mut groups: BTreeMap<Target, Vec<usize>> = BTreeMap::new();
        for (i, &slot) in slots.iter().enumerate() {
            let target = topology
                .as_ref()
                .and_then(|t| t.shard_for_slot(slot))
                .map_or(Target::Slot(slot), |shard| {
                    Target::Node(shard.primary().clone())
                });
            groups.entry(target).or_default().push(i);
        }
        groups
    }

    /// Whether some node failed its last call (its failure streak is running).
    pub fn is_failing(&self) -> bool {
        !lock(&self.inner.failure_streaks).is_empty()
    }

    /// The shards of the last known topology: each master's slot ranges and replicas (empty while
    /// none is known).
    pub fn shards(&self) -> Vec<ShardView> {
        read(&self.inner.topology)
            .as_ref()
            .map(|topology| {
                topology
                    .shards()
                    .map(|shard| ShardView {
                        master: shard.primary().to_string(),
                        slots: shard.slot_ranges().to_vec(),
                        replicas: shard.replicas().iter().map(ToString::to_string).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The master that owns `slot` in the last known topology.
    pub fn node_of_slot(&self, slot: u16) -> Option<String> {
        read(&self.inner.topology)
            .as_ref()
            .and_then(|t| t.shard_for_slot(slot))
            .map(|shard| shard.primary().to_string())
    }

    fn node_label(&self, key: &str) -> String {
        let slot = slot(key.as_bytes());
        read(&self.inner.topology)
            .as_ref()
            .and_then(|t| t.shard_for_slot(slot))
            .map_or_else(|| "unknown".to_owned(), |shard| shard.primary().to_string())
    }

    fn count_round_trip(&self, node: &str, commands: usize) {
        let metrics = &self.inner.metrics;
        metrics.redis_round_trips.with_label_values(&[node]).inc();
        metrics
            .redis_commands
            .with_label_values(&[node])
            .inc_by(commands as u64);
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

/// Slot ranges with adjacent ranges of one owner joined, so two spellings of one map compare equal.
fn merge_ranges(ranges: Vec<(u16, u16, String)>) -> Vec<(u16, u16, String)> {
    let mut merged: Vec<(u16, u16, String)> = Vec::with_capacity(ranges.len());
    for (start, end, owner) in ranges {
        match merged.last_mut() {
            Some(last) if last.2 == owner && u32::from(last.1) + 1 == u32::from(start) => {
                last.1 = end;
            }
            _ => merged.push((start, end, owner)),
        }
    }
    merged
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

/// Keeps a copy of the client's slot map on every refresh, so keys can be grouped by node.
/// Reads stay on primaries.
struct TopologyTap {
    topology: Arc<RwLock<Option<ClusterTopology>>>,
    /// The per-node series of each primary the topology names are created at 0 here.
    metrics: Arc<Metrics>,
}

impl ReadRoutingStrategyFactory for TopologyTap {
    fn create_strategy(&self) -> Box<dyn ReadRoutingStrategy> {
        Box::new(Self {
            topology: Arc::clone(&self.topology),
            metrics: Arc::clone(&self.metrics),
        })
    }
}

impl ReadRoutingStrategy for TopologyTap {
    fn on_topology_changed(&self, topology: ClusterTopology) {
        for shard in topology.shards() {
            self.metrics.node_known(&shard.primary().to_string());
        }
        *self
            .topology
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(topology);
    }

    fn route_read<'a>(&self, candidates: &ReadCandidates<'a>) -> &'a NodeAddress {
        match candidates {
            ReadCandidates::AnyNode(candidates) => candidates.primary(),
            ReadCandidates::ReplicasOnly(candidates) => candidates.replicas().first(),
        }
    }
}
