//! The listings the feed serves, one file each, and the one enum that dispatches to them.
//!
//! A listing is a newest-first sequence of posts that the page pipeline (`pipeline.rs`) serves:
//! it names its cache key (pages hash and generation), reads a page from PostgreSQL, and says
//! which writes change it. Adding a listing is a new file with these methods and a variant here.

use super::home_feed::HomeFeed;
use super::user_posts::UserPosts;
use crate::cache::ListingKey;
use crate::domain::{Follow, PageRequest, Post, User, UserId};
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
    /// Someone started or stopped following someone.
    Follows(Follow),
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

    /// Where its pages are cached; `None` for a listing whose pages are not cached (its posts
    /// still are).
    pub(super) fn key(&self) -> Option<ListingKey> {
        match self {
            Self::UserPosts(listing) => Some(listing.key()),
            Self::HomeFeed(_) => None,
        }
    }

    /// The user whose `user_id` label its cache metrics carry.
    pub(super) fn owner(&self) -> UserId {
        match self {
            Self::UserPosts(listing) => listing.owner(),
            Self::HomeFeed(listing) => listing.owner(),
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

    /// The listings whose cached pages `change` makes wrong.
    pub(super) fn affected_by(change: Change<'_>) -> Vec<Self> {
        let user_posts = UserPosts::affected_by(change).map(Self::UserPosts);
        let home_feed = HomeFeed::affected_by(change).map(Self::HomeFeed);
        user_posts.into_iter().chain(home_feed).collect()
    }
}
