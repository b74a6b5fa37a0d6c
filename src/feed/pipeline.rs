//! The page pipeline every listing shares: look the page of ids up, fetch the post objects from
//! every node that holds some (one pipeline per node, all at once), read what is missing from
//! PostgreSQL, and write it back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::flights::Role;
use super::listing::{Listing, Remember};
use super::served::{timed, CacheOutcome, Served, Timings};
use super::{Feed, FeedError, Resource};
use crate::cache::{CachedPage, Generation, ListingKey};
use crate::domain::{Cursor, Page, PageRequest, Post, PostId};
use crate::metrics::OTHER_USERS;
use crate::store::PostsPage;

impl Feed {
    /// One newest-first page of `listing`.
    ///
    /// A full hit costs two sequential cache round trips: the page of ids (and the generation)
    /// from the listing's node, then the objects from every node that holds some, in parallel.
    ///
    /// # Errors
    /// [`FeedError::NotFound`] when the listing's owner does not exist; PostgreSQL failures. A
    /// cache failure is a miss, never an error.
    #[tracing::instrument(skip(self), fields(cache))]
    pub async fn page(
        &self,
        listing: Listing,
        page: PageRequest,
    ) -> Result<Served<Page<Post>>, FeedError> {
        let mut timings = Timings::default();
        if !self.cache.is_enabled() {
            let loaded = self.load_page(listing, page, &mut timings).await?;
            let source = database_source(listing);
            return Ok(self.finish(listing, page, loaded, CacheOutcome::Bypass, timings, source));
        }

        let lookup = timed(&mut timings.redis, listing.lookup(self, page)).await;
        let listed = lookup.ids.is_some();
        if let Some(cached) = lookup.ids {
            // A cached page exists only for a user that exists: the label slot is earned.
            let user_label = self.metrics.user_label(listing.owner());
            self.metrics
                .list_hits
                .with_label_values(&[&user_label])
                .inc();
            if let Some((posts, outcome)) = self.posts_for_ids(&cached.ids, &mut timings).await? {
                let loaded = PostsPage {
                    posts,
                    has_more: cached.has_more,
                };
                return Ok(self.finish(listing, page, loaded, outcome, timings, lookup.source));
            }
            // A listed post is gone from PostgreSQL: the cached page is stale, rebuild it.
        }

        let loaded = match lookup.remember {
            // A listed page found stale reads for itself: the landed flight may be that page.
            Remember::Page(key, generation) if !listed => {
                self.load_page_coalesced(listing, page, key, generation, &mut timings)
                    .await
            }
            remember => {
                let loaded = self.load_page(listing, page, &mut timings).await;
                if let Ok(loaded) = &loaded {
                    self.remember(remember, page, loaded, &mut timings).await;
                }
                loaded
            }
        };
        if !listed {
            // Only a user PostgreSQL knows takes a label slot; unknown ids count as `other`.
            let user_label = match &loaded {
                Ok(_) => self.metrics.user_label(listing.owner()),
                Err(_) => OTHER_USERS.to_owned(),
            };
            self.metrics
                .list_misses
                .with_label_values(&[&user_label])
                .inc();
        }
        let loaded = loaded?;
        let source = database_source(listing);
        Ok(self.finish(listing, page, loaded, CacheOutcome::Miss, timings, source))
    }

    /// Objects for a cached page of ids, missing ones read from PostgreSQL and written back.
    /// `None` when an id no longer exists in PostgreSQL (the page is stale).
    async fn posts_for_ids(
        &self,
        ids: &[PostId],
        timings: &mut Timings,
    ) -> Result<Option<(Vec<Post>, CacheOutcome)>, FeedError> {
        let found: Vec<Option<Post>> = timed(&mut timings.redis, self.cache.objects(ids)).await;
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

        let _admitted = self.store.admit()?;
        let loaded = timed(&mut timings.db, self.store.posts_by_ids(&missing)).await?;
        let backfill: Vec<&Post> = loaded.iter().collect();
        timed(&mut timings.redis, self.cache.fill(&backfill)).await;
        let loaded: HashMap<PostId, &Post> = loaded.iter().map(|post| (post.id, post)).collect();
        let posts: Option<Vec<Post>> = ids
            .iter()
            .zip(found)
            .map(|(id, cached)| cached.or_else(|| loaded.get(id).map(|&post| post.clone())))
            .collect();
        Ok(posts.map(|posts| (posts, CacheOutcome::Partial)))
    }

