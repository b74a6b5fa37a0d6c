//! The hottest celebrity's outbox: which account it is, and which Redis node holds it.
//!
//! Home-feed readers pull the outboxes of the celebrities they follow, so the most followed
//! account's outbox is the key most readers read: its node is the feed's hot partition. The
//! account is found through the API (the most `followers_count` among the first user ids, the
//! Zipf ranks datagen seeds as the hottest), the node from the cluster itself: the service keeps
//! the outbox under `<prefix>:{user:<id>}:outbox`, whose `{user:<id>}` hash tag alone decides the
//! slot, and `CLUSTER SLOTS` says which master owns that slot. Redis is asked for nothing else.

use std::time::Duration;

use anyhow::{bail, Context as _};
use redis::Value;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// User ids probed, from 1, for the most followed account.
pub const PROBED_USERS: u64 = 100;

/// Time allowed to each Redis seed to answer.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The most followed account and where its outbox lives.
#[derive(Debug, Clone, Serialize)]
pub struct HotOutbox {
    /// The most followed of users `1..=probed` (ties go to the lower id).
    pub user: u64,
    pub followers: u64,
    pub probed: u64,
    /// The outbox key after the service's key prefix.
    pub key: String,
    /// The key's cluster slot, when the slot map could be read.
    pub slot: Option<u16>,
    /// The master that owns the slot, named as the service names nodes in its metrics.
    pub node: Option<String>,
    /// Why `node` is missing, or why it is not among the nodes the service reported.
    pub node_note: Option<String>,
    /// The node's share of all Redis commands of the measured phase (from the service's metrics).
    pub command_share: Option<f64>,
    /// That share over the mean share of the other nodes: 1 is even, above 1 a hot partition.
    pub vs_other_nodes: Option<f64>,
}

#[derive(Deserialize)]
struct UserBody {
    followers_count: u64,
}

impl HotOutbox {
    /// Finds the most followed of users `1..=min(users, PROBED_USERS)` and, from the first of
    /// `redis_urls` that answers, the node of its outbox.
    ///
    /// # Errors
    /// No probed user answered with a follower count, or none has followers (no follow graph,
    /// hence no celebrity). A slot map that cannot be read is not an error: it leaves `node` empty
    /// and says why in `node_note`.
    pub async fn find(
        client: &reqwest::Client,
        base: &str,
        users: u64,
        redis_urls: &[String],
    ) -> anyhow::Result<Self> {
        let probed = users.clamp(1, PROBED_USERS);
        let mut probes = JoinSet::new();
        for user in 1..=probed {
            let client = client.clone();
            let url = format!("{base}/api/v1/users/{user}");
            probes.spawn(async move {
                let response = client.get(url).send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let body = response.bytes().await.ok()?;
                let body: UserBody = serde_json::from_slice(&body).ok()?;
                Some((user, body.followers_count))
            });
        }
        let mut counts = Vec::new();
        while let Some(probe) = probes.join_next().await {
            counts.extend(probe.ok().flatten());
        }
        if counts.is_empty() {
            bail!("none of users 1..={probed} answered with a followers_count");
        }
        let (user, followers) = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .expect("counts is not empty");
        if followers == 0 {
            bail!("none of users 1..={probed} has followers: no follow graph, so no celebrity");
        }
        let key = format!("{{user:{user}}}:outbox");
        let (slot, node, node_note) = match owner(redis_urls, &key).await {
            Ok((slot, node)) => (Some(slot), Some(node), None),
            Err(error) => (None, None, Some(format!("{error:#}"))),
        };
        Ok(Self {
            user,
            followers,
            probed,
            key,
            slot,
            node,
            node_note,
            command_share: None,
            vs_other_nodes: None,
        })
    }

    /// Fills in the node's share of `(node, commands)` from the service's metrics, or notes that
    /// the node is not among them (a slot map of another cluster than the service's).
    pub fn weigh(&mut self, commands: &[(String, u64)]) {
        let Some(node) = &self.node else {
            return;
        };
        let total: u64 = commands.iter().map(|(_, n)| n).sum();
        let Some(&(_, mine)) = commands.iter().find(|(name, _)| name == node) else {
            if total > 0 {
                self.node_note = Some(format!(
                    "{node} is not among the nodes the service sent commands to: are \
                     --redis-urls the service's cluster?"
                ));
            }
            return;
        };
        let share = mine as f64 / total as f64;
        self.command_share = Some(share);
        let others = commands.len() - 1;
        if others > 0 {
            let mean_other = (total - mine) as f64 / total as f64 / others as f64;
            self.vs_other_nodes = (mean_other > 0.0).then(|| share / mean_other);
        }
    }
}

