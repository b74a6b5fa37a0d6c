//! The cache in the service's terms: post and user objects by id, and the pages of a listing.
//!
//! [`Cache`] is one enum over the tiers, so "no cache" is a variant and not an `Option` threaded
//! through the callers. Every operation is best effort: a failure or timeout is counted, logged
//! and answered as a miss, and the caller serves from PostgreSQL. Key strings are built in `keys`
//! only.

mod boxes;
mod cluster;
mod error;
mod hot_keys;
mod invalidation;
pub mod keys;
mod local;
mod options;
mod redis;
mod tiered;
pub mod topology;
mod types;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use self::cluster::{drive_connections_on_this_thread, ShardView};
pub use self::error::CacheError;
pub use self::hot_keys::{HotKey, HotKeyEntry, HotKeys, HotReport, HotSlotEntry, HotUserEntry};
pub use self::keys::{BoxKey, CachedObject, FeedEntry, Keys, ListingKey};
pub use self::local::{LocalTier, Ticket, Topic};
pub use self::options::{CacheOptions, Fetch};
pub use self::redis::RedisCache;
pub use self::tiered::Tiered;
pub use self::types::{
    BoxLookup, BoxRead, CacheHealth, CachedPage, Generation, LocalPage, NodeHealth, PageLookup,
    RebuildToken,
};
use crate::domain::{PageBody, PageRequest, PostId, UserId};
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// The feed's cache: one variant per tier arrangement.
#[derive(Clone)]
pub enum Cache {
    /// Nothing is cached (`CACHE=off`); every read goes to PostgreSQL.
    None,
    /// The Redis Cluster.
    Redis(RedisCache),
    /// The in-process tier in front of the Redis Cluster (`L1=on`).
    Tiered(Tiered),
}

