//! The feed service: the one place that decides between cache and database.
//!
//! Reads go through the cache and fall back to PostgreSQL; writes go to PostgreSQL first, then
//! invalidate what they changed. Listings share one page pipeline (`pipeline.rs`); each listing
//! is a file of its own, dispatched by [`Listing`] (`listing.rs`).

mod boxes;
mod coalesce;
mod error;
mod health;
mod home_feed;
mod housekeeping;
mod listing;
mod pipeline;
mod served;
mod user_posts;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxes::Boxes;
use coalesce::Coalescer;
pub use error::{Conflict, FeedError, Reference, Resource};
pub use health::{Health, Overall, PostgresHealth, RedisStatus};
pub use listing::{Change, Listing};
use pipeline::JsonPage;
use served::timed;
pub use served::{CacheOutcome, Served, Timings};

// What the feed's answers carry from the layers below, so that callers name them through the
// feed (the cache's health and hot-key report, the store's choice of follow list).
pub use crate::cache::{
    CacheHealth, HotKeyEntry, HotReport, HotSlotEntry, HotUserEntry, NodeHealth, ShardView,
};
pub use crate::store::FollowList;

use crate::cache::{Cache, CachedObject, Generation, ListingKey};
use crate::domain::{
    ApiKey, Follow, IdempotencyKey, KeyHash, NewPost, NewUser, Page, PageRequest, Post, PostEdit,
    PostId, User, UserEdit, UserId, IDEMPOTENCY_KEY_TTL,
};
use crate::metrics::{zero_series, Metrics};
use crate::store::{Constraint, IdempotencyScope, Idempotent, Once, Store, StoreError};
use crate::tasks::Tasks;

/// Longest a readiness probe waits on PostgreSQL.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The feed service; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    store: Store,
    cache: Cache,
    metrics: Arc<Metrics>,
    /// Page misses being read from PostgreSQL, by listing, page and generation seen.
    page_flights: Coalescer<PageFlight, Arc<JsonPage>>,
    /// Post objects being read from PostgreSQL after a miss, by the sorted ids missing.
    object_flights: Coalescer<Vec<PostId>, Arc<PostsJson>>,
    /// Single posts and users being read from PostgreSQL after a miss (`GET /posts/{id}`,
    /// `GET /users/{id}`); `None` when PostgreSQL has no such row.
    post_flights: Coalescer<PostId, Option<Post>>,
    user_flights: Coalescer<UserId, Option<User>>,
    /// Pages being refreshed early by this instance: one refresh each.
    refreshing: Arc<Mutex<HashSet<(ListingKey, PageRequest)>>>,
    /// The home feed's boxes and their repair.
    boxes: Boxes,
    /// Where the feed's background work runs (early refreshes, housekeeping).
    tasks: Tasks,
}

/// Posts by id, as the JSON the API answers with.
type PostsJson = HashMap<PostId, bytes::Bytes>;

/// What makes a coalesced page read valid for a joiner: see `coalesce.rs`.
type PageFlight = (ListingKey, PageRequest, Generation);

/// What a create answered: the resource, and whether an earlier request with the same
/// idempotency key created it (this one created nothing).
#[derive(Debug)]
pub struct Created<T> {
    pub value: T,
    pub replayed: bool,
}

/// A new user and their API key, in clear this once.
#[derive(Debug)]
pub struct Account {
    pub user: User,
    pub api_key: ApiKey,
}

impl Feed {
    /// A feed over `store`, cached by `cache` (which may be [`Cache::None`]); authors with
    /// `celebrity_followers` or more followers are pulled by their readers, not pushed.
    pub fn new(
        store: Store,
        cache: Cache,
        metrics: Arc<Metrics>,
        celebrity_followers: u32,
        tasks: &Tasks,
    ) -> Self {
        zero_series(&metrics.pages, CacheOutcome::ALL.map(CacheOutcome::label));
        zero_series(&metrics.feed_sources, ["inbox", "pulled", "database"]);
        zero_series(&metrics.feed_rebuilds, ["inbox", "outbox"]);
        zero_series(&metrics.early_refreshes, ["renewed", "skipped", "failed"]);
        let waits = |kind: &str| metrics.coalesced_waits.with_label_values(&[kind]);
        let page_flights = Coalescer::new(waits("page"));
        let object_flights = Coalescer::new(waits("objects"));
        let post_flights = Coalescer::new(waits(<Post as CachedObject>::KIND));
        let user_flights = Coalescer::new(waits(<User as CachedObject>::KIND));
        let boxes = Boxes::new(
            cache.clone(),
            store.clone(),
            Arc::clone(&metrics),
            celebrity_followers,
            tasks.clone(),
        );
        Self {
            store,
            cache,
            metrics,
            page_flights,
            object_flights,
            post_flights,
            user_flights,
            refreshing: Arc::default(),
            boxes,
            tasks: tasks.clone(),
        }
    }

