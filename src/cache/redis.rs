//! The Redis Cluster tier: the cache's operations as Redis commands, keys from `keys.rs`, transport
//! from `cluster.rs`.

use std::sync::Arc;

use bytes::Bytes;
use rand::Rng as _;
use serde::de::DeserializeOwned;

use std::time::Duration;

use super::cluster::ClusterCache;
use super::error::CacheError;
use super::hot_keys::{HotKeys, HotReport};
use super::keys::{slot, CachedObject, Keys, ListingKey};
use super::options::{CacheOptions, Fetch};
use super::types::{CacheHealth, CachedPage, Generation, NodeHealth, PageLookup};
use crate::domain::{PageRequest, PostId};
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// Caches a page only if no write bumped the listing's generation since the page's look-up.
/// KEYS: pages hash, generation. ARGV: generation seen ('' for none), field, page, ttl seconds.
/// The hash's TTL is set when it is created and never extended, so every page in it is at most
/// `ttl` old: that bounds how long a lost invalidation (failover) can serve a stale page.
const STORE_PAGE_LUA: &str = r"
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
";

/// Renews a pages hash with one freshly read page: the hash is replaced by one that holds only
/// this page, with a full TTL, so no page in it is older than the TTL (the bound stays). Refused
/// when the listing changed since the page's look-up, or when the hash has more than ARGV[6] ms
/// left (another reader renewed it first). KEYS: pages hash, generation. ARGV: generation seen,
/// field, page, ttl seconds, renewed-after ms.
const REFRESH_PAGE_LUA: &str = r"
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then return 0 end
if redis.call('PTTL', KEYS[1]) > tonumber(ARGV[5]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
";

/// Writes a versioned object unless its key already holds that version or a newer one, or the
/// tombstone of a newer one: a reader that loaded a row before a write can never put it back after
/// the write's own value. KEYS: object key. ARGV: version, value, ttl seconds. Values are
/// `<version>|<json>`; a tombstone (deleted object) is `<version>|`.
const PUT_VERSIONED_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local held = tonumber(string.match(current, '^(%-?%d+)|'))
  if held and held >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// A page look-up's replies: the page, the generation, and the hash's TTL in ms when asked.
type LookupReplies = (Option<Vec<u8>>, Option<String>, Option<i64>);

/// Pause before an invalidation's second and last attempt.
const INVALIDATION_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// The Redis Cluster tier; cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    pub(super) cluster: ClusterCache,
    pub(super) keys: Keys,
    /// `CACHE_FETCH`: how a page's posts are read.
    fetch: Fetch,
    list_ttl_secs: u64,
    object_ttl_secs: u64,
    pub(super) box_cap: u32,
    pub(super) box_ttl_secs: u64,
    /// Hot-key detection of this instance's reads, whichever tier answers them.
    pub(super) hot: Arc<HotKeys>,
    /// `CACHE_EARLY_REFRESH_MS`; zero when off.
    early_refresh: Duration,
    store_page: Arc<redis::Script>,
    refresh_page: Arc<redis::Script>,
    put_versioned: Arc<redis::Script>,
}

