//! The listing of one author's posts, newest first: `GET /api/v1/users/{id}/posts`. Its pages
//! are cached whole in the author's pages hash, guarded by the listing's generation.

use super::listing::{invalidate, Change, IdsLookup, Remember, Source};
use crate::cache::{Cache, ListingKey};
use crate::domain::{PageRequest, UserId};
use crate::metrics::Metrics;
use crate::store::{PostsPage, Store, StoreError};

/// One author's posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPosts {
    author: UserId,
}

impl UserPosts {
    /// Pages may be asked for by offset, and answer with it.
    pub(super) const PAGES_BY_OFFSET: bool = true;
    /// Its pages report no source.
    pub(super) const DATABASE_SOURCE: Option<Source> = None;

    pub(super) fn new(author: UserId) -> Self {
        Self { author }
    }

    pub(super) fn key(&self) -> ListingKey {
        ListingKey::UserPosts(self.author)
    }

    pub(super) fn owner(&self) -> UserId {
        self.author
    }

    pub(super) async fn lookup(&self, cache: &Cache, page: PageRequest) -> IdsLookup {
        let lookup = cache.lookup_page(self.key(), page).await;
        IdsLookup {
            ids: lookup.page,
            remember: lookup.generation.map_or(Remember::Nothing, |generation| {
                Remember::Page(self.key(), generation)
            }),
            source: None,
            expires_in: lookup.expires_in,
        }
    }

    pub(super) async fn load(
        &self,
        store: &Store,
        page: PageRequest,
    ) -> Result<Option<PostsPage>, StoreError> {
        let rows = store.user_posts_page(self.author, page).await?;
        // An empty page is either the end of the listing or an author who does not exist.
        if rows.posts.is_empty() && !store.user_exists(self.author).await? {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// A new or deleted post changes its author's listing. An edit does not: cached pages hold
    /// ids, and the edit rewrites the post's own object.
    pub(super) async fn apply(cache: &Cache, metrics: &Metrics, change: Change<'_>) {
        match change {
            Change::PostCreated(post) | Change::PostDeleted(post) => {
                invalidate(cache, metrics, Self::new(post.user_id).key()).await;
            }
            Change::PostEdited(_) | Change::UserEdited(_) | Change::Follows { .. } => {}
        }
    }
}