    /// A missed page of a cacheable listing, read from PostgreSQL and stored (its posts, and the
    /// page if `generation` still holds) once for every concurrent request that saw the same
    /// generation: the first leads, the rest wait for its page (their wait is their db time).
    /// The leader looks the page up once more first, so a request whose look-up missed just
    /// before a flight landed takes the page that flight stored instead of reading again.
    async fn load_page_coalesced(
        &self,
        listing: Listing,
        page: PageRequest,
        key: ListingKey,
        generation: Generation,
        timings: &mut Timings,
    ) -> Result<PostsPage, FeedError> {
        let feed = self.clone();
        let flight_key = (key, page, generation.clone());
        let lead = async move {
            let mut timings = Timings::default();
            // Double-checked: a flight that landed just before this one began filled the page.
            let again = timed(&mut timings.redis, listing.lookup(&feed, page)).await;
            if let Some(cached) = again.ids {
                if let Some((posts, _)) = feed.posts_for_ids(&cached.ids, &mut timings).await? {
                    let loaded = PostsPage {
                        posts,
                        has_more: cached.has_more,
                    };
                    return Ok((Arc::new(loaded), timings));
                }
            }
            let loaded = feed.load_page(listing, page, &mut timings).await?;
            feed.remember(Remember::Page(key, generation), page, &loaded, &mut timings)
                .await;
            Ok((Arc::new(loaded), timings))
        };
        let started = Instant::now();
        let (outcome, role) = self.page_flights.run(flight_key, lead).await;
        let (loaded, flight_timings) = outcome?;
        match role {
            Role::Leader => {
                timings.db += flight_timings.db;
                timings.redis += flight_timings.redis;
            }
            Role::Joiner => {
                self.metrics
                    .coalesced_waits
                    .with_label_values(&["page"])
                    .inc();
                timings.db += started.elapsed();
            }
        }
        Ok(PostsPage {
            posts: loaded.posts.clone(),
            has_more: loaded.has_more,
        })
    }

    /// Stores what `remember` says after `loaded` was read from PostgreSQL.
    async fn remember(
        &self,
        remember: Remember,
        page: PageRequest,
        loaded: &PostsPage,
        timings: &mut Timings,
    ) {
        let objects: Vec<&Post> = loaded.posts.iter().collect();
        match remember {
            Remember::Nothing => {}
            Remember::Objects => timed(&mut timings.redis, self.cache.fill(&objects)).await,
            Remember::Page(key, generation) => {
                let cached = CachedPage {
                    ids: loaded.posts.iter().map(|post| post.id).collect(),
                    has_more: loaded.has_more,
                };
                timed(
                    &mut timings.redis,
                    futures::future::join(
                        self.cache.fill(&objects),
                        self.cache.store_page(key, page, &generation, &cached),
                    ),
                )
                .await;
            }
            Remember::Rebuild(boxes) => {
                timed(&mut timings.redis, self.cache.fill(&objects)).await;
                self.spawn_rebuilds(boxes);
            }
        }
    }

    async fn load_page(
        &self,
        listing: Listing,
        page: PageRequest,
        timings: &mut Timings,
    ) -> Result<PostsPage, FeedError> {
        let _admitted = self.store.admit()?;
        timed(&mut timings.db, listing.load(&self.store, page))
            .await?
            .ok_or(FeedError::NotFound(Resource::User(listing.owner())))
    }

    fn finish(
        &self,
        listing: Listing,
        page: PageRequest,
        loaded: PostsPage,
        cache: CacheOutcome,
        timings: Timings,
        source: Option<&'static str>,
    ) -> Served<Page<Post>> {
        tracing::Span::current().record("cache", cache.as_str());
        if let Some(source) = source {
            let label = if source == "inbox+pulled" {
                "pulled"
            } else {
                source
            };
            self.metrics.feed_sources.with_label_values(&[label]).inc();
        }
        self.metrics.pages.with_label_values(&[cache.label()]).inc();
        let next_cursor = loaded
            .posts
            .last()
            .filter(|_| loaded.has_more)
            .map(Cursor::after);
        Served {
            value: Page {
                data: loaded.posts,
                has_more: loaded.has_more,
                limit: page.limit(),
                // The home feed pages by cursor only: its pages carry no offset.
                offset: page
                    .offset()
                    .filter(|_| matches!(listing, Listing::UserPosts(_))),
                next_cursor,
            },
            cache,
            timings,
            source,
        }
    }
}

/// The source of a home-feed page PostgreSQL listed.
fn database_source(listing: Listing) -> Option<&'static str> {
    matches!(listing, Listing::HomeFeed(_)).then_some("database")
}