impl RedisCache {
    /// Connects to the cluster (see [`ClusterCache::connect`]) with the deployment's key prefix
    /// and lifetimes.
    ///
    /// # Errors
    /// A seed URL in `REDIS_URLS` cannot be parsed.
    pub async fn connect(
        settings: &CacheOptions,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Result<Self, CacheError> {
        let cluster = ClusterCache::connect(settings, metrics, tasks).await?;
        Ok(Self {
            cluster,
            keys: Keys::of(settings),
            fetch: settings.fetch,
            list_ttl_secs: settings.list_ttl_secs,
            object_ttl_secs: settings.object_ttl_secs,
            box_cap: settings.box_cap,
            box_ttl_secs: settings.box_ttl_secs,
            hot: Arc::new(HotKeys::new(settings.hot_top_k, settings.hot_window)),
            early_refresh: settings.early_refresh,
            store_page: Arc::new(redis::Script::new(STORE_PAGE_LUA)),
            refresh_page: Arc::new(redis::Script::new(REFRESH_PAGE_LUA)),
            put_versioned: Arc::new(redis::Script::new(PUT_VERSIONED_LUA)),
        })
    }

    pub(super) async fn objects<T: CachedObject>(&self, ids: &[T::Id]) -> Vec<Option<T>> {
        let keys: Vec<String> = ids.iter().map(|&id| self.keys.object::<T>(id)).collect();
        self.cluster
            .get_many(&keys)
            .await
            .into_iter()
            .map(|raw| raw.and_then(|raw| decode_versioned(&raw)))
            .collect()
    }

    pub(super) async fn posts_json(&self, ids: &[PostId]) -> Vec<Option<Bytes>> {
        // Slots are not counted for post keys: they spread over every slot by design, and the
        // 50 of every page would cost a hit more than the detection of its page key.
        let keys: Vec<String> = ids.iter().map(|&id| self.keys.post(id)).collect();
        let found = match self.fetch {
            Fetch::Get => self.cluster.get_many(&keys).await,
            Fetch::BucketMget => self.cluster.mget_by_slot(&keys).await,
            Fetch::Mget => self.cluster.mget_cross_slot(&keys).await,
        };
        found
            .into_iter()
            .zip(ids)
            .map(|(raw, &id)| raw.and_then(|raw| versioned_json(raw, id)))
            .collect()
    }

    /// Counts reads of `keys` by slot, for the hot-key detection.
    pub(super) fn record_slots(&self, keys: &[String]) {
        for key in keys {
            self.hot.record_slot(slot(key.as_bytes()));
        }
    }

    pub(super) fn hot_report(&self) -> HotReport {
        self.hot
            .report(&self.keys, |slot| self.cluster.node_of_slot(slot))
    }

    /// Fills many objects at once, one pipeline of versioned writes per node. The script is sent
    /// with `EVAL` (the server caches it by digest), so a node that has never seen it, such as a
    /// freshly promoted replica, needs no `SCRIPT LOAD` first.
    pub(super) async fn fill<T: CachedObject>(&self, objects: &[&T]) {
        if objects.is_empty() {
            return;
        }
        let keys: Vec<String> = objects
            .iter()
            .map(|object| self.keys.object::<T>(object.id()))
            .collect();
        let entries: Vec<(i64, Vec<u8>, u64)> = objects
            .iter()
            .map(|object| {
                (
                    object.version(),
                    encode_versioned(*object),
                    self.object_ttl(),
                )
            })
            .collect();
        self.cluster
            .send_many(&keys, |i| {
                let (version, value, ttl) = &entries[i];
                let mut eval = redis::cmd("EVAL");
                eval.arg(PUT_VERSIONED_LUA)
                    .arg(1)
                    .arg(&keys[i])
                    .arg(*version)
                    .arg(value)
                    .arg(*ttl);
                eval
            })
            .await;
    }

    pub(super) async fn put<T: CachedObject>(&self, object: &T) -> Result<(), CacheError> {
        let value = encode_versioned(object);
        self.put_versioned(
            self.keys.object::<T>(object.id()),
            object.version(),
            value,
            self.object_ttl(),
        )
        .await
    }

    pub(super) async fn forget<T: CachedObject>(&self, object: &T) -> Result<(), CacheError> {
        // Newer than every version the row ever had, so no reader can fill over it.
        let version = object.version() + 1;
        let tombstone = format!("{version}|").into_bytes();
        self.put_versioned(
            self.keys.object::<T>(object.id()),
            version,
            tombstone,
            self.object_ttl_secs,
        )
        .await
    }

    async fn put_versioned(
        &self,
        key: String,
        version: i64,
        value: Vec<u8>,
        ttl: u64,
    ) -> Result<(), CacheError> {
        let mut invocation = self.put_versioned.prepare_invoke();
        invocation.key(&key).arg(version).arg(value).arg(ttl);
        let _written: i64 = self.cluster.script(&key, invocation).await?;
        Ok(())
    }

    /// The object TTL with ±10% jitter, so a bulk fill does not expire all at once.
    fn object_ttl(&self) -> u64 {
        let jitter = self.object_ttl_secs / 10;
        let ttl = self.object_ttl_secs - jitter + rand::rng().random_range(0..=2 * jitter);
        ttl.max(1)
    }

    /// The pages hash TTL less up to 10%, so the hot users' pages, filled together after a cold
    /// start, do not all expire in the same second; never more than `CACHE_LIST_TTL_SECS`, which
    /// stays the documented bound on a page's age.
    fn list_ttl(&self) -> u64 {
        let jitter = rand::rng().random_range(0..=self.list_ttl_secs / 10);
        (self.list_ttl_secs - jitter).max(1)
    }

    pub(super) async fn lookup_page(&self, listing: ListingKey, page: PageRequest) -> PageLookup {
        let pages_key = self.keys.pages(listing);
        self.hot.record_slot(slot(pages_key.as_bytes()));
        let mut pipe = redis::pipe();
        pipe.hget(&pages_key, Keys::page_field(page))
            .get(self.keys.generation(listing));
        let early_refresh = !self.early_refresh.is_zero();
        if early_refresh {
            pipe.pttl(&pages_key);
        }
        let replies: Result<LookupReplies, CacheError> = if early_refresh {
            self.cluster.single_slot(&pages_key, &pipe).await
        } else {
            self.cluster
                .single_slot(&pages_key, &pipe)
                .await
                .map(|(page, generation)| (page, generation, None))
        };
        match replies {
            Ok((raw, generation, pttl)) => PageLookup {
                page: raw.and_then(|raw| decode(&raw)),
                generation: Some(Generation(generation.unwrap_or_default())),
                expires_in: pttl
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(Duration::from_millis),
            },
            Err(_) => PageLookup {
                page: None,
                generation: None,
                expires_in: None,
            },
        }
    }

    /// Whether a read that found its page with `expires_in` left should refresh it now: with
    /// probability exp(-left / CACHE_EARLY_REFRESH_MS), so a page read often is refreshed by one
    /// read shortly before it expires and a page read rarely almost never early.
    pub(super) fn should_refresh(&self, expires_in: Duration) -> bool {
        if self.early_refresh.is_zero() {
            return false;
        }
        let left = expires_in.as_secs_f64() / self.early_refresh.as_secs_f64();
        rand::rng().random::<f64>() < (-left).exp()
    }

    pub(super) async fn refresh_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        generation: &Generation,
        cached: &CachedPage,
    ) -> bool {
        let pages_key = self.keys.pages(listing);
        let value = serde_json::to_vec(cached).expect("a page of ids always serializes");
        let renewed_after_ms = (self.list_ttl_secs * 1000) / 2;
        let mut invocation = self.refresh_page.prepare_invoke();
        invocation
            .key(&pages_key)
            .key(self.keys.generation(listing))
            .arg(&generation.0)
            .arg(Keys::page_field(page))
            .arg(value)
            .arg(self.list_ttl())
            .arg(renewed_after_ms);
        matches!(
            self.cluster.script::<i64>(&pages_key, invocation).await,
            Ok(1)
        )
    }

