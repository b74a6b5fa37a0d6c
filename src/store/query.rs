//! The statements the service sends, one per file of `db/queries/`, as the `query` label of
//! `db_queries_total`.

/// Every statement the service sends; the `query` label of `db_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    InsertUser,
    UserById,
    UserExists,
    InsertPost,
    PostsByIds,
    UserPostsPage,
    UserPostsAfter,
    UpdatePost,
    DeletePost,
    UpdateUser,
    Follow,
    Unfollow,
    FollowingPage,
    FollowersPage,
    HomeFeedPage,
    FeedSources,
    NewestPostsOf,
    FollowerIds,
    InsertApiKey,
    ApiKeyOwner,
    PostAuthor,
    ClaimIdempotencyKey,
    IdempotentResponse,
    RecordIdempotentResponse,
    DeleteExpiredIdempotencyKeys,
}

impl Query {
    /// Every query, whose `db_queries_total` series exist at 0 from the start.
    pub const ALL: [Self; 25] = [
        Self::InsertUser,
        Self::UserById,
        Self::UserExists,
        Self::InsertPost,
        Self::PostsByIds,
        Self::UserPostsPage,
        Self::UserPostsAfter,
        Self::UpdatePost,
        Self::DeletePost,
        Self::UpdateUser,
        Self::Follow,
        Self::Unfollow,
        Self::FollowingPage,
        Self::FollowersPage,
        Self::HomeFeedPage,
        Self::FeedSources,
        Self::NewestPostsOf,
        Self::FollowerIds,
        Self::InsertApiKey,
        Self::ApiKeyOwner,
        Self::PostAuthor,
        Self::ClaimIdempotencyKey,
        Self::IdempotentResponse,
        Self::RecordIdempotentResponse,
        Self::DeleteExpiredIdempotencyKeys,
    ];

    /// The label value, named like the file in `db/queries/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::InsertUser => "insert_user",
            Self::UserById => "user_by_id",
            Self::UserExists => "user_exists",
            Self::InsertPost => "insert_post",
            Self::PostsByIds => "posts_by_ids",
            Self::UserPostsPage => "user_posts_page",
            Self::UserPostsAfter => "user_posts_after",
            Self::UpdatePost => "update_post",
            Self::DeletePost => "delete_post",
            Self::UpdateUser => "update_user",
            Self::Follow => "follow",
            Self::Unfollow => "unfollow",
            Self::FollowingPage => "following_page",
            Self::FollowersPage => "followers_page",
            Self::HomeFeedPage => "home_feed_page",
            Self::FeedSources => "feed_sources",
            Self::NewestPostsOf => "newest_posts_of",
            Self::FollowerIds => "follower_ids",
            Self::InsertApiKey => "insert_api_key",
            Self::ApiKeyOwner => "api_key_owner",
            Self::PostAuthor => "post_author",
            Self::ClaimIdempotencyKey => "claim_idempotency_key",
            Self::IdempotentResponse => "idempotent_response",
            Self::RecordIdempotentResponse => "record_idempotent_response",
            Self::DeleteExpiredIdempotencyKeys => "delete_expired_idempotency_keys",
        }
    }
}