impl Cache {
    /// The cache `settings` ask for. A cluster that is down does not fail this: it keeps
    /// reconnecting in the background while reads go to PostgreSQL.
    ///
    /// # Errors
    /// A seed URL in `REDIS_URLS` cannot be parsed, or `REDIS_CA_CERT` cannot be read.
    pub async fn connect(
        settings: &CacheOptions,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Result<Self, CacheError> {
        if !settings.enabled {
            return Ok(Self::None);
        }
        let redis = RedisCache::connect(settings, Arc::clone(&metrics), tasks).await?;
        if !settings.l1 {
            return Ok(Self::Redis(redis));
        }
        let tiered = Tiered::new(redis, settings, metrics, tasks)?;
        Ok(Self::Tiered(tiered))
    }

    /// Whether anything is cached at all (`false` makes every response `X-Cache: BYPASS`).
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::None)
    }

    fn redis(&self) -> Option<&RedisCache> {
        match self {
            Self::None => None,
            Self::Redis(redis) => Some(redis),
            Self::Tiered(tiered) => Some(&tiered.redis),
        }
    }

    /// The hot-key detection of this instance's reads; `None` without a cache.
    pub fn hot_keys(&self) -> Option<&HotKeys> {
        self.redis().map(|redis| &*redis.hot)
    }

    /// Whether a Redis node has failed its last call (and not answered one since).
    pub fn is_failing(&self) -> bool {
        self.redis().is_some_and(|redis| redis.cluster.is_failing())
    }

    /// The cluster's shards as the client last saw them (empty without Redis).
    pub fn shards(&self) -> Vec<ShardView> {
        self.redis()
            .map(|redis| redis.cluster.shards())
            .unwrap_or_default()
    }

    /// The hottest keys, users and slots of this instance's reads; `None` without a cache.
    pub fn hot_report(&self) -> Option<HotReport> {
        self.redis().map(RedisCache::hot_report)
    }

    /// Whether a read that found its page with `expires_in` left should refresh it now
    /// (`CACHE_EARLY_REFRESH_MS`).
    pub fn should_refresh(&self, expires_in: Duration) -> bool {
        self.redis()
            .is_some_and(|redis| redis.should_refresh(expires_in))
    }

    /// The in-process tier, when there is one.
    pub fn local(&self) -> Option<&LocalTier> {
        match self {
            Self::Tiered(tiered) => Some(&tiered.local),
            _ => None,
        }
    }

    /// Reads objects by id; a miss or a failure is `None` at that position.
    pub async fn objects<T: CachedObject>(&self, ids: &[T::Id]) -> Vec<Option<T>> {
        match self.redis() {
            None => ids.iter().map(|_| None).collect(),
            Some(redis) => redis.objects(ids).await,
        }
    }

    /// Reads posts by id as the JSON they are cached as, without decoding them; a miss or a
    /// failure is `None` at that position.
    pub async fn posts_json(&self, ids: &[PostId]) -> Vec<Option<Bytes>> {
        match self {
            Self::None => ids.iter().map(|_| None).collect(),
            Self::Redis(redis) => {
                redis.hot.record_posts(ids);
                redis.posts_json(ids).await
            }
            Self::Tiered(tiered) => tiered.posts_json(ids).await,
        }
    }

    /// Reads one object by id.
    pub async fn object<T: CachedObject>(&self, id: T::Id) -> Option<T> {
        self.objects(&[id]).await.pop().flatten()
    }

    /// Caches objects a reader loaded from PostgreSQL, each unless a newer version is cached.
    pub async fn fill<T: CachedObject>(&self, objects: &[&T]) {
        if let Some(redis) = self.redis() {
            redis.fill(objects).await;
        }
    }

    /// Writes an object a writer just committed, so the next read sees it and no reader holding
    /// an older version can replace it; then evicts it (and what shows it) from the in-process
    /// tier of every instance.
    ///
    /// # Errors
    /// The write did not reach Redis; an older cached version may be served until the object TTL.
    pub async fn put<T: CachedObject>(&self, object: &T) -> Result<(), CacheError> {
        let Some(redis) = self.redis() else {
            return Ok(());
        };
        let written = redis.put(object).await;
        self.changed(&object.topics()).await;
        written
    }

    /// Replaces a deleted object with a tombstone newer than its last version: reads miss, and
    /// no reader holding the deleted row can fill it back.
    ///
    /// # Errors
    /// The tombstone did not reach Redis; the deleted object may be served until the object TTL.
    pub async fn forget<T: CachedObject>(&self, deleted: &T) -> Result<(), CacheError> {
        let Some(redis) = self.redis() else {
            return Ok(());
        };
        let written = redis.forget(deleted).await;
        self.changed(&deleted.topics()).await;
        written
    }

    /// Evicts `topics` from every instance's in-process tier, if there is one.
    async fn changed(&self, topics: &[Topic]) {
        if let Self::Tiered(tiered) = self {
            tiered.changed(topics);
        }
    }

    /// Looks a page up in the in-process tier (and counts the read for the hot-key detection,
    /// whatever the tier).
    pub fn local_page(&self, listing: ListingKey, page: PageRequest) -> LocalPage {
        match self {
            Self::None => LocalPage::Miss(None),
            Self::Redis(redis) => {
                redis.hot.record_page(listing);
                LocalPage::Miss(None)
            }
            Self::Tiered(tiered) => tiered.local_page(listing, page),
        }
    }

    /// Keeps a rendered page in the in-process tier if its listing is hot; `ticket` is what
    /// [`Cache::local_page`] gave before the page was read.
    pub fn keep_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        ticket: Ticket,
        body: &PageBody,
    ) {
        if let Self::Tiered(tiered) = self {
            tiered.keep_page(listing, page, ticket, body);
        }
    }

    /// Looks a page of a listing up, with the listing's generation, in one round trip.
    pub async fn lookup_page(&self, listing: ListingKey, page: PageRequest) -> PageLookup {
        match self.redis() {
            None => PageLookup {
                page: None,
                generation: None,
                expires_in: None,
            },
            Some(redis) => redis.lookup_page(listing, page).await,
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
        if let Some(redis) = self.redis() {
            redis.store_page(listing, page, generation, cached).await;
        }
    }

    /// Renews a listing's pages hash with a freshly read page, shortly before the hash expires
    /// (its other pages, with seconds left, go with it); unless the listing changed since
    /// `generation` or another reader renewed it first. Whether it renewed.
    pub async fn refresh_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        generation: &Generation,
        cached: &CachedPage,
    ) -> bool {
        match self.redis() {
            None => false,
            Some(redis) => redis.refresh_page(listing, page, generation, cached).await,
        }
    }

    /// Drops every cached page of a listing and bumps its generation, in one atomic round trip
    /// whatever the number of pages; then evicts the listing from every instance's in-process
    /// tier.
    ///
    /// # Errors
    /// The invalidation did not reach Redis; the pages expire within the list TTL anyway.
    pub async fn invalidate_listing(&self, listing: ListingKey) -> Result<(), CacheError> {
        let Some(redis) = self.redis() else {
            return Ok(());
        };
        let done = redis.invalidate_listing(listing).await;
        self.changed(&[Topic::Listing(listing)]).await;
        done
    }

    /// Reads up to `count` entries older than `after` from each box, one pipeline per node; a
    /// hot outbox is read from the in-process tier.
    pub async fn read_boxes(
        &self,
        boxes: &[BoxKey],
        after: Option<FeedEntry>,
        count: usize,
    ) -> Vec<BoxLookup> {
        match self {
            Self::None => boxes.iter().map(|_| BoxLookup::Failed).collect(),
            Self::Redis(redis) => {
                redis.hot.record_boxes(boxes);
                redis.read_boxes(boxes, after, count).await
            }
            Self::Tiered(tiered) => tiered.read_boxes(boxes, after, count).await,
        }
    }

    /// Appends a new post's entry to every box that exists; returns the boxes whose node did not
    /// answer (the caller must not leave them without the post).
    pub async fn append_to_boxes(&self, boxes: &[BoxKey], entry: FeedEntry) -> Vec<BoxKey> {
        let Some(redis) = self.redis() else {
            return Vec::new();
        };
        let failed = redis.append(boxes, entry).await;
        self.changed(&outbox_topics(boxes)).await;
        failed
    }

    /// Removes a deleted post's entry from every box; returns the boxes whose node did not answer.
    pub async fn remove_from_boxes(&self, boxes: &[BoxKey], entry: FeedEntry) -> Vec<BoxKey> {
        let Some(redis) = self.redis() else {
            return Vec::new();
        };
        let failed = redis.remove(boxes, entry).await;
        self.changed(&outbox_topics(boxes)).await;
        failed
    }

    /// Deletes boxes, so their next read rebuilds them; returns those whose node did not answer.
    pub async fn drop_boxes(&self, boxes: &[BoxKey]) -> Vec<BoxKey> {
        let Some(redis) = self.redis() else {
            return Vec::new();
        };
        let failed = redis.drop_boxes(boxes).await;
        self.changed(&outbox_topics(boxes)).await;
        failed
    }

    /// Claims the rebuild of a box, across instances; `None` when another rebuild holds it.
    pub async fn begin_rebuild(&self, key: BoxKey) -> Option<RebuildToken> {
        self.redis()?.begin_rebuild(key).await
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
        match self.redis() {
            None => false,
            Some(redis) => redis.store_box(key, token, entries, complete, celebs).await,
        }
    }

    /// The most entries a box keeps.
    pub fn box_cap(&self) -> usize {
        self.redis().map_or(0, |redis| redis.box_cap as usize)
    }

    /// Pings the tier.
    pub async fn health(&self) -> CacheHealth {
        match self.redis() {
            None => CacheHealth::Disabled,
            Some(redis) => redis.health().await,
        }
    }
}

/// The in-process topics of the outboxes among `boxes` (inboxes are never kept in-process).
fn outbox_topics(boxes: &[BoxKey]) -> Vec<Topic> {
    boxes
        .iter()
        .filter_map(|&key| match key {
            BoxKey::Outbox(author) => Some(Topic::Outbox(author)),
            BoxKey::Inbox(_) => None,
        })
        .collect()
}
