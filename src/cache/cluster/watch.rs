//! Topology watch: the client's slot map copied on every refresh, and compared with the
//! cluster's once a second so a resharding is followed whether or not its slots are read.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::cluster::NodeAddress;
use redis::cluster_read_routing::{
    ClusterTopology, ReadCandidates, ReadRoutingStrategy, ReadRoutingStrategyFactory,
};

use super::breaker::Breakers;
use super::{read, ClusterCache};
use crate::cache::topology::SlotMap;
use crate::metrics::Metrics;

/// How often the cluster's slot map is compared with the client's: the client refreshes its map
/// only when a command meets `MOVED`, so after a resharding the slots nobody read stay routed (and
/// shown on the dashboard) by the old map until then.
pub(super) const TOPOLOGY_CHECK_EVERY: Duration = Duration::from_secs(1);

impl ClusterCache {
    /// Once a [`TOPOLOGY_CHECK_EVERY`], asks a node for the slot map and rebuilds the connection
    /// (which reloads the client's map) when it routes any slot differently, so a resharding is
    /// followed within about a second whether or not its slots are read. Ends with the cache.
    pub(super) fn spawn_topology_check(&self) {
        let weak = Arc::downgrade(&self.inner);
        let check = async move {
            let mut ticks = tokio::time::interval(TOPOLOGY_CHECK_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // An open period ends without an event: the gauges show it half-open from now.
                inner.breakers.publish(&inner.metrics);
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
    pub(super) async fn topology_moved(&self) -> bool {
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
}

/// Slot ranges with adjacent ranges of one owner joined, so two spellings of one map compare equal.
pub(super) fn merge_ranges(ranges: Vec<(u16, u16, String)>) -> Vec<(u16, u16, String)> {
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

/// Keeps a copy of the client's slot map on every refresh, so keys can be grouped by node.
/// Reads stay on primaries.
pub(super) struct TopologyTap {
    pub(super) topology: Arc<RwLock<Option<ClusterTopology>>>,
    /// The per-node series of each primary the topology names are created at 0 here.
    pub(super) metrics: Arc<Metrics>,
    /// Each primary the topology names gets a breaker (closed) here.
    pub(super) breakers: Arc<Breakers>,
}

impl ReadRoutingStrategyFactory for TopologyTap {
    fn create_strategy(&self) -> Box<dyn ReadRoutingStrategy> {
        Box::new(Self {
            topology: Arc::clone(&self.topology),
            metrics: Arc::clone(&self.metrics),
            breakers: Arc::clone(&self.breakers),
        })
    }
}

impl ReadRoutingStrategy for TopologyTap {
    fn on_topology_changed(&self, topology: ClusterTopology) {
        for shard in topology.shards() {
            let node = shard.primary().to_string();
            self.metrics.node_known(&node);
            self.breakers.track(&node, &self.metrics);
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