    pub(super) async fn store_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        generation: &Generation,
        cached: &CachedPage,
    ) {
        let pages_key = self.keys.pages(listing);
        let value = serde_json::to_vec(cached).expect("a page of ids always serializes");
        let mut invocation = self.store_page.prepare_invoke();
        invocation
            .key(&pages_key)
            .key(self.keys.generation(listing))
            .arg(&generation.0)
            .arg(Keys::page_field(page))
            .arg(value)
            .arg(self.list_ttl());
        let stored: Result<i64, CacheError> = self.cluster.script(&pages_key, invocation).await;
        if matches!(stored, Ok(0)) {
            tracing::debug!(
                ?listing,
                "page not cached: the listing changed since it was read"
            );
        }
    }

    /// Gives the listing a new generation, then drops its pages: two separate commands (not a
    /// `MULTI`), so a node that refuses the write of the generation (`maxmemory` under
    /// `noeviction`) still runs the `DEL`, which it never refuses. In this order a reader that
    /// looked the page up before the write either stores its page before the `DEL` (and loses
    /// it) or after the new generation (and is refused). The generation is a random 128-bit
    /// token, never a counter, so it cannot come back to a value a slow reader holds (ABA), even
    /// after its key expired. A failed attempt is retried once.
    pub(super) async fn invalidate_listing(&self, listing: ListingKey) -> Result<(), CacheError> {
        let pages_key = self.keys.pages(listing);
        let generation_key = self.keys.generation(listing);
        let mut outcome = Ok(());
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(INVALIDATION_RETRY_AFTER).await;
            }
            let token = format!("{:032x}", rand::rng().random::<u128>());
            let mut pipe = redis::pipe();
            pipe.set_ex(&generation_key, token, self.list_ttl_secs + 60)
                .ignore()
                .del(&pages_key)
                .ignore();
            outcome = self.cluster.single_slot::<()>(&pages_key, &pipe).await;
            if outcome.is_ok() {
                break;
            }
        }
        outcome
    }

    pub(super) async fn health(&self) -> CacheHealth {
        match self.cluster.ping_primaries().await {
            Err(_) => CacheHealth::Unreachable,
            Ok(pings) => CacheHealth::Masters(
                pings
                    .into_iter()
                    .map(|(node, outcome)| NodeHealth { node, outcome })
                    .collect(),
            ),
        }
    }
}

