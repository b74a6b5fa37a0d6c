//! Cache coherence after a replace. Ids restart at 1, so a cached `hf:post:1` from the old data
//! would be served as the new post 1, and a cached page would list posts of the old data. Every
//! key of the deployment (`<prefix>:*`, from the service's own `Keys`) is therefore unlinked, master
//! by master: `SCAN MATCH` walks one node's keys only, and `UNLINK` frees memory off the main thread.

use std::time::Duration;

use anyhow::Context as _;
use hotfeed::cache::topology::SlotMap;
use hotfeed::cache::Keys;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

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
    let masters = SlotMap::read(&mut connection).await?.masters();
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
