//! The read-through flow: page-of-ids cache -> post objects (scatter-gather by node) -> PostgreSQL
//! -> backfill. Writes go to PostgreSQL first, then invalidate.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::{Cache, CachedPage, Keys};
use crate::domain::{NewPost, NewUser, Page, PageRequest, Post, PostId, User, UserId};
use crate::metrics::Metrics;
use crate::store::Store;

/// How the cache served a response; the `X-Cache` header and the `cache` label of `feed_pages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Everything came from Redis.
    Hit,
    /// The page of ids came from Redis, some objects from PostgreSQL.
    Partial,
    /// Redis had nothing usable (or failed); PostgreSQL served it.
    Miss,
    /// The cache is switched off (`CACHE=off`).
    Bypass,
}

impl CacheOutcome {
    /// Header and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Partial => "PARTIAL",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

/// Time a request spent waiting on each backend; the `Server-Timing` header.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub redis: Duration,
    pub db: Duration,
}

/// A value with how it was served.
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    pub cache: CacheOutcome,
    pub timings: Timings,
}

/// The feed service: the one place that decides between cache and database.
#[derive(Clone)]
pub struct Feed {
    store: Store,
    cache: Option<Cache>,
    metrics: Arc<Metrics>,
}

impl Feed {
    /// `cache: None` serves everything from PostgreSQL.
    pub fn new(store: Store, cache: Option<Cache>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            cache,
            metrics,
        }
    }

    /// The database side, for health checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The cache, when enabled.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// One newest-first page of a user's posts; `None` when the user does not exist.
    ///
    /// A full hit costs two sequential Redis round trips: the page of ids (and the generation) from
    /// the user's node, then the objects from every node that holds some, in parallel.
    ///
    /// # Errors
    /// PostgreSQL errors only: a Redis failure is a miss.
    #[tracing::instrument(skip(self), fields(cache))]
    pub async fn user_posts(
        &self,
        user: UserId,
        page: PageRequest,
    ) -> Result<Option<Served<Page<Post>>>, sqlx::Error> {
        let mut timings = Timings::default();
        let Some(cache) = &self.cache else {
            let served = self.user_posts_from_db(user, page, &mut timings).await?;
            return Ok(self.finish_page(served, CacheOutcome::Bypass, timings));
        };

        let lookup = timed(&mut timings.redis, cache.lookup_page(user, page)).await;
        let user_label = self.metrics.user_label(user);
        if let Some(cached) = lookup.page {
            self.metrics
                .list_hits
                .with_label_values(&[&user_label])
                .inc();
            if let Some((posts, outcome)) =
                self.posts_for_ids(cache, &cached.ids, &mut timings).await?
            {
                let served = Page {
                    data: posts,
                    has_more: cached.has_more,
                    limit: page.limit(),
                    offset: page.offset(),
                };
                return Ok(self.finish_page(Some(served), outcome, timings));
            }
            // A listed post is gone from PostgreSQL: the cached page is stale, rebuild it.
        } else {
            self.metrics
                .list_misses
                .with_label_values(&[&user_label])
                .inc();
        }

        let served = self.user_posts_from_db(user, page, &mut timings).await?;
        if let (Some(served), Some(generation)) = (&served, lookup.generation.as_deref()) {
            let cached = CachedPage {
                ids: served.data.iter().map(|post| post.id).collect(),
                has_more: served.has_more,
            };
            let keys = cache.post_keys(&cached.ids);
            let objects: Vec<(String, &Post)> = keys.into_iter().zip(&served.data).collect();
            timed(
                &mut timings.redis,
                futures::future::join(
                    cache.put_objects(&objects),
                    cache.store_page(user, page, generation, &cached),
                ),
            )
            .await;
        }
        Ok(self.finish_page(served, CacheOutcome::Miss, timings))
    }

    /// Reads one post through the object cache.
    ///
    /// # Errors
    /// PostgreSQL errors only.
    #[tracing::instrument(skip(self))]
    pub async fn post(&self, id: PostId) -> Result<Served<Option<Post>>, sqlx::Error> {
        self.read_through(|keys| keys.post(id), "posts_by_ids", async {
            Ok(self.store.posts_by_ids(&[id]).await?.pop())
        })
        .await
    }

    /// Reads one user through the object cache.
    ///
    /// # Errors
    /// PostgreSQL errors only.
    #[tracing::instrument(skip(self))]
    pub async fn user(&self, id: UserId) -> Result<Served<Option<User>>, sqlx::Error> {
        self.read_through(
            |keys| keys.user(id),
            "user_by_id",
            self.store.user_by_id(id),
        )
        .await
    }

    /// Creates a user.
    ///
    /// # Errors
    /// A unique violation when the username is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<User, sqlx::Error> {
        self.count_query("insert_user");
        self.store.insert_user(user).await
    }

    /// Creates a post, then drops the author's cached pages before answering, so the author's next
    /// page read shows it. The post is committed whatever happens to the invalidation.
    ///
    /// # Errors
    /// A foreign key violation when the author does not exist.
    pub async fn create_post(&self, post: &NewPost) -> Result<Post, sqlx::Error> {
        self.count_query("insert_post");
        let created = self.store.insert_post(post).await?;
        if let Some(cache) = &self.cache {
            if let Err(error) = cache.invalidate_user_pages(created.user_id).await {
                tracing::error!(%error, user_id = %created.user_id, "post saved but its author's cached pages could not be invalidated; they expire within the list TTL");
            }
        }
        Ok(created)
    }

    /// Objects for a cached page of ids, missing ones read from PostgreSQL and written back.
    /// `None` when an id no longer exists in PostgreSQL (the page is stale).
    async fn posts_for_ids(
        &self,
        cache: &Cache,
        ids: &[PostId],
        timings: &mut Timings,
    ) -> Result<Option<(Vec<Post>, CacheOutcome)>, sqlx::Error> {
        let keys = cache.post_keys(ids);
        let found: Vec<Option<Post>> = timed(&mut timings.redis, cache.get_objects(&keys)).await;
        let missing: Vec<PostId> = ids
            .iter()
            .zip(&found)
            .filter(|(_, post)| post.is_none())
            .map(|(&id, _)| id)
            .collect();
        self.metrics
            .object_hits
            .inc_by((ids.len() - missing.len()) as u64);
        self.metrics.object_misses.inc_by(missing.len() as u64);
        if missing.is_empty() {
            let posts = found.into_iter().flatten().collect();
            return Ok(Some((posts, CacheOutcome::Hit)));
        }

        self.count_query("posts_by_ids");
        let loaded = timed(&mut timings.db, self.store.posts_by_ids(&missing)).await?;
        let backfill: Vec<(String, &Post)> = loaded
            .iter()
            .map(|post| (cache.keys().post(post.id), post))
            .collect();
        timed(&mut timings.redis, cache.put_objects(&backfill)).await;
        let loaded: HashMap<PostId, &Post> = loaded.iter().map(|post| (post.id, post)).collect();
        let posts: Option<Vec<Post>> = ids
            .iter()
            .zip(found)
            .map(|(id, cached)| cached.or_else(|| loaded.get(id).map(|&post| post.clone())))
            .collect();
        // `None`: a listed post is gone from PostgreSQL, so the cached page is stale.
        let Some(posts) = posts else { return Ok(None) };
        Ok(Some((posts, CacheOutcome::Partial)))
    }

    async fn user_posts_from_db(
        &self,
        user: UserId,
        page: PageRequest,
        timings: &mut Timings,
    ) -> Result<Option<Page<Post>>, sqlx::Error> {
        self.count_query("user_posts_page");
        let rows = timed(&mut timings.db, self.store.user_posts_page(user, page)).await?;
        if rows.posts.is_empty() {
            self.count_query("user_exists");
            if !timed(&mut timings.db, self.store.user_exists(user)).await? {
                return Ok(None);
            }
        }
        Ok(Some(Page {
            data: rows.posts,
            has_more: rows.has_more,
            limit: page.limit(),
            offset: page.offset(),
        }))
    }

    fn finish_page(
        &self,
        page: Option<Page<Post>>,
        cache: CacheOutcome,
        timings: Timings,
    ) -> Option<Served<Page<Post>>> {
        tracing::Span::current().record("cache", cache.as_str());
        self.metrics
            .pages
            .with_label_values(&[&cache.as_str().to_ascii_lowercase()])
            .inc();
        page.map(|value| Served {
            value,
            cache,
            timings,
        })
    }

    /// Single-object read-through: cache, else PostgreSQL and write back.
    async fn read_through<T, F>(
        &self,
        key: impl FnOnce(&Keys) -> String,
        query: &'static str,
        load: F,
    ) -> Result<Served<Option<T>>, sqlx::Error>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<Option<T>, sqlx::Error>>,
    {
        let mut timings = Timings::default();
        let Some(cache) = &self.cache else {
            self.count_query(query);
            let value = timed(&mut timings.db, load).await?;
            return Ok(Served {
                value,
                cache: CacheOutcome::Bypass,
                timings,
            });
        };
        let keys = [key(cache.keys())];
        let cached = timed(&mut timings.redis, cache.get_objects::<T>(&keys)).await;
        if let Some(value) = cached.into_iter().next().flatten() {
            return Ok(Served {
                value: Some(value),
                cache: CacheOutcome::Hit,
                timings,
            });
        }
        self.count_query(query);
        let value = timed(&mut timings.db, load).await?;
        if let Some(value) = &value {
            let [key] = keys;
            timed(&mut timings.redis, cache.put_objects(&[(key, value)])).await;
        }
        Ok(Served {
            value,
            cache: CacheOutcome::Miss,
            timings,
        })
    }

    fn count_query(&self, query: &'static str) {
        self.metrics.db_queries.with_label_values(&[query]).inc();
    }
}

/// Awaits `work`, adding the time it took to `spent`.
async fn timed<T>(spent: &mut Duration, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    *spent += started.elapsed();
    out
}
