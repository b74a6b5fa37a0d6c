//! The listings the feed serves, one file each, and the one enum that dispatches to them.
//!
//! A listing is a newest-first sequence of posts that the page pipeline (`pipeline.rs`) serves:
//! it looks a page's ids up in the cache, reads a page from PostgreSQL, says what to store after
//! a miss, and applies writes to what it caches. Adding a listing is a new file with these
//! methods and a variant here.

use std::time::Duration;

use super::boxes::{Boxes, Rebuild};
use super::home_feed::HomeFeed;
use super::user_posts::UserPosts;
use crate::cache::{Cache, CachedPage, Generation, ListingKey};
use crate::domain::{Follow, PageRequest, Post, User, UserId};
use crate::metrics::Metrics;
use crate::store::{PostsPage, Store, StoreError};

/// A write, as the listings need to hear of it.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A post was created.
    PostCreated(&'a Post),
    /// A post's content changed (its id and position did not).
    PostEdited(&'a Post),
    /// A post was deleted; this is how it was.
    PostDeleted(&'a Post),
    /// A user's profile changed.
    UserEdited(&'a User),
    /// Someone started or stopped following someone; `followee` is how the followee now is.
    Follows { follow: Follow, followee: &'a User },
}

/// What the cache said about one page of a listing.
pub(super) struct IdsLookup {
    /// The page's ids, when the cache could answer.
    pub ids: Option<CachedPage>,
    /// What to store once PostgreSQL has served the page.
    pub remember: Remember,
    /// For the home feed: which boxes the ids came from (`inbox`, `inbox+pulled`).
    pub source: Option<Source>,
    /// How long the cached page has left, when the listing can refresh it early.
    pub expires_in: Option<Duration>,
}

/// Where a page's ids came from, for a listing that says so: the `X-Feed-Source` header and the
/// `feed_sources_total` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Source {
    pub header: &'static str,
    pub label: &'static str,
}

/// What the pipeline stores after a page was read from PostgreSQL.
pub(super) enum Remember {
    /// Nothing: the look-up failed, so the node it needed is failing or hung, and a write-back
    /// would only spend a second time budget on it.
    Nothing,
    /// The page's posts only: the cache answered but cannot hold this page.
    Objects,
    /// The posts, and the page itself if the listing's generation is still this one.
    Page(ListingKey, Generation),
    /// The posts; and some boxes were missing: rebuild them in the background.
    Rebuild(Box<Rebuild>),
}

/// Every listing the feed serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// One author's posts.
    UserPosts(UserPosts),
    /// One reader's home feed.
    HomeFeed(HomeFeed),
}

impl Listing {
    /// A user's own posts.
    pub fn user_posts(user: UserId) -> Self {
        Self::UserPosts(UserPosts::new(user))
    }

    /// A user's home feed.
    pub fn home_feed(reader: UserId) -> Self {
        Self::HomeFeed(HomeFeed::new(reader))
    }

    /// The user whose `user_id` label its cache metrics carry.
    pub(super) fn owner(&self) -> UserId {
        match self {
            Self::UserPosts(listing) => listing.owner(),
            Self::HomeFeed(listing) => listing.owner(),
        }
    }

    /// The pages hash this listing's pages are cached in whole, rendered pages included; `None`
    /// for a listing assembled from boxes at every read.
    pub(super) fn cached_pages(&self) -> Option<ListingKey> {
        match self {
            Self::UserPosts(listing) => Some(listing.key()),
            Self::HomeFeed(_) => None,
        }
    }

    /// Whether the listing's pages answer with the `offset` they were asked at (a listing paged
    /// by cursor only answers none).
    pub(super) fn pages_by_offset(&self) -> bool {
        match self {
            Self::UserPosts(_) => UserPosts::PAGES_BY_OFFSET,
            Self::HomeFeed(_) => HomeFeed::PAGES_BY_OFFSET,
        }
    }

    /// The source a page PostgreSQL listed reports, if the listing reports one.
    pub(super) fn database_source(&self) -> Option<Source> {
        match self {
            Self::UserPosts(_) => UserPosts::DATABASE_SOURCE,
            Self::HomeFeed(_) => HomeFeed::DATABASE_SOURCE,
        }
    }

    /// The page's ids from the cache, if it has them. Each listing is handed what it reads:
    /// the cache for pages cached whole, the boxes for the home feed.
    pub(super) async fn lookup(
        &self,
        cache: &Cache,
        boxes: &Boxes,
        page: PageRequest,
    ) -> IdsLookup {
        match self {
            Self::UserPosts(listing) => listing.lookup(cache, page).await,
            Self::HomeFeed(listing) => listing.lookup(boxes, page).await,
        }
    }

    /// One page from PostgreSQL; `None` when the listing's owner does not exist.
    pub(super) async fn load(
        &self,
        store: &Store,
        page: PageRequest,
    ) -> Result<Option<PostsPage>, StoreError> {
        match self {
            Self::UserPosts(listing) => listing.load(store, page).await,
            Self::HomeFeed(listing) => listing.load(store, page).await,
        }
    }

    /// Brings every listing's cache up to date with a committed write, before it is answered.
    pub(super) async fn apply(cache: &Cache, metrics: &Metrics, boxes: &Boxes, change: Change<'_>) {
        UserPosts::apply(cache, metrics, change).await;
        HomeFeed::apply(boxes, change).await;
    }
}

/// Used by the listings that cache pages by generation.
pub(super) async fn invalidate(cache: &Cache, metrics: &Metrics, key: ListingKey) {
    if let Err(error) = cache.invalidate_listing(key).await {
        metrics.cache_invalidation_failures.inc();
        tracing::error!(%error, ?key, "write saved but a listing's cached pages may not be invalidated; they expire within CACHE_LIST_TTL_SECS");
    }
}
