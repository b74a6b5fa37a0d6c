//! The invalidation channel: how a write on one instance evicts the in-process tier of the others.
//!
//! A write publishes the [`Topic`]s it changed on one classic pub/sub channel per deployment
//! (`<prefix>:l1`). Redis Cluster forwards a `PUBLISH` to every node over its bus, so each
//! instance subscribes with one plain connection to any one node, and hears every instance's
//! writes (its own included). Why not sharded pub/sub: a sharded channel lives in one slot, so an
//! instance would need a subscription per shard and would have to resubscribe whenever slots
//! move; the broadcast costs each node one message per write, which at the write rates of a feed
//! (a few hundred a second) is noise beside the reads (docs/ARCHITECTURE.md).
//!
//! A message is `<publish time, µs since the epoch> <topic> <topic>...`. The subscriber pings its
//! node every `L1_PING_MS`; a ping unanswered within that time, or the connection closing, marks
//! the channel down: the tier empties and serves nothing until it is subscribed again (messages
//! published meanwhile are lost). What no check can see, a message lost on the way, is bounded by
//! `L1_TTL_MS`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;

use super::cluster::ClusterCache;
use super::local::{LocalTier, Topic};
use super::options::CacheOptions;
use crate::metrics::{zero_series, Metrics};
use crate::tasks::Tasks;

/// Longest pause between two subscription attempts while no node answers.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(2);

/// The publishing side; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    channel: Arc<str>,
    cluster: ClusterCache,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Tells every instance that `topics` changed. Best effort, once retried on another node: a
    /// lost message is bounded by `L1_TTL_MS`.
    pub async fn publish(&self, topics: &[Topic]) {
        if topics.is_empty() {
            return;
        }
        let payload = encode(now_micros(), topics);
        let outcome = match self.cluster.publish(&self.channel, &payload).await {
            Ok(()) => "sent",
            Err(_) => match self.cluster.publish(&self.channel, &payload).await {
                Ok(()) => "sent",
                Err(error) => {
                    tracing::error!(%error, "invalidation not published; other instances may serve the old value for up to L1_TTL_MS");
                    "failed"
                }
            },
        };
        self.metrics
            .invalidations_sent
            .with_label_values(&[outcome])
            .inc();
    }
}

/// Starts the subscriber that keeps `local` in step with every instance's writes, and returns
/// the publisher of this instance's writes. The subscriber runs until the runtime stops.
///
/// # Errors
/// `REDIS_CA_CERT` cannot be read.
pub fn start(
    settings: &CacheOptions,
    cluster: ClusterCache,
    local: LocalTier,
    metrics: Arc<Metrics>,
    tasks: &Tasks,
) -> std::io::Result<Publisher> {
    zero_series(&metrics.invalidations_sent, ["sent", "failed"]);
    let channel: Arc<str> = Arc::from(format!("{}:l1", settings.key_prefix));
    let root_cert = settings
        .redis_ca_cert
        .as_ref()
        .map(std::fs::read)
        .transpose()?;
    let subscriber = Subscriber {
        seeds: settings
            .redis_urls
            .iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect(),
        root_cert,
        channel: Arc::clone(&channel),
        ping_every: settings.l1_ping,
        connect_timeout: settings.redis_connect_timeout,
        local,
        metrics: Arc::clone(&metrics),
    };
    tasks.spawn(subscriber.run());
    Ok(Publisher {
        channel,
        cluster,
        metrics,
    })
}

struct Subscriber {
    seeds: Vec<String>,
    root_cert: Option<Vec<u8>>,
    channel: Arc<str>,
    ping_every: Duration,
    connect_timeout: Duration,
    local: LocalTier,
    metrics: Arc<Metrics>,
}

impl Subscriber {
    /// Subscribes through the seeds in turn, forever; each session lasts until its node stops
    /// answering.
    async fn run(self) {
        let mut backoff = Duration::from_millis(50);
        for seed in self.seeds.iter().cycle() {
            match self.session(seed).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(error) => {
                    tracing::warn!(%error, seed = %seed, "invalidation channel: cannot subscribe here; trying the next seed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                }
            }
        }
        tracing::error!("invalidation channel: no seeds; the in-process tier stays off");
    }

    /// One subscription: `Ok` once it was up and then went down, `Err` if it never came up.
    async fn session(&self, seed: &str) -> Result<(), redis::RedisError> {
        let client = match &self.root_cert {
            None => redis::Client::open(seed)?,
            Some(root_cert) => redis::Client::build_with_tls(
                seed,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert.clone()),
                },
            )?,
        };
        let pubsub = tokio::time::timeout(self.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| timeout_error("connect"))??;
        let (mut sink, mut messages) = pubsub.split();
        tokio::time::timeout(self.connect_timeout, sink.subscribe(&*self.channel))
            .await
            .map_err(|_| timeout_error("subscribe"))??;
        // Anything kept before this point may have missed a message: start empty.
        self.local.set_listening(true);
        tracing::info!(seed = %seed, channel = %self.channel, "invalidation channel subscribed; the in-process tier serves");

        let mut pings = tokio::time::interval(self.ping_every);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                message = messages.next() => match message {
                    None => break "the connection closed",
                    Some(message) => self.received(message.get_payload_bytes()),
                },
                _ = pings.tick() => {
                    let pong = tokio::time::timeout(self.ping_every, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break "a ping went unanswered";
                    }
                }
            }
        };
        self.local.set_listening(false);
        self.metrics.invalidation_channel_drops.inc();
        tracing::warn!(seed = %seed, why, "invalidation channel down; the in-process tier is emptied and off until it is back");
        Ok(())
    }

    fn received(&self, payload: &[u8]) {
        self.metrics.invalidations_received.inc();
        let Some((sent, topics)) = std::str::from_utf8(payload).ok().and_then(decode) else {
            tracing::warn!("undecodable invalidation message; emptying the in-process tier");
            self.local.evict_all();
            return;
        };
        for topic in topics {
            self.local.evict(topic);
        }
        let lag = now_micros().saturating_sub(sent);
        self.metrics.invalidation_lag.observe(lag as f64 / 1e6);
    }
}

fn timeout_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "invalidation channel timed out",
        what.to_owned(),
    ))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

fn encode(sent_micros: u64, topics: &[Topic]) -> String {
    let mut payload = sent_micros.to_string();
    for topic in topics {
        payload.push(' ');
        payload.push_str(&topic.encode());
    }
    payload
}

/// A message's publish time and topics; `None` when any part is not understood (the receiver
/// then drops everything rather than guess).
fn decode(payload: &str) -> Option<(u64, Vec<Topic>)> {
    let mut parts = payload.split(' ');
    let sent = parts.next()?.parse().ok()?;
    let topics = parts.map(Topic::decode).collect::<Option<Vec<_>>>()?;
    Some((sent, topics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ListingKey;
    use crate::domain::{PostId, UserId};

    #[test]
    fn a_message_carries_its_time_and_topics() {
        let topics = [
            Topic::Listing(ListingKey::UserPosts(UserId::from_trusted(3))),
            Topic::Post(PostId::from_trusted(12)),
            Topic::Outbox(UserId::from_trusted(3)),
        ];

        let decoded = decode(&encode(1_700_000_000_123_456, &topics));

        assert_eq!(decoded, Some((1_700_000_000_123_456, topics.to_vec())));
    }

    #[test]
    fn a_message_with_anything_unknown_is_not_understood() {
        for junk in ["", "abc p1", "123 p1 zz9", "123 p"] {
            assert_eq!(decode(junk), None, "{junk:?}");
        }
    }
}