    /// Whether the in-process tier is on (`L1=on` with the cache on).
    pub fn local_tier_on(&self) -> bool {
        self.cache.local().is_some()
    }

    /// The cluster's shards as this instance last saw them (empty without Redis).
    pub fn shards(&self) -> Vec<ShardView> {
        self.cache.shards()
    }

    /// The hottest keys, users and slots of this instance's reads (empty without a cache).
    pub fn hot_report(&self) -> HotReport {
        self.cache.hot_report().unwrap_or_default()
    }

    /// Probes both backends at once.
    pub async fn health(&self) -> Health {
        let postgres = async {
            match tokio::time::timeout(DB_PROBE_TIMEOUT, self.store.ping()).await {
                Ok(Ok(latency)) => PostgresHealth::Up(latency),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "health: PostgreSQL probe failed");
                    PostgresHealth::Down("query failed")
                }
                Err(_) => PostgresHealth::Down("timed out"),
            }
        };
        let (postgres, redis) = futures::join!(postgres, self.cache.health());
        Health { postgres, redis }
    }

    /// Closes the database pools (at shutdown).
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Reads one post through the object cache.
    ///
    /// # Errors
    /// [`FeedError::NotFound`]; PostgreSQL failures.
    #[tracing::instrument(skip(self))]
    pub async fn post(&self, id: PostId) -> Result<Served<Post>, FeedError> {
        self.read_through(
            id,
            Resource::Post(id),
            &self.post_flights,
            move |store| async move { Ok(store.posts_by_ids(&[id]).await?.pop()) },
        )
        .await
    }

    /// Reads one user through the object cache.
    ///
    /// # Errors
    /// [`FeedError::NotFound`]; PostgreSQL failures.
    #[tracing::instrument(skip(self))]
    pub async fn user(&self, id: UserId) -> Result<Served<User>, FeedError> {
        self.read_through(
            id,
            Resource::User(id),
            &self.user_flights,
            move |store| async move { store.user_by_id(id).await },
        )
        .await
    }

    /// Creates a user with an API key, once per idempotency key. A repeat answers with the user
    /// its first request created and a new key for them: the first key was shown once and is not
    /// kept in clear, so it cannot be shown again (both keys work).
    ///
    /// # Errors
    /// [`FeedError::Conflict`] when the username is taken; [`FeedError::IdempotencyKeyReused`];
    /// PostgreSQL failures.
    pub async fn create_user(
        &self,
        user: &NewUser,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created<Account>, FeedError> {
        let _admitted = self.store.admit()?;
        let api_key = ApiKey::generate();
        let once = key.map(|key| Idempotent {
            scope: IdempotencyScope::Users,
            key,
            fingerprint: user.fingerprint(),
            ttl: IDEMPOTENCY_KEY_TTL,
        });
        let (user, replayed) = match self
            .store
            .insert_user(user, &api_key, once.as_ref())
            .await?
        {
            Once::Created(user) => (user, false),
            Once::Replayed(user) => {
                self.store.insert_api_key(user.id, &api_key).await?;
                (user, true)
            }
            Once::KeyReused => return Err(FeedError::IdempotencyKeyReused),
        };
        Ok(Created {
            value: Account { user, api_key },
            replayed,
        })
    }

    /// Issues another API key for an existing user (`hotfeed api-key`).
    ///
    /// # Errors
    /// [`FeedError::NotFound`] when the user does not exist; PostgreSQL failures.
    pub async fn issue_api_key(&self, user: UserId) -> Result<ApiKey, FeedError> {
        let api_key = ApiKey::generate();
        match self.store.insert_api_key(user, &api_key).await {
            Ok(()) => Ok(api_key),
            Err(StoreError::ForeignKey(Constraint::ApiKeyUser)) => {
                Err(FeedError::NotFound(Resource::User(user)))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The user an API key (by its hash) acts as; `None` for a key nobody holds.
    ///
    /// # Errors
    /// PostgreSQL failures.
    pub async fn api_key_owner(&self, key: &KeyHash) -> Result<Option<UserId>, FeedError> {
        Ok(self.store.api_key_owner(key).await?)
    }

    /// Who wrote a post, from PostgreSQL (the source of truth decides who may change it).
    ///
    /// # Errors
    /// [`FeedError::NotFound`]; PostgreSQL failures.
    pub async fn post_author(&self, id: PostId) -> Result<UserId, FeedError> {
        self.store
            .post_author(id)
            .await?
            .ok_or(FeedError::NotFound(Resource::Post(id)))
    }

    /// Creates a post, once per idempotency key, then caches it and invalidates the listings that
    /// show it before answering, so the next read of them shows it. The post is committed whatever
    /// happens to the cache. A repeat answers with the post its first request created, as first
    /// answered, and touches nothing.
    ///
    /// # Errors
    /// [`FeedError::InvalidReference`] when the author does not exist;
    /// [`FeedError::IdempotencyKeyReused`]; PostgreSQL failures.
    pub async fn create_post(
        &self,
        post: &NewPost,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created<Post>, FeedError> {
        let _admitted = self.store.admit()?;
        let once = key.map(|key| Idempotent {
            scope: IdempotencyScope::Posts(post.user_id),
            key,
            fingerprint: post.fingerprint(),
            ttl: IDEMPOTENCY_KEY_TTL,
        });
        let created = match self.store.insert_post(post, once.as_ref()).await? {
            Once::Created(created) => created,
            Once::Replayed(value) => {
                return Ok(Created {
                    value,
                    replayed: true,
                })
            }
            Once::KeyReused => return Err(FeedError::IdempotencyKeyReused),
        };
        // Independent keys: both done before the answer, neither waits on the other's budget.
        futures::join!(
            self.publish(&created),
            self.invalidate(Change::PostCreated(&created))
        );
        Ok(Created {
            value: created,
            replayed: false,
        })
    }

    /// Replaces a post's content; the cached object is rewritten with the new version before
    /// answering, so no later read, here or on another instance, sees the old content.
    ///
    /// # Errors
    /// [`FeedError::NotFound`]; PostgreSQL failures.
    pub async fn edit_post(&self, id: PostId, edit: &PostEdit) -> Result<Post, FeedError> {
        let _admitted = self.store.admit()?;
        let edited = self
            .store
            .update_post(id, edit)
            .await?
            .ok_or(FeedError::NotFound(Resource::Post(id)))?;
        // Independent keys: both done before the answer, neither waits on the other's budget.
        futures::join!(
            self.publish(&edited),
            self.invalidate(Change::PostEdited(&edited))
        );
        Ok(edited)
    }

    /// Deletes a post; its cached object becomes a tombstone and the listings that showed it are
    /// invalidated before answering.
    ///
    /// # Errors
    /// [`FeedError::NotFound`]; PostgreSQL failures.
    pub async fn delete_post(&self, id: PostId) -> Result<(), FeedError> {
        let _admitted = self.store.admit()?;
        let deleted = self
            .store
            .delete_post(id)
            .await?
            .ok_or(FeedError::NotFound(Resource::Post(id)))?;
        if let Err(error) = self.cache.forget(&deleted).await {
            tracing::error!(%error, post_id = %id, "post deleted but its cached object could not be replaced; it may be served until the object TTL");
        }
        self.invalidate(Change::PostDeleted(&deleted)).await;
        Ok(())
    }

    /// Replaces a user's display name; the cached object is rewritten before answering.
    ///
    /// # Errors
    /// [`FeedError::NotFound`]; PostgreSQL failures.
    pub async fn edit_user(&self, id: UserId, edit: &UserEdit) -> Result<User, FeedError> {
        let _admitted = self.store.admit()?;
        let edited = self
            .store
            .update_user(id, edit)
            .await?
            .ok_or(FeedError::NotFound(Resource::User(id)))?;
        // Independent keys: both done before the answer, neither waits on the other's budget.
        futures::join!(
            self.publish(&edited),
            self.invalidate(Change::UserEdited(&edited))
        );
        Ok(edited)
    }

    /// Makes `follow.follower` follow `follow.followee`; following again changes nothing.
    ///
    /// # Errors
    /// [`FeedError::NotFound`] naming the user that does not exist; PostgreSQL failures.
    pub async fn follow(&self, follow: Follow) -> Result<(), FeedError> {
        let _admitted = self.store.admit()?;
        let changed = self.store.follow(follow).await?;
        self.after_follows(follow, changed).await
    }

    /// Ends a follow; unfollowing again changes nothing.
    ///
    /// # Errors
    /// [`FeedError::NotFound`] naming the user that does not exist; PostgreSQL failures.
    pub async fn unfollow(&self, follow: Follow) -> Result<(), FeedError> {
        let _admitted = self.store.admit()?;
        let changed = self.store.unfollow(follow).await?;
        self.after_follows(follow, changed).await
    }

    /// One page of a user's follow list, most recent follow first.
    ///
    /// # Errors
    /// [`FeedError::NotFound`] when the user does not exist; PostgreSQL failures.
    pub async fn follows(
        &self,
        user: UserId,
        list: FollowList,
        page: PageRequest,
    ) -> Result<Page<User>, FeedError> {
        let _admitted = self.store.admit()?;
        let rows = self.store.follows_page(user, list, page).await?;
        if rows.users.is_empty() && !self.store.user_exists(user).await? {
            return Err(FeedError::NotFound(Resource::User(user)));
        }
        Ok(Page {
            data: rows.users,
            has_more: rows.has_more,
            limit: page.limit(),
            offset: None,
            next_cursor: rows.next,
        })
    }

    /// After a follow or unfollow: which user was missing, or the new counts published.
    async fn after_follows(&self, follow: Follow, changed: Option<bool>) -> Result<(), FeedError> {
        match changed {
            None => {
                let missing = if self.store.user_exists(follow.follower).await? {
                    follow.followee
                } else {
                    follow.follower
                };
                Err(FeedError::NotFound(Resource::User(missing)))
            }
            Some(false) => Ok(()),
            Some(true) => {
                let mut followee = None;
                for id in [follow.follower, follow.followee] {
                    if let Some(user) = self.store.user_by_id(id).await? {
                        self.publish(&user).await;
                        followee = Some(user);
                    }
                }
                if let Some(followee) = &followee {
                    self.invalidate(Change::Follows { follow, followee }).await;
                }
                Ok(())
            }
        }
    }

    /// Writes a committed object's new version to the cache.
    async fn publish<T: CachedObject>(&self, object: &T) {
        if let Err(error) = self.cache.put(object).await {
            tracing::error!(%error, "write saved but its cached object could not be rewritten; an older version may be served until the object TTL");
        }
    }

    /// Brings every listing's cache up to date with a committed write.
    async fn invalidate(&self, change: Change<'_>) {
        Listing::apply(&self.cache, &self.metrics, &self.boxes, change).await;
    }

    /// Single-object read-through: cache, else PostgreSQL and fill, once for every concurrent
    /// miss of the same object in this instance (the leader looks the cache up again first, as
    /// the page flights do). A joiner may take a row its flight read just before a write ended
    /// only if that write's own cache put was lost: otherwise the joiner's look-up, after the
    /// write, found the new version.
    async fn read_through<T, F, Fut>(
        &self,
        id: T::Id,
        resource: Resource,
        flights: &Coalescer<T::Id, Option<T>>,
        load: F,
    ) -> Result<Served<T>, FeedError>
    where
        T: CachedObject + Clone + 'static,
        T::Id: std::hash::Hash + Eq + 'static,
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>> + Send + 'static,
    {
        let mut timings = Timings::default();
        if !self.cache.is_enabled() {
            let _admitted = self.store.admit()?;
            let value = timed(&mut timings.db, load(self.store.clone()))
                .await?
                .ok_or(FeedError::NotFound(resource))?;
            return Ok(Served {
                value,
                cache: CacheOutcome::Bypass,
                timings,
                source: None,
            });
        }
        if let Some(value) = timed(&mut timings.redis, self.cache.object::<T>(id)).await {
            return Ok(Served {
                value,
                cache: CacheOutcome::Hit,
                timings,
                source: None,
            });
        }
        let feed = self.clone();
        let lead = async move {
            let mut timings = Timings::default();
            if let Some(value) = timed(&mut timings.redis, feed.cache.object::<T>(id)).await {
                return Ok((Some(value), timings));
            }
            let _admitted = feed.store.admit()?;
            let value = timed(&mut timings.db, load(feed.store.clone())).await?;
            if let Some(value) = &value {
                timed(&mut timings.redis, feed.cache.fill(&[value])).await;
            }
            Ok((value, timings))
        };
        let value = flights.read(id, &mut timings, lead).await?;
        Ok(Served {
            value: value.ok_or(FeedError::NotFound(resource))?,
            cache: CacheOutcome::Miss,
            timings,
            source: None,
        })
    }
}

/// Locks a mutex whose data stays valid if a holder panicked (sets of keys).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
