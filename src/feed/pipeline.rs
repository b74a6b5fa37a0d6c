//! The page pipeline every listing shares: look the page of ids up, fetch the post objects from
//! every node that holds some (one pipeline per node, all at once), read what is missing from
//! PostgreSQL, and write it back.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut as _, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::listing::{Listing, Remember, Source};
use super::served::{timed, CacheOutcome, Served, Timings};
use super::{Feed, FeedError, Resource};
use crate::cache::{CachedPage, Generation, ListingKey, LocalPage};
use crate::domain::{Cursor, PageBody, PageRequest, Post, PostId};
use crate::metrics::OTHER_USERS;
use crate::store::PostsPage;

/// A page's posts as the JSON the API answers with, newest first. Cached posts stay the bytes
/// Redis returned (checked to be JSON, never decoded into a [`Post`] and encoded again, never
/// copied), so a hit splices them into the response as they are.
pub(super) struct JsonPage {
    pub posts: Vec<Bytes>,
    pub has_more: bool,
}

impl JsonPage {
    /// A page PostgreSQL served, encoded once.
    pub(super) fn of(loaded: &PostsPage) -> Self {
        Self {
            posts: loaded.posts.iter().map(to_json).collect(),
            has_more: loaded.has_more,
        }
    }
}

/// A post as the JSON its cached object holds.
fn to_json(post: &Post) -> Bytes {
    serde_json::to_vec(post)
        .expect("domain objects serialize")
        .into()
}

