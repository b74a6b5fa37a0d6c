//! Cache coherence after a replace. Ids restart at 1, so a cached `hf:post:1` from the old data
//! would be served as the new post 1, and a cached page would list posts of the old data. Every
//! key of the deployment (`<prefix>:*`, from the service's own `Keys`) is therefore unlinked, master
//! by master: `SCAN MATCH` walks one node's keys only, and `UNLINK` frees memory off the main thread.

use std::time::Duration;

use anyhow::Context as _;
use hotfeed::cache::Keys;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

/// Time allowed to reach a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one reply; a flush is not latency-sensitive, a hung node must still end it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys asked for per `SCAN` step, and so at most unlinked per pipeline.
const SCAN_COUNT: usize = 1000;

/// What a flush removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Keys unlinked.
    pub keys: u64,
    /// Masters scanned.
    pub masters: usize,
}

/// Unlinks every key matching `keys.pattern()` on every master of the cluster.
///
/// # Errors
/// A node is unreachable or failing; keys on it may survive until their TTL.
pub async fn flush(redis_urls: &[String], keys: &Keys) -> anyhow::Result<Flushed> {
    let seeds: Vec<&str> = redis_urls
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty())
        .collect();
    anyhow::ensure!(!seeds.is_empty(), "REDIS_URLS names no node");
    let client = ClusterClient::builder(seeds)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(1)
        .build()
        .context("REDIS_URLS is not a list of Redis URLs")?;
    let mut connection = client
        .get_async_connection()
        .await
        .context("connecting to the Redis Cluster")?;
    let slots = connection
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .context("reading the cluster's slot map")?;
    let masters = masters(slots).context("reading CLUSTER SLOTS")?;
    let pattern = keys.pattern();
    let mut flushed = 0;
    for (host, port) in &masters {
        flushed += flush_node(&mut connection, host, *port, &pattern)
            .await
            .with_context(|| format!("flushing {host}:{port}"))?;
    }
    Ok(Flushed {
        keys: flushed,
        masters: masters.len(),
    })
}

async fn flush_node(
    connection: &mut ClusterConnection,
    host: &str,
    port: u16,
    pattern: &str,
) -> anyhow::Result<u64> {
    let route = SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    };
    let mut cursor: u64 = 0;
    let mut unlinked = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = connection
            .route_command(scan, RoutingInfo::SingleNode(route.clone()))
            .await?;
        let (next, found): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
        if !found.is_empty() {
            // One UNLINK per key: in a cluster a multi-key command must stay within one slot.
            let mut pipe = redis::pipe();
            for key in &found {
                pipe.cmd("UNLINK").arg(key);
            }
            connection
                .route_pipeline(pipe, 0, found.len(), route.clone())
                .await?;
            unlinked += found.len() as u64;
        }
        if next == 0 {
            return Ok(unlinked);
        }
        cursor = next;
    }
}

/// The masters that own slots, from `CLUSTER SLOTS`: each slot range lists its master first, by
/// the endpoint clients use (an IP or a hostname), which is how the client names its connections.
fn masters(slots: Value) -> anyhow::Result<Vec<(String, u16)>> {
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in redis::from_redis_value::<Vec<Vec<Value>>>(slots)? {
        let Some(master) = range.into_iter().nth(2) else {
            anyhow::bail!("a slot range without a master");
        };
        let mut fields = redis::from_redis_value::<Vec<Value>>(master)?.into_iter();
        let (Some(endpoint), Some(port)) = (fields.next(), fields.next()) else {
            anyhow::bail!("a master without an address");
        };
        let address = (
            redis::from_redis_value::<String>(endpoint)?,
            redis::from_redis_value::<u16>(port)?,
        );
        if !masters.contains(&address) {
            masters.push(address);
        }
    }
    anyhow::ensure!(!masters.is_empty(), "the cluster reports no slot owner");
    Ok(masters)
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
            range(10923, 12000, vec![node("127.0.0.1", 7100)]),
        ]);

        let found = masters(slots).expect("a healthy cluster");

        assert_eq!(
            found,
            [("127.0.0.1".to_owned(), 7100), ("redis-2".to_owned(), 6379)]
        );
    }

    #[test]
    fn a_cluster_without_slot_owners_is_an_error() {
        assert!(masters(Value::Array(vec![])).is_err());
    }
}
