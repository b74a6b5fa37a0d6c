//! The home feed: a user's own posts and those of everyone they follow, newest first,
//! `GET /api/v1/users/{id}/feed`.
//!
//! Served from PostgreSQL for now (one keyset query over the followees), its posts through the
//! object cache. Its pages are not cached yet: a page of a feed changes with every post of every
//! followee, which needs fan-out on write (inboxes) rather than per-listing invalidation.

use super::listing::Change;
use crate::domain::{PageRequest, UserId};
use crate::store::{PostsPage, Store, StoreError};

/// One user's home feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeFeed {
    reader: UserId,
}

impl HomeFeed {
    pub(super) fn new(reader: UserId) -> Self {
        Self { reader }
    }

    pub(super) fn owner(&self) -> UserId {
        self.reader
    }

    pub(super) async fn load(
        &self,
        store: &Store,
        page: PageRequest,
    ) -> Result<Option<PostsPage>, StoreError> {
        let rows = store.home_feed_page(self.reader, page).await?;
        if rows.posts.is_empty() && !store.user_exists(self.reader).await? {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// Nothing to invalidate while its pages are not cached.
    pub(super) fn affected_by(_change: Change<'_>) -> Option<Self> {
        None
    }
}