/// The fields of a post that place it in feed order: all the cursor needs of the last post.
#[derive(serde::Deserialize)]
struct Placed {
    id: i64,
    created_at: DateTime<Utc>,
}

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
    ) -> Result<Served<PageBody>, FeedError> {
        // The Redis and PostgreSQL paths are boxed: their futures are large (a query that runs
        // in a task of its own, a pipeline per node), and inline they would make every in-process
        // hit create and move their whole state for nothing (callgrind: `memcpy` was the largest
        // single cost of a hit from the tier).
        let timings = Timings::default();
        if !self.cache.is_enabled() {
            return Box::pin(self.page_uncached(listing, page)).await;
        }
        let Some(key) = listing.cached_pages() else {
            return Box::pin(self.page_from_redis(listing, page, timings)).await;
        };
        match self.cache.local_page(key, page) {
            LocalPage::Hit(body) => Ok(self.finish_local(listing, body)),
            LocalPage::Miss(ticket) => {
                let served = Box::pin(self.page_from_redis(listing, page, timings)).await?;
                if let Some(ticket) = ticket {
                    self.cache.keep_page(key, page, ticket, &served.value);
                }
                Ok(served)
            }
        }
    }

    /// A page from PostgreSQL alone (`CACHE=off`).
    async fn page_uncached(
        &self,
        listing: Listing,
        page: PageRequest,
    ) -> Result<Served<PageBody>, FeedError> {
        let mut timings = Timings::default();
        let loaded = JsonPage::of(&self.load_page(listing, page, &mut timings).await?);
        let source = listing.database_source();
        Ok(self.finish(
            listing,
            page,
            &loaded,
            CacheOutcome::Bypass,
            timings,
            source,
        ))
    }

    /// A page the in-process tier answered, rendered as it was kept.
    fn finish_local(&self, listing: Listing, body: PageBody) -> Served<PageBody> {
        let cache = CacheOutcome::HitLocal;
        tracing::Span::current().record("cache", cache.as_str());
        let user_label = self.metrics.user_label(listing.owner());
        self.metrics
            .list_hits
            .with_label_values(&[&user_label])
            .inc();
        self.metrics.pages.with_label_values(&[cache.label()]).inc();
        Served {
            value: body,
            cache,
            timings: Timings::default(),
            source: None,
        }
    }

    /// A page from the Redis tier, or from PostgreSQL on a miss.
    async fn page_from_redis(
        &self,
        listing: Listing,
        page: PageRequest,
        mut timings: Timings,
    ) -> Result<Served<PageBody>, FeedError> {
        let lookup = timed(
            &mut timings.redis,
            listing.lookup(&self.cache, &self.boxes, page),
        )
        .await;
        let listed = lookup.ids.is_some();
        if let Some(cached) = lookup.ids {
            // A cached page exists only for a user that exists: the label slot is earned.
            let user_label = self.metrics.user_label(listing.owner());
            self.metrics
                .list_hits
                .with_label_values(&[&user_label])
                .inc();
            if let (Some(left), Remember::Page(key, generation)) =
                (lookup.expires_in, &lookup.remember)
            {
                if self.cache.should_refresh(left) {
                    self.spawn_refresh(listing, page, *key, generation.clone());
                }
            }
            if let Some((posts, outcome)) = self.posts_for_ids(&cached.ids, &mut timings).await? {
                let loaded = JsonPage {
                    posts,
                    has_more: cached.has_more,
                };
                return Ok(self.finish(listing, page, &loaded, outcome, timings, lookup.source));
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
                loaded.map(|loaded| Arc::new(JsonPage::of(&loaded)))
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
        let source = listing.database_source();
        Ok(self.finish(listing, page, &loaded, CacheOutcome::Miss, timings, source))
    }

    /// Renews a page that is about to expire, in the background: one refresh per page in this
    /// instance at a time, and none when PostgreSQL is saturated (the page then simply expires).
    fn spawn_refresh(
        &self,
        listing: Listing,
        page: PageRequest,
        key: ListingKey,
        generation: Generation,
    ) {
        if !super::lock(&self.refreshing).insert((key, page)) {
            return;
        }
        let feed = self.clone();
        self.tasks.spawn(async move {
            let mut timings = Timings::default();
            let outcome = match feed.load_page(listing, page, &mut timings).await {
                Err(error) => {
                    tracing::debug!(%error, ?key, "early refresh skipped: PostgreSQL did not serve the page");
                    "failed"
                }
                Ok(loaded) => {
                    let objects: Vec<&Post> = loaded.posts.iter().collect();
                    let cached = CachedPage {
                        ids: loaded.posts.iter().map(|post| post.id).collect(),
                        has_more: loaded.has_more,
                    };
                    let (_, renewed) = futures::join!(
                        feed.cache.fill(&objects),
                        feed.cache.refresh_page(key, page, &generation, &cached)
                    );
                    if renewed {
                        "renewed"
                    } else {
                        "skipped"
                    }
                }
            };
            feed.metrics
                .early_refreshes
                .with_label_values(&[outcome])
                .inc();
            super::lock(&feed.refreshing).remove(&(key, page));
        });
    }

    /// The posts of a cached page of ids, as JSON; missing ones read from PostgreSQL and written
    /// back. `None` when an id no longer exists in PostgreSQL (the page is stale).
    async fn posts_for_ids(
        &self,
        ids: &[PostId],
        timings: &mut Timings,
    ) -> Result<Option<(Vec<Bytes>, CacheOutcome)>, FeedError> {
        let found = timed(&mut timings.redis, self.cache.posts_json(ids)).await;
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

        let loaded = self.load_posts_coalesced(missing, timings).await?;
        let posts: Option<Vec<Bytes>> = ids
            .iter()
            .zip(found)
            .map(|(id, cached)| cached.or_else(|| loaded.get(id).cloned()))
            .collect();
        Ok(posts.map(|posts| (posts, CacheOutcome::Partial)))
    }

    /// Posts missing from the cache, as JSON by id: read from PostgreSQL and written back once
    /// for every concurrent request missing the same ones (the readers of one page after a cold
    /// start or an eviction): the first leads, the rest wait for its rows. The leader looks the
    /// cache up once more first, so a request whose look-up missed just before a flight landed
    /// takes what that flight filled. Objects carry their version and a fill never replaces a
    /// newer one, so a joiner may take rows a flight read before a write that ends meanwhile.
    async fn load_posts_coalesced(
        &self,
        mut missing: Vec<PostId>,
        timings: &mut Timings,
    ) -> Result<Arc<super::PostsJson>, FeedError> {
        missing.sort_unstable();
        let feed = self.clone();
        let ids = missing.clone();
        let lead = async move {
            let mut timings = Timings::default();
            // Looked up once more, unless a node is failing: the posts missing are then mostly
            // that node's, which a landed flight could not have filled either, and asking again
            // would cost every stampede leader one more Redis budget (docs/ARCHITECTURE.md has
            // the fault suite's figures).
            let again = if feed.cache.is_failing() {
                vec![None; ids.len()]
            } else {
                timed(&mut timings.redis, feed.cache.posts_json(&ids)).await
            };
            let mut found: HashMap<PostId, Bytes> = HashMap::new();
            let mut still = Vec::new();
            for (&id, json) in ids.iter().zip(again) {
                match json {
                    Some(json) => {
                        found.insert(id, json);
                    }
                    None => still.push(id),
                }
            }
            if !still.is_empty() {
                let _admitted = feed.store.admit()?;
                let loaded = timed(&mut timings.db, feed.store.posts_by_ids(&still)).await?;
                let backfill: Vec<&Post> = loaded.iter().collect();
                timed(&mut timings.redis, feed.cache.fill(&backfill)).await;
                found.extend(loaded.iter().map(|post| (post.id, to_json(post))));
            }
            Ok((Arc::new(found), timings))
        };
        self.object_flights.read(missing, timings, lead).await
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
    ) -> Result<Arc<JsonPage>, FeedError> {
        let feed = self.clone();
        let flight_key = (key, page, generation.clone());
        let lead = async move {
            let mut timings = Timings::default();
            // Double-checked: a flight that landed just before this one began filled the page.
            let again = timed(
                &mut timings.redis,
                listing.lookup(&feed.cache, &feed.boxes, page),
            )
            .await;
            if let Some(cached) = again.ids {
                if let Some((posts, _)) = feed.posts_for_ids(&cached.ids, &mut timings).await? {
                    let loaded = JsonPage {
                        posts,
                        has_more: cached.has_more,
                    };
                    return Ok((Arc::new(loaded), timings));
                }
            }
            let loaded = feed.load_page(listing, page, &mut timings).await?;
            feed.remember(Remember::Page(key, generation), page, &loaded, &mut timings)
                .await;
            Ok((Arc::new(JsonPage::of(&loaded)), timings))
        };
        self.page_flights.read(flight_key, timings, lead).await
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
            Remember::Rebuild(rebuild) => {
                timed(&mut timings.redis, self.cache.fill(&objects)).await;
                rebuild.start();
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

    /// Renders a page once: the posts spliced into the body as the JSON they are.
    fn finish(
        &self,
        listing: Listing,
        page: PageRequest,
        loaded: &JsonPage,
        cache: CacheOutcome,
        timings: Timings,
        source: Option<Source>,
    ) -> Served<PageBody> {
        tracing::Span::current().record("cache", cache.as_str());
        if let Some(source) = source {
            self.metrics
                .feed_sources
                .with_label_values(&[source.label])
                .inc();
        }
        self.metrics.pages.with_label_values(&[cache.label()]).inc();
        let offset = page.offset().filter(|_| listing.pages_by_offset());
        Served {
            value: render(loaded, page.limit(), offset),
            cache,
            timings,
            source: source.map(|source| source.header),
        }
    }
}

/// The fields of a [`Page`](crate::domain::Page) after `data`, in its order: serde renders them, the posts are
/// spliced in before them by hand.
#[derive(Serialize)]
struct PageTail {
    has_more: bool,
    limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u32>,
    next_cursor: Option<Cursor>,
}

/// The body of a page: byte for byte the [`Page`](crate::domain::Page) serde would write, with the posts copied in
/// once, as the JSON they are.
fn render(loaded: &JsonPage, limit: u32, offset: Option<u32>) -> PageBody {
    let next_cursor = loaded
        .posts
        .last()
        .filter(|_| loaded.has_more)
        .and_then(|last| match serde_json::from_slice::<Placed>(last) {
            Ok(placed) => Some(Cursor::new(placed.created_at, placed.id)),
            Err(error) => {
                tracing::error!(%error, "a post without its place in feed order; the page has no next cursor");
                None
            }
        });
    let tail = serde_json::to_vec(&PageTail {
        has_more: loaded.has_more,
        limit,
        offset,
        next_cursor,
    })
    .expect("a page's fields serialize");
    let posts: usize = loaded.posts.iter().map(|post| post.len() + 1).sum();
    let mut body = BytesMut::with_capacity(posts + tail.len() + 12);
    body.put_slice(b"{\"data\":[");
    for (i, post) in loaded.posts.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(post);
    }
    body.put_slice(b"],");
    // `tail` is `{"has_more":…}`: its fields follow the posts, inside the same object.
    body.put_slice(&tail[1..]);
    PageBody {
        json: body.freeze(),
        limit,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::domain::{Page, UserId};

    fn post(id: i64, content: &str) -> Post {
        let at = Utc.timestamp_micros(1_700_000_000_000_000 + id).unwrap();
        Post {
            id: PostId::from_trusted(id),
            user_id: UserId::from_trusted(7),
            content: content.to_owned(),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn a_spliced_page_is_byte_for_byte_the_page_serde_writes() {
        // Arrange: quotes, escapes and non-ASCII in the content, on a page with more after it.
        let posts = vec![
            post(3, "tab\t \"quoted\" é ✓"),
            post(2, "<b>&</b>"),
            post(1, ""),
        ];
        let loaded = PostsPage {
            posts: posts.clone(),
            has_more: true,
        };

        // Act
        let body = render(&JsonPage::of(&loaded), 3, Some(6));

        // Assert
        let expected = Page {
            data: posts,
            has_more: true,
            limit: 3,
            offset: Some(6),
            next_cursor: Some(Cursor::new(post(1, "").created_at, 1)),
        };
        assert_eq!(body.json, serde_json::to_vec(&expected).unwrap());
        assert_eq!(body.next_cursor, expected.next_cursor);
    }

    #[test]
    fn the_last_page_has_no_next_cursor() {
        let loaded = PostsPage {
            posts: vec![post(1, "only")],
            has_more: false,
        };

        let body = render(&JsonPage::of(&loaded), 50, None);

        let json: serde_json::Value = serde_json::from_slice(&body.json).unwrap();
        assert_eq!(json["next_cursor"], serde_json::Value::Null);
        assert!(json.get("offset").is_none(), "a cursor page has no offset");
        assert_eq!(body.next_cursor, None);
    }

    #[test]
    fn an_empty_page_is_the_page_serde_writes() {
        let loaded = PostsPage {
            posts: Vec::new(),
            has_more: false,
        };

        let body = render(&JsonPage::of(&loaded), 50, Some(0));

        let expected: Page<Post> = Page {
            data: Vec::new(),
            has_more: false,
            limit: 50,
            offset: Some(0),
            next_cursor: None,
        };
        assert_eq!(body.json, serde_json::to_vec(&expected).unwrap());
    }
}
