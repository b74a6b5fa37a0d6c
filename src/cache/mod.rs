//! The Redis Cluster cache, in the service's terms: pages of post ids, post and user objects.
//!
//! Every operation is best effort. A failure or timeout is counted, logged and returned as a miss;
//! the caller serves from PostgreSQL. See `keys` for the layout.

mod cluster;
pub mod keys;

use rand::Rng as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use cluster::{CacheError, ClusterCache};
pub use keys::Keys;

use crate::config::CacheSettings;
use crate::domain::{PageRequest, PostId, UserId};

/// A cached page: the ids of its posts, newest first, and whether older posts exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPage {
    pub ids: Vec<PostId>,
    pub has_more: bool,
}

/// What one look-up of a page found.
#[derive(Debug)]
pub struct PageLookup {
    /// The page, when cached.
    pub page: Option<CachedPage>,
    /// The user's page generation seen in the same round trip; a page read from PostgreSQL after
    /// this look-up may be cached only while the generation is unchanged. `None`: the look-up failed,
    /// so the page must not be cached.
    pub generation: Option<String>,
}

/// Caches a page only if no write bumped the user's generation since the page's look-up.
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

/// The feed's cache.
#[derive(Clone)]
pub struct Cache {
    cluster: ClusterCache,
    keys: Keys,
    list_ttl_secs: u64,
    object_ttl_secs: u64,
    store_page: std::sync::Arc<redis::Script>,
}

impl Cache {
    /// Wraps a cluster connection with the deployment's key prefix and lifetimes.
    pub fn new(cluster: ClusterCache, settings: &CacheSettings) -> Self {
        Self {
            cluster,
            keys: Keys::new(settings.key_prefix.clone()),
            list_ttl_secs: settings.list_ttl_secs,
            object_ttl_secs: settings.object_ttl_secs,
            store_page: std::sync::Arc::new(redis::Script::new(STORE_PAGE_LUA)),
        }
    }

    /// The keys of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying cluster handle (health checks).
    pub fn cluster(&self) -> &ClusterCache {
        &self.cluster
    }

    /// Looks a page up and reads the user's generation, in one round trip to the user's node.
    #[tracing::instrument(skip(self))]
    pub async fn lookup_page(&self, user: UserId, page: PageRequest) -> PageLookup {
        let pages_key = self.keys.user_pages(user);
        let mut pipe = redis::pipe();
        pipe.hget(&pages_key, Keys::page_field(page))
            .get(self.keys.user_generation(user));
        let replies: Result<(Option<Vec<u8>>, Option<String>), CacheError> =
            self.cluster.single_slot(&pages_key, &pipe).await;
        match replies {
            Ok((raw, generation)) => PageLookup {
                page: raw.and_then(|raw| decode(&raw)),
                generation: Some(generation.unwrap_or_default()),
            },
            Err(_) => PageLookup {
                page: None,
                generation: None,
            },
        }
    }

    /// Caches a page read from PostgreSQL, unless a write bumped the generation meanwhile.
    #[tracing::instrument(skip(self, cached))]
    pub async fn store_page(
        &self,
        user: UserId,
        page: PageRequest,
        generation: &str,
        cached: &CachedPage,
    ) {
        let pages_key = self.keys.user_pages(user);
        let generation_key = self.keys.user_generation(user);
        let value = serde_json::to_vec(cached).expect("a page of ids always serializes");
        let mut invocation = self.store_page.prepare_invoke();
        invocation
            .key(&pages_key)
            .key(&generation_key)
            .arg(generation)
            .arg(Keys::page_field(page))
            .arg(value)
            .arg(self.list_ttl_secs);
        let stored: Result<i64, CacheError> = self.cluster.script(&pages_key, invocation).await;
        if matches!(stored, Ok(0)) {
            tracing::debug!("page not cached: the user wrote since it was read");
        }
    }

    /// Drops every cached page of a user and bumps the generation: one atomic round trip, whatever
    /// the number of pages.
    ///
    /// # Errors
    /// The invalidation did not reach Redis; the pages expire within the list TTL anyway.
    #[tracing::instrument(skip(self))]
    pub async fn invalidate_user_pages(&self, user: UserId) -> Result<(), CacheError> {
        let pages_key = self.keys.user_pages(user);
        let generation_key = self.keys.user_generation(user);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&generation_key, 1)
            .ignore()
            .expire(&generation_key, (self.list_ttl_secs + 60) as i64)
            .ignore()
            .del(&pages_key)
            .ignore();
        self.cluster.single_slot::<()>(&pages_key, &pipe).await
    }

    /// Reads objects stored under `keys` (spread over the cluster); a miss or failure is `None`.
    pub async fn get_objects<T: DeserializeOwned>(&self, keys: &[String]) -> Vec<Option<T>> {
        self.cluster
            .get_many(keys)
            .await
            .into_iter()
            .map(|raw| raw.and_then(|raw| decode(&raw)))
            .collect()
    }

    /// Writes objects with the object TTL (±10% jitter, so a bulk fill does not expire at once).
    pub async fn put_objects<T: Serialize>(&self, objects: &[(String, &T)]) {
        if objects.is_empty() {
            return;
        }
        let entries: Vec<(String, Vec<u8>, u64)> = {
            let mut rng = rand::rng();
            objects
                .iter()
                .map(|(key, object)| {
                    let jitter = self.object_ttl_secs / 10;
                    let ttl = self.object_ttl_secs - jitter + rng.random_range(0..=2 * jitter);
                    let value = serde_json::to_vec(object).expect("domain objects serialize");
                    (key.clone(), value, ttl.max(1))
                })
                .collect()
        };
        self.cluster.set_many(&entries).await;
    }

    /// The keys of these posts' objects.
    pub fn post_keys(&self, ids: &[PostId]) -> Vec<String> {
        ids.iter().map(|&id| self.keys.post(id)).collect()
    }
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