/// The slot of `key` and the `host:port` of the master owning it, from the first seed that
/// answers.
async fn owner(redis_urls: &[String], key: &str) -> anyhow::Result<(u16, String)> {
    if redis_urls.is_empty() {
        bail!("no --redis-urls (or REDIS_URLS) to read the cluster's slot map from");
    }
    let mut failures = Vec::new();
    for seed in redis_urls {
        match tokio::time::timeout(REDIS_TIMEOUT, ask(seed, key)).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(error)) => failures.push(format!("{seed}: {error:#}")),
            Err(_) => failures.push(format!("{seed}: no answer within {REDIS_TIMEOUT:?}")),
        }
    }
    bail!("no Redis seed gave the slot map: {}", failures.join("; "))
}

async fn ask(seed: &str, key: &str) -> anyhow::Result<(u16, String)> {
    let client = redis::Client::open(seed).context("seed URL")?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting")?;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut connection)
        .await
        .context("CLUSTER KEYSLOT")?;
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut connection)
        .await
        .context("CLUSTER SLOTS")?;
    let node = master_of(slots, slot)?;
    Ok((slot, node))
}

/// The `host:port` of the master of `slot` in a `CLUSTER SLOTS` reply: each range is
/// `[first, last, [host, port, id, ...] (the master), replicas ...]`.
fn master_of(reply: Value, slot: u16) -> anyhow::Result<String> {
    for range in redis::from_redis_value::<Vec<Vec<Value>>>(reply)? {
        let mut fields = range.into_iter();
        let (Some(first), Some(last), Some(master)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!("a slot range without a master");
        };
        let first: u16 = redis::from_redis_value(first)?;
        let last: u16 = redis::from_redis_value(last)?;
        if !(first..=last).contains(&slot) {
            continue;
        }
        let mut address = redis::from_redis_value::<Vec<Value>>(master)?.into_iter();
        let (Some(host), Some(port)) = (address.next(), address.next()) else {
            bail!("a master without an address");
        };
        let host: String = redis::from_redis_value(host)?;
        let port: u16 = redis::from_redis_value(port)?;
        return Ok(format!("{host}:{port}"));
    }
    bail!("no master owns slot {slot}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i64, last: i64, host: &str, port: i64) -> Value {
        let node = |host: &str, port| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"0123abcd".to_vec()),
            ])
        };
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            node(host, port),
            node(host, port + 3),
        ])
    }

    #[test]
    fn the_slot_map_names_the_master_of_a_slot() {
        let reply = Value::Array(vec![
            range(0, 5460, "127.0.0.1", 7000),
            range(5461, 10922, "127.0.0.1", 7001),
            range(10923, 16383, "127.0.0.1", 7002),
        ]);
        let cases = [
            (0, "127.0.0.1:7000"),
            (5461, "127.0.0.1:7001"),
            (10778, "127.0.0.1:7001"),
            (16383, "127.0.0.1:7002"),
        ];
        for (slot, master) in cases {
            assert_eq!(
                master_of(reply.clone(), slot).expect("covered"),
                master,
                "slot {slot}"
            );
        }
        let partial = Value::Array(vec![range(0, 100, "127.0.0.1", 7000)]);
        let error = master_of(partial, 101).expect_err("slot 101 has no owner");
        assert!(error.to_string().contains("no master owns slot 101"));
    }

    fn outbox_on(node: &str) -> HotOutbox {
        HotOutbox {
            user: 1,
            followers: 99,
            probed: 100,
            key: "{user:1}:outbox".into(),
            slot: Some(10778),
            node: Some(node.into()),
            node_note: None,
            command_share: None,
            vs_other_nodes: None,
        }
    }

    #[test]
    fn the_outbox_node_is_weighed_against_the_mean_of_the_others() {
        let commands = [
            ("127.0.0.1:7000".to_owned(), 300),
            ("127.0.0.1:7001".to_owned(), 500),
            ("127.0.0.1:7002".to_owned(), 200),
        ];
        let mut outbox = outbox_on("127.0.0.1:7001");
        outbox.weigh(&commands);
        assert_eq!(outbox.command_share, Some(0.5));
        // The others hold 25% each on average: the outbox node has twice that.
        let ratio = outbox.vs_other_nodes.expect("three nodes");
        assert!((ratio - 2.0).abs() < 1e-12, "{ratio}");
        assert_eq!(outbox.node_note, None);

        let mut elsewhere = outbox_on("127.0.0.1:7101");
        elsewhere.weigh(&commands);
        assert_eq!(elsewhere.command_share, None);
        assert!(elsewhere
            .node_note
            .expect("a note")
            .contains("not among the nodes"));
    }

    #[tokio::test]
    async fn without_seeds_the_node_is_unknown_and_says_why() {
        let error = owner(&[], "{user:1}:outbox").await.expect_err("no seeds");
        assert!(error.to_string().contains("--redis-urls"), "{error}");
    }
}
