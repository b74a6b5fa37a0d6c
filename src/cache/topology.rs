//! The cluster's slot map as `CLUSTER SLOTS` reports it, for tools and tests that address nodes
//! themselves (the service learns its topology from the client, see `cluster.rs`).

use anyhow::{bail, ensure, Context as _};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use super::keys::slot;

/// Which master owns which slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// `(first slot, last slot, master host, master port)`, in the order reported.
    ranges: Vec<(u16, u16, String, u16)>,
}

impl SlotMap {
    /// Asks a random node for `CLUSTER SLOTS`.
    ///
    /// # Errors
    /// The node does not answer, or answers something that is not a slot map.
    pub async fn read(connection: &mut ClusterConnection) -> anyhow::Result<Self> {
        let reply = connection
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .context("reading the cluster's slot map")?;
        Self::parse(reply).context("reading CLUSTER SLOTS")
    }

    /// Parses a `CLUSTER SLOTS` reply: each slot range lists its master first, by the endpoint
    /// clients use (an IP or a hostname), which is how the client names its connections.
    ///
    /// # Errors
    /// The reply is not a slot map, or no range has a master.
    pub fn parse(reply: Value) -> anyhow::Result<Self> {
        let mut ranges = Vec::new();
        for range in redis::from_redis_value::<Vec<Vec<Value>>>(reply)? {
            let mut fields = range.into_iter();
            let (Some(start), Some(end), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                bail!("a slot range without a master");
            };
            let mut address = redis::from_redis_value::<Vec<Value>>(master)?.into_iter();
            let (Some(host), Some(port)) = (address.next(), address.next()) else {
                bail!("a master without an address");
            };
            ranges.push((
                redis::from_redis_value::<u16>(start)?,
                redis::from_redis_value::<u16>(end)?,
                redis::from_redis_value::<String>(host)?,
                redis::from_redis_value::<u16>(port)?,
            ));
        }
        ensure!(!ranges.is_empty(), "the cluster reports no slot owner");
        Ok(Self { ranges })
    }

    /// Every master that owns slots, once each, in the order reported.
    pub fn masters(&self) -> Vec<(String, u16)> {
        let mut masters: Vec<(String, u16)> = Vec::new();
        for (_, _, host, port) in &self.ranges {
            let address = (host.clone(), *port);
            if !masters.contains(&address) {
                masters.push(address);
            }
        }
        masters
    }

    /// Every slot range with its master's `host:port`, sorted: equal for two maps that route every
    /// slot alike.
    pub fn owners(&self) -> Vec<(u16, u16, String)> {
        let mut owners: Vec<(u16, u16, String)> = self
            .ranges
            .iter()
            .map(|(start, end, host, port)| (*start, *end, format!("{host}:{port}")))
            .collect();
        owners.sort_unstable();
        owners
    }

    /// The `host:port` of the master owning `key`'s slot, if any range covers it.
    pub fn owner(&self, key: &[u8]) -> Option<String> {
        let slot = slot(key);
        self.ranges
            .iter()
            .find(|(start, end, _, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, host, port)| format!("{host}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(endpoint: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(endpoint.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"4f2a".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut items = vec![Value::Int(start), Value::Int(end)];
        items.extend(nodes);
        Value::Array(items)
    }

    #[test]
    fn masters_are_the_first_node_of_each_slot_range_once() {
        let slots = Value::Array(vec![
            range(
                0,
                5460,
                vec![node("127.0.0.1", 7100), node("127.0.0.1", 7105)],
            ),
            range(
                5461,
                10922,
                vec![node("redis-2", 6379), node("redis-4", 6379)],
            ),
            range(10923, 16383, vec![node("127.0.0.1", 7100)]),
        ]);

        let map = SlotMap::parse(slots).expect("a healthy cluster");

        assert_eq!(
            map.masters(),
            [("127.0.0.1".to_owned(), 7100), ("redis-2".to_owned(), 6379)]
        );
        // `post:1` hashes to slot 10484 (`CLUSTER KEYSLOT post:1`).
        assert_eq!(map.owner(b"post:1").as_deref(), Some("redis-2:6379"));
    }

    #[test]
    fn a_cluster_without_slot_owners_is_an_error() {
        assert!(SlotMap::parse(Value::Array(vec![])).is_err());
    }
}
