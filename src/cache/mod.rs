//! The cache in the service's terms: post and user objects by id, and the pages of a listing.
//!
//! [`Cache`] is one enum over the tiers, so "no cache" is a variant and not an `Option` threaded
//! through the callers. Every operation is best effort: a failure or timeout is counted, logged
//! and answered as a miss, and the caller serves from PostgreSQL. Key strings are built in `keys`
//! only.

mod boxes;
mod cluster;
pub mod keys;
mod redis;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use self::cluster::CacheError;
pub use self::keys::{BoxKey, CachedObject, FeedEntry, Keys, ListingKey};
pub use self::redis::RedisCache;
use crate::config::{CacheMode, CacheSettings};
use crate::domain::{PageRequest, PostId, UserId};
use crate::metrics::Metrics;

/// A cached page: the ids of its posts, newest first, and whether older posts exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPage {
    pub ids: Vec<PostId>,
    pub has_more: bool,
}

/// A listing's generation as seen by a page look-up: the token a page fill must present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation(String);

/// What one look-up of a page found.
#[derive(Debug)]
pub struct PageLookup {
    /// The page, when cached.
    pub page: Option<CachedPage>,
    /// The listing's generation seen in the same round trip; a page read from PostgreSQL after
    /// this look-up may be cached only while the generation is unchanged. `None`: the look-up
    /// failed (or there is no cache), so the page must not be cached.
    pub generation: Option<Generation>,
}

/// What a box held, as far as a read asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxRead {
    /// The box holds every entry of its source (nothing older exists outside it).
    pub complete: bool,
    /// For an inbox: the celebrities whose outboxes complete the reader's feed.
    pub celebs: Vec<UserId>,
    /// Entries older than the read's bound, newest first.
    pub entries: Vec<FeedEntry>,
}

/// What reading one box found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxLookup {
    /// The box was never built, expired, was evicted or dropped: rebuild it.
    Missing,
    /// The box exists.
    Found(BoxRead),
    /// Its node failed or timed out: serve from PostgreSQL, rebuild nothing.
    Failed,
}

/// Proof that this rebuild, and no other since, may store its box.
#[derive(Debug)]
pub struct RebuildToken(String);

/// How the cache tier answered a health probe.
#[derive(Debug)]
pub enum CacheHealth {
    /// `CACHE=off`.
    Disabled,
    /// No connection to the cluster, or no topology known yet.
    Unreachable,
    /// One entry per master of the last known topology.
    Masters(Vec<NodeHealth>),
}

/// One master's answer to a ping.
#[derive(Debug)]
pub struct NodeHealth {
    /// `host:port`.
    pub node: String,
    /// The round trip, or why there was none.
    pub outcome: Result<Duration, String>,
}

/// The feed's cache: one variant per tier arrangement.
#[derive(Clone)]
pub enum Cache {
    /// Nothing is cached (`CACHE=off`); every read goes to PostgreSQL.
    None,
    /// The Redis Cluster.
    Redis(RedisCache),
}

impl Cache {
    /// The cache `settings` ask for. A cluster that is down does not fail this: it keeps
    /// reconnecting in the background while reads go to PostgreSQL.
    ///
    /// # Errors
    /// A seed URL in `REDIS_URLS` cannot be parsed.
    pub async fn connect(
        settings: &CacheSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CacheError> {
        Ok(match settings.mode {
            CacheMode::Off => Self::None,
            CacheMode::On => Self::Redis(RedisCache::connect(settings, metrics).await?),
        })
    }

    /// Whether anything is cached at all (`false` makes every response `X-Cache: BYPASS`).
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Reads objects by id; a miss or a failure is `None` at that position.
    pub async fn objects<T: CachedObject>(&self, ids: &[T::Id]) -> Vec<Option<T>> {
        match self {
            Self::None => ids.iter().map(|_| None).collect(),
            Self::Redis(redis) => redis.objects(ids).await,
        }
    }

    /// Reads objects by id as the JSON they are cached as, without decoding them; a miss or a
    /// failure is `None` at that position.
    pub async fn objects_json<T: CachedObject>(&self, ids: &[T::Id]) -> Vec<Option<Box<RawValue>>> {
        match self {
            Self::None => ids.iter().map(|_| None).collect(),
            Self::Redis(redis) => redis.objects_json::<T>(ids).await,
        }
    }

    /// Reads one object by id.
    pub async fn object<T: CachedObject>(&self, id: T::Id) -> Option<T> {
        self.objects(&[id]).await.pop().flatten()
    }

    /// Caches objects a reader loaded from PostgreSQL, each unless a newer version is cached.
    pub async fn fill<T: CachedObject>(&self, objects: &[&T]) {
        if let Self::Redis(redis) = self {
            redis.fill(objects).await;
        }
    }

    /// Writes an object a writer just committed, so the next read sees it and no reader holding
    /// an older version can replace it.
    ///
    /// # Errors
    /// The write did not reach Redis; an older cached version may be served until the object TTL.
    pub async fn put<T: CachedObject>(&self, object: &T) -> Result<(), CacheError> {
        match self {
            Self::None => Ok(()),
            Self::Redis(redis) => redis.put(object).await,
        }
    }

    /// Replaces a deleted object with a tombstone newer than its last version: reads miss, and
    /// no reader holding the deleted row can fill it back.
    ///
    /// # Errors
    /// The tombstone did not reach Redis; the deleted object may be served until the object TTL.
    pub async fn forget<T: CachedObject>(&self, deleted: &T) -> Result<(), CacheError> {
        match self {
            Self::None => Ok(()),
            Self::Redis(redis) => redis.forget(deleted).await,
        }
    }

    /// Looks a page of a listing up, with the listing's generation, in one round trip.
    pub async fn lookup_page(&self, listing: ListingKey, page: PageRequest) -> PageLookup {
        match self {
            Self::None => PageLookup {
                page: None,
                generation: None,
            },
            Self::Redis(redis) => redis.lookup_page(listing, page).await,
        }
    }

    /// Caches a page read from PostgreSQL, unless the listing changed since `generation` was read.
    pub async fn store_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        generation: &Generation,
        cached: &CachedPage,
    ) {
        if let Self::Redis(redis) = self {
            redis.store_page(listing, page, generation, cached).await;
        }
    }