/// `<version>|<json>`, as [`PUT_VERSIONED_LUA`] reads it.
fn encode_versioned<T: CachedObject>(object: &T) -> Vec<u8> {
    let mut value = format!("{}|", object.version()).into_bytes();
    serde_json::to_writer(&mut value, object).expect("domain objects serialize");
    value
}

/// The object of a `<version>|<json>` value; a tombstone is `None` (a miss: PostgreSQL answers).
fn decode_versioned<T: DeserializeOwned>(raw: &[u8]) -> Option<T> {
    let Some(bar) = raw.iter().position(|&b| b == b'|') else {
        tracing::warn!("cached object without a version; treating it as a miss");
        return None;
    };
    let json = &raw[bar + 1..];
    if json.is_empty() {
        return None;
    }
    decode(json)
}

/// The JSON of a post's `<version>|<json>` value, not decoded and not copied (a view of the buffer
/// Redis's reply was read into); a tombstone is `None`. It is checked to be the object of `id` as
/// this service writes it (`{"id":<id>,…}`), not parsed: a full JSON check cost a hit more than
/// everything else it does with the posts (callgrind, docs/benchmarks.md comparison 11), and
/// what it would catch, a value neither written by this service nor under its prefix, this check
/// catches too unless it forges the shape.
fn versioned_json(raw: Vec<u8>, id: PostId) -> Option<Bytes> {
    let Some(bar) = raw.iter().position(|&b| b == b'|') else {
        tracing::warn!("cached object without a version; treating it as a miss");
        return None;
    };
    let json = &raw[bar + 1..];
    if json.is_empty() {
        return None;
    }
    let mut digits = itoa::Buffer::new();
    let is_this_post = json
        .strip_prefix(b"{\"id\":".as_slice())
        .and_then(|rest| rest.strip_prefix(digits.format(id.get()).as_bytes()))
        .is_some_and(|rest| rest.first() == Some(&b','));
    if !is_this_post || json.last() != Some(&b'}') {
        tracing::warn!(%id, "cached object is not this post as the service writes it; treating it as a miss");
        return None;
    }
    Some(Bytes::from(raw).slice(bar + 1..))
}

/// Decodes a cached JSON value; an undecodable one (another version wrote it) is a miss.
fn decode<T: DeserializeOwned>(raw: &[u8]) -> Option<T> {
    match serde_json::from_slice(raw) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%error, "undecodable cached value; treating it as a miss");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_post_is_served_only_if_it_is_that_post_as_the_service_writes_it() {
        let id = PostId::from_trusted(42);
        let value = |raw: &str| versioned_json(raw.as_bytes().to_vec(), id);

        assert_eq!(
            value("17|{\"id\":42,\"content\":\"x\"}").as_deref(),
            Some(&b"{\"id\":42,\"content\":\"x\"}"[..])
        );
        for (raw, why) in [
            ("17|", "a tombstone"),
            ("{\"id\":42}", "no version"),
            ("17|{\"id\":421,\"content\":\"x\"}", "another post"),
            ("17|{\"id\":4,\"content\":\"x\"}", "another post"),
            ("17|{\"id\":42,\"content\":\"x\"", "truncated"),
            ("17|[1,2]", "not an object of ours"),
        ] {
            assert_eq!(value(raw), None, "{why}: {raw}");
        }
    }
}
