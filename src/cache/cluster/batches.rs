//! Node-grouped batches: multi-key reads and writes grouped by the primary that owns each key,
//! one pipeline per node, all nodes at once.

use std::collections::BTreeMap;

use futures::future::join_all;
use redis::aio::ConnectionLike as _;
use redis::cluster::NodeAddress;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Value};

use super::{is_redirect, read, route_for, ClusterCache, CROSS_SLOT};
use crate::cache::error::CacheError;
use crate::cache::keys::slot;

/// Where a group of keys is sent: the primary that owns them, or (topology not yet known) their slot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
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
    pub(super) async fn scatter(
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
        // Counted per node above: the cross-slot label has no round trips of its own.
        let mut mget = redis::cmd("MGET");
        mget.arg(keys);
        let call = async move {
            mget.query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
                .await
        };
        self.guarded(CROSS_SLOT, 0, call)
            .await
            .unwrap_or_else(|_| vec![None; keys.len()])
    }

    /// Sends one node's batch of `count` commands, `command(j)` the `j`-th (covering `key_count`
    /// keys, `route_key` among them): the pipeline to the node that owns their slots, or, if the
    /// slot map was stale (`MOVED`/`ASK`/`CROSSSLOT`), each command on its own so the client
    /// re-routes it.
    pub(super) async fn node_batch(
        &self,
        mut connection: ClusterConnection,
        target: Target,
        route_key: &str,
        key_count: usize,
        count: usize,
        command: &(dyn Fn(usize) -> redis::Cmd + Sync),
    ) -> Result<Vec<Value>, CacheError> {
        let label = target.label();
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
        self.guarded(&label, count, call).await
    }

    /// Groups key indexes by the primary that owns each key's slot.
    pub(super) fn group_by_node(&self, keys: &[String]) -> BTreeMap<Target, Vec<usize>> {
        let slots: Vec<u16> = keys.iter().map(|key| slot(key.as_bytes())).collect();
        self.group_slots_by_node(&slots)
    }

    /// Groups indexes into `slots` by the primary that owns each slot.
    pub(super) fn group_slots_by_node(&self, slots: &[u16]) -> BTreeMap<Target, Vec<usize>> {
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

    pub(super) fn node_label(&self, key: &str) -> String {
        let slot = slot(key.as_bytes());
        read(&self.inner.topology)
            .as_ref()
            .and_then(|t| t.shard_for_slot(slot))
            .map_or_else(|| "unknown".to_owned(), |shard| shard.primary().to_string())
    }

    pub(super) fn count_round_trip(&self, node: &str, commands: usize) {
        let metrics = &self.inner.metrics;
        metrics.redis_round_trips.with_label_values(&[node]).inc();
        metrics
            .redis_commands
            .with_label_values(&[node])
            .inc_by(commands as u64);
    }
}