    /// Drops every cached page of a listing and bumps its generation, in one atomic round trip
    /// whatever the number of pages.
    ///
    /// # Errors
    /// The invalidation did not reach Redis; the pages expire within the list TTL anyway.
    pub async fn invalidate_listing(&self, listing: ListingKey) -> Result<(), CacheError> {
        match self {
            Self::None => Ok(()),
            Self::Redis(redis) => redis.invalidate_listing(listing).await,
        }
    }

    /// Reads up to `count` entries older than `after` from each box, one pipeline per node.
    pub async fn read_boxes(
        &self,
        boxes: &[BoxKey],
        after: Option<FeedEntry>,
        count: usize,
    ) -> Vec<BoxLookup> {
        match self {
            Self::None => boxes.iter().map(|_| BoxLookup::Failed).collect(),
            Self::Redis(redis) => redis.read_boxes(boxes, after, count).await,
        }
    }

    /// Appends a new post's entry to every box that exists; returns the boxes whose node did not
    /// answer (the caller must not leave them without the post).
    pub async fn append_to_boxes(&self, boxes: &[BoxKey], entry: FeedEntry) -> Vec<BoxKey> {
        match self {
            Self::None => Vec::new(),
            Self::Redis(redis) => redis.append(boxes, entry).await,
        }
    }

    /// Removes a deleted post's entry from every box; returns the boxes whose node did not answer.
    pub async fn remove_from_boxes(&self, boxes: &[BoxKey], entry: FeedEntry) -> Vec<BoxKey> {
        match self {
            Self::None => Vec::new(),
            Self::Redis(redis) => redis.remove(boxes, entry).await,
        }
    }

    /// Deletes boxes, so their next read rebuilds them; returns those whose node did not answer.
    pub async fn drop_boxes(&self, boxes: &[BoxKey]) -> Vec<BoxKey> {
        match self {
            Self::None => Vec::new(),
            Self::Redis(redis) => redis.drop_boxes(boxes).await,
        }
    }

    /// Claims the rebuild of a box, across instances; `None` when another rebuild holds it.
    pub async fn begin_rebuild(&self, key: BoxKey) -> Option<RebuildToken> {
        match self {
            Self::None => None,
            Self::Redis(redis) => redis.begin_rebuild(key).await,
        }
    }

    /// Stores a rebuilt box unless a write poisoned the rebuild; whether it was stored.
    pub async fn store_box(
        &self,
        key: BoxKey,
        token: &RebuildToken,
        entries: &[FeedEntry],
        complete: bool,
        celebs: &[UserId],
    ) -> bool {
        match self {
            Self::None => false,
            Self::Redis(redis) => redis.store_box(key, token, entries, complete, celebs).await,
        }
    }

    /// The most entries a box keeps.
    pub fn box_cap(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Redis(redis) => redis.box_cap as usize,
        }
    }

    /// Pings the tier.
    pub async fn health(&self) -> CacheHealth {
        match self {
            Self::None => CacheHealth::Disabled,
            Self::Redis(redis) => redis.health().await,
        }
    }
}
