//! Admin views and publish: the shards as the client sees them, a probe of every primary, and
//! the invalidation channel's publish.

use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::cluster::NodeAddress;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::{lock, read, ClusterCache, ShardView};
use crate::cache::error::CacheError;

impl ClusterCache {
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
            // failed and whose breaker is closed, so a write does not wait out a frozen master's
            // budget (twice, with the retry) to tell the other instances about itself.
            let tripped: Vec<String> = self
                .inner
                .breakers
                .not_closed()
                .into_iter()
                .map(|(node, _)| node)
                .collect();
            let streaks = lock(&self.inner.failure_streaks);
            let healthy: Vec<&NodeAddress> = primaries
                .iter()
                .map(|node| (node, node.to_string()))
                .filter(|(_, name)| !streaks.contains_key(name) && !tripped.contains(name))
                .map(|(node, _)| node)
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
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: node.host().to_owned(),
            port: node.port(),
        });
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(payload);
        self.guarded(&label, 1, connection.route_command(publish, routing))
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
}
