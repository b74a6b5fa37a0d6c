//! The home feed's statements: a page of it, its authors, their newest posts and an author's
//! followers (the fan-out and the rebuilds of its boxes).

use super::{start, PostsPage, Query, Store, StoreError};
use crate::domain::{PageRequest, Post, UserId};

impl Store {
    /// Reads one page of a user's home feed (their posts and their followees'), after `page`'s
    /// cursor; the first page when it has none (offsets are refused before this).
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn home_feed_page(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<PostsPage, StoreError> {
        let after = start(page);
        let rows: Vec<Post> = self
            .run(Query::HomeFeedPage, move |pool| async move {
                sqlx::query_as(include_str!("../../db/queries/home_feed_page.sql"))
                    .bind(user_id)
                    .bind(after.created_at())
                    .bind(after.id())
                    .bind(i64::from(page.limit()) + 1)
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        Ok(PostsPage::from_rows(rows, page.limit()))
    }

    /// The authors of a reader's home feed (the reader first, then everyone they follow), each
    /// with its follower count.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn feed_sources(&self, reader: UserId) -> Result<Vec<(UserId, i64)>, StoreError> {
        self.run(Query::FeedSources, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/feed_sources.sql"))
                .bind(reader)
                .fetch_all(&pool)
                .await
        })
        .await
    }

    /// The newest `limit` posts of `authors`, merged newest first.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip_all, fields(authors = authors.len()))]
    pub async fn newest_posts_of(
        &self,
        authors: &[UserId],
        limit: u32,
    ) -> Result<Vec<Post>, StoreError> {
        let raw: Vec<i64> = authors.iter().map(|id| id.get()).collect();
        self.run(Query::NewestPostsOf, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/newest_posts_of.sql"))
                .bind(raw)
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
        })
        .await
    }

    /// Up to `limit` followers of `author`.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn follower_ids(
        &self,
        author: UserId,
        limit: u32,
    ) -> Result<Vec<UserId>, StoreError> {
        self.run(Query::FollowerIds, move |pool| async move {
            sqlx::query_scalar(include_str!("../../db/queries/follower_ids.sql"))
                .bind(author)
                .bind(i64::from(limit))
                .fetch_all(&pool)
                .await
        })
        .await
    }
}
