//! PostgreSQL access: the source of truth. The SQL lives in `db/queries/`, one statement a file;
//! errors leave this module decoded as [`StoreError`], and every query is counted by [`Query`].

mod error;
mod feed;
mod idempotency;
mod migrate;
mod query;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use error::{Constraint, StoreError};
pub use idempotency::{IdempotencyScope, Idempotent, Once};
pub use query::Query;

use crate::config::DatabaseSettings;
use crate::domain::{
    ApiKey, Cursor, Follow, KeyHash, NewPost, NewUser, PageRequest, Position, Post, PostEdit,
    PostId, User, UserEdit, UserId,
};
use crate::metrics::{zero_series, Metrics};
use crate::tasks::Tasks;

// Generates `mod migrations` with the files of `migrations/` compiled in.
refinery::embed_migrations!("migrations");

/// How much longer than `statement_timeout` a query may take before the client gives up on it:
/// room for the server's own cancellation to arrive first.
const QUERY_DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// The PostgreSQL side of the service; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// One connection of its own for readiness probes, so a pool busy with requests is not
    /// mistaken for a database that is down.
    probe: PgPool,
    /// One permit per request allowed to wait on PostgreSQL at once (`DB_MAX_INFLIGHT`).
    admission: Arc<Semaphore>,
    /// Client-side bound on one query: `statement_timeout` cannot fire on a server that stopped
    /// answering (frozen, partitioned), and sqlx has no TCP keepalive to notice it.
    query_deadline: Duration,
    metrics: Arc<Metrics>,
    /// Where each query runs to its end (see `run`).
    tasks: Tasks,
}

/// A request's right to use PostgreSQL, from [`Store::admit`]; released when dropped.
#[must_use = "the admission ends when the permit is dropped"]
pub struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

/// Which side of the follows a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowList {
    /// The users someone follows.
    Following,
    /// The users who follow someone.
    Followers,
}

/// One page of a follow list, most recent follow first.
#[derive(Debug)]
pub struct FollowsPage {
    pub users: Vec<User>,
    pub has_more: bool,
    /// Where the next page starts, when `has_more`.
    pub next: Option<Cursor>,
}

#[derive(sqlx::FromRow)]
struct FollowRow {
    #[sqlx(flatten)]
    user: User,
    followed_at: chrono::DateTime<chrono::Utc>,
}

/// One page of posts read from PostgreSQL.
#[derive(Debug)]
pub struct PostsPage {
    pub posts: Vec<Post>,
    pub has_more: bool,
}

impl Store {
    /// Creates lazily connecting pools: the service starts even while PostgreSQL is still booting.
    ///
    /// # Errors
    /// The URL cannot be parsed.
    pub fn connect_lazy(
        settings: &DatabaseSettings,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Result<Self, StoreError> {
        let options: PgConnectOptions = settings.database_url.parse()?;
        let statement_timeout = settings.statement_timeout().as_millis().to_string();
        let options = options
            .application_name("hotfeed")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.db_max_connections)
            .acquire_timeout(settings.acquire_timeout())
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(options.clone());
        let probe = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout())
            .connect_lazy_with(options);
        zero_series(&metrics.db_queries, Query::ALL.map(Query::name));
        Ok(Self {
            pool,
            probe,
            admission: Arc::new(Semaphore::new(settings.db_max_inflight as usize)),
            query_deadline: settings.statement_timeout() + QUERY_DEADLINE_MARGIN,
            metrics,
            tasks: tasks.clone(),
        })
    }

    /// Admits one more request to PostgreSQL, or refuses at once when `DB_MAX_INFLIGHT` are
    /// already in: a bounded queue in front of the pool, so overload is a fast 503, not seconds of
    /// waiting that pile up. Taken once per request, before its first query, and held to its end.
    ///
    /// # Errors
    /// [`StoreError::Overloaded`] when no slot is free.
    pub fn admit(&self) -> Result<Admitted, StoreError> {
        match Arc::clone(&self.admission).try_acquire_owned() {
            Ok(permit) => Ok(Admitted(permit)),
            Err(_) => {
                self.metrics.db_shed.inc();
                Err(StoreError::Overloaded)
            }
        }
    }

    /// Round trip of a trivial statement on the probe connection.
    ///
    /// # Errors
    /// PostgreSQL does not answer.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&self.probe).await?;
        Ok(started.elapsed())
    }

    /// Closes both pools, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        futures::join!(self.pool.close(), self.probe.close());
    }

    /// Inserts a user and their first API key (stored by its hash) in one transaction, so no
    /// user is left without a key; once per idempotency key.
    ///
    /// # Errors
    /// [`StoreError::Unique`] with [`Constraint::UsernameUnique`] when the username is taken.
    #[tracing::instrument(skip_all, fields(username = %user.username))]
    pub async fn insert_user(
        &self,
        user: &NewUser,
        key: &ApiKey,
        once: Option<&Idempotent<'_>>,
    ) -> Result<Once<User>, StoreError> {
        self.create_once(once, async |connection| {
            let created: User = self
                .run_in(
                    Query::InsertUser,
                    sqlx::query_as(include_str!("../../db/queries/insert_user.sql"))
                        .bind(&user.username)
                        .bind(&user.display_name)
                        .fetch_one(&mut *connection),
                )
                .await?;
            self.record_api_key(connection, created.id, key).await?;
            Ok(created)
        })
        .await
    }

    /// Records another API key of an existing user.
    ///
    /// # Errors
    /// [`StoreError::ForeignKey`] with [`Constraint::ApiKeyUser`] when the user does not exist.
    #[tracing::instrument(skip_all, fields(%user, prefix = key.prefix()))]
    pub async fn insert_api_key(&self, user: UserId, key: &ApiKey) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        self.record_api_key(&mut connection, user, key).await
    }

    /// `insert_api_key.sql` on a connection (perhaps inside a transaction).
    async fn record_api_key(
        &self,
        connection: &mut PgConnection,
        user: UserId,
        key: &ApiKey,
    ) -> Result<(), StoreError> {
        self.run_in(
            Query::InsertApiKey,
            sqlx::query(include_str!("../../db/queries/insert_api_key.sql"))
                .bind(user)
                .bind(key.hash().as_bytes())
                .bind(key.prefix())
                .execute(connection),
        )
        .await
        .map(drop)
    }

    /// The user an API key acts as, by the key's hash; `None` for a key nobody holds.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip_all)]
    pub async fn api_key_owner(&self, hash: &KeyHash) -> Result<Option<UserId>, StoreError> {
        let hash = hash.as_bytes().to_vec();
        self.run(Query::ApiKeyOwner, move |pool| async move {
            sqlx::query_scalar(include_str!("../../db/queries/api_key_owner.sql"))
                .bind(hash)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// The author of a post, read from PostgreSQL; `None` when no such post exists.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn post_author(&self, id: PostId) -> Result<Option<UserId>, StoreError> {
        self.run(Query::PostAuthor, move |pool| async move {
            sqlx::query_scalar(include_str!("../../db/queries/post_author.sql"))
                .bind(id)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// Reads one user; an unknown id is `Ok(None)`.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.run(Query::UserById, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/user_by_id.sql"))
                .bind(id)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// Whether a user exists.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn user_exists(&self, id: UserId) -> Result<bool, StoreError> {
        self.run(Query::UserExists, move |pool| async move {
            sqlx::query_scalar(include_str!("../../db/queries/user_exists.sql"))
                .bind(id)
                .fetch_one(&pool)
                .await
        })
        .await
    }

    /// Inserts a post, once per idempotency key.
    ///
    /// # Errors
    /// [`StoreError::ForeignKey`] with [`Constraint::PostAuthor`] when the author does not exist.
    #[tracing::instrument(skip_all, fields(user_id = %post.user_id))]
    pub async fn insert_post(
        &self,
        post: &NewPost,
        once: Option<&Idempotent<'_>>,
    ) -> Result<Once<Post>, StoreError> {
        self.create_once(once, async |connection| {
            self.run_in(
                Query::InsertPost,
                sqlx::query_as(include_str!("../../db/queries/insert_post.sql"))
                    .bind(post.user_id)
                    .bind(&post.content)
                    .fetch_one(connection),
            )
            .await
        })
        .await
    }

    /// Replaces a post's content; `None` when no such post exists.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self, edit))]
    pub async fn update_post(
        &self,
        id: PostId,
        edit: &PostEdit,
    ) -> Result<Option<Post>, StoreError> {
        let content = edit.content.clone();
        self.run(Query::UpdatePost, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/update_post.sql"))
                .bind(id)
                .bind(content)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// Deletes a post and returns it as it was; `None` when no such post exists.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn delete_post(&self, id: PostId) -> Result<Option<Post>, StoreError> {
        self.run(Query::DeletePost, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/delete_post.sql"))
                .bind(id)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// Replaces a user's display name; `None` when no such user exists.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self, edit))]
    pub async fn update_user(
        &self,
        id: UserId,
        edit: &UserEdit,
    ) -> Result<Option<User>, StoreError> {
        let display_name = edit.display_name.clone();
        self.run(Query::UpdateUser, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/update_user.sql"))
                .bind(id)
                .bind(display_name)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// Follows, idempotently: `Some(true)` when the follow is new, `Some(false)` when it existed,
    /// `None` when either user does not exist. Both users' counts and `updated_at` move with a new
    /// follow, in the same statement.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn follow(&self, follow: Follow) -> Result<Option<bool>, StoreError> {
        self.run(Query::Follow, move |pool| async move {
            sqlx::query_scalar(include_str!("../../db/queries/follow.sql"))
                .bind(follow.follower)
                .bind(follow.followee)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// Unfollows, idempotently: `Some(true)` when a follow was removed, `Some(false)` when there was
    /// none, `None` when either user does not exist.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn unfollow(&self, follow: Follow) -> Result<Option<bool>, StoreError> {
        self.run(Query::Unfollow, move |pool| async move {
            sqlx::query_scalar(include_str!("../../db/queries/unfollow.sql"))
                .bind(follow.follower)
                .bind(follow.followee)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    /// One page of a follow list, after `page`'s cursor (offsets are refused before this).
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn follows_page(
        &self,
        user: UserId,
        list: FollowList,
        page: PageRequest,
    ) -> Result<FollowsPage, StoreError> {
        let (query, sql) = match list {
            FollowList::Following => (
                Query::FollowingPage,
                include_str!("../../db/queries/following_page.sql"),
            ),
            FollowList::Followers => (
                Query::FollowersPage,
                include_str!("../../db/queries/followers_page.sql"),
            ),
        };
        let after = start(page);
        let mut rows: Vec<FollowRow> = self
            .run(query, move |pool| async move {
                sqlx::query_as(sql)
                    .bind(user)
                    .bind(after.created_at())
                    .bind(after.id())
                    .bind(i64::from(page.limit()) + 1)
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        let has_more = rows.len() > page.limit() as usize;
        rows.truncate(page.limit() as usize);
        let next = rows
            .last()
            .filter(|_| has_more)
            .map(|row| Cursor::new(row.followed_at, row.user.id.get()));
        Ok(FollowsPage {
            users: rows.into_iter().map(|row| row.user).collect(),
            has_more,
            next,
        })
    }

    /// Reads posts by id, in no particular order; unknown ids are absent from the result.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn posts_by_ids(&self, ids: &[PostId]) -> Result<Vec<Post>, StoreError> {
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        self.run(Query::PostsByIds, move |pool| async move {
            sqlx::query_as(include_str!("../../db/queries/posts_by_ids.sql"))
                .bind(raw)
                .fetch_all(&pool)
                .await
        })
        .await
    }

    /// Reads one newest-first page of a user's posts, at an offset or after a cursor.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn user_posts_page(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<PostsPage, StoreError> {
        let fetch = i64::from(page.limit()) + 1;
        let rows: Vec<Post> = match page.position() {
            Position::Offset(offset) => {
                self.run(Query::UserPostsPage, move |pool| async move {
                    sqlx::query_as(include_str!("../../db/queries/user_posts_page.sql"))
                        .bind(user_id)
                        .bind(fetch)
                        .bind(i64::from(offset))
                        .fetch_all(&pool)
                        .await
                })
                .await?
            }
            Position::After(cursor) => {
                self.run(Query::UserPostsAfter, move |pool| async move {
                    sqlx::query_as(include_str!("../../db/queries/user_posts_after.sql"))
                        .bind(user_id)
                        .bind(cursor.created_at())
                        .bind(cursor.id())
                        .bind(fetch)
                        .fetch_all(&pool)
                        .await
                })
                .await?
            }
        };
        Ok(PostsPage::from_rows(rows, page.limit()))
    }

    /// Counts `query`, runs `call` on the pool in a task of its own, and waits at most the query
    /// deadline for its answer.
    ///
    /// A query, once started, is never dropped half-way: a caller that stops waiting (this
    /// deadline, the request's own, a client gone) leaves it to finish in its task, which the
    /// server's `statement_timeout` bounds. sqlx 0.8 does not survive a query future dropped in
    /// the middle of its exchange with the server: the connection can go back to the pool still
    /// waiting for an answer that never comes, and every later query on it hangs. After a flood of
    /// timed-out misses, every read of a pool left with such connections hit the deadline, for
    /// good (`tests/api/deadlines.rs`, the flood test, about one run in six on a loaded machine).
    async fn run<T, Fut>(
        &self,
        query: Query,
        call: impl FnOnce(PgPool) -> Fut,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        self.count(query);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let call = call(self.pool.clone());
        self.tasks.spawn(async move {
            // The caller may have stopped waiting: the answer is then dropped, the connection
            // back in the pool in a clean state.
            let _ = answer.send(call.await);
        });
        match tokio::time::timeout(self.query_deadline, answered).await {
            Ok(Ok(outcome)) => outcome.map_err(StoreError::from),
            // The task was stopped before it answered: the service is shutting down.
            Ok(Err(_)) => Err(StoreError::Unavailable(sqlx::Error::PoolClosed)),
            Err(_) => Err(past_the_deadline()),
        }
    }

    /// Counts `query` and runs `call` on a connection the caller holds (a transaction), waiting
    /// at most the query deadline. Unlike [`run`](Self::run), `call` borrows its connection and
    /// cannot outlive the caller: a transaction dropped half-way is rolled back by sqlx, and its
    /// connection closed by the pool if it cannot be.
    async fn run_in<T>(
        &self,
        query: Query,
        call: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        self.count(query);
        match tokio::time::timeout(self.query_deadline, call).await {
            Ok(outcome) => outcome.map_err(StoreError::from),
            Err(_) => Err(past_the_deadline()),
        }
    }

    fn count(&self, query: Query) {
        self.metrics
            .db_queries
            .with_label_values(&[query.name()])
            .inc();
    }
}

/// The error of a query whose answer did not come within `DB_STATEMENT_TIMEOUT_MS` + 1 s.
fn past_the_deadline() -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "PostgreSQL did not answer within DB_STATEMENT_TIMEOUT_MS + 1 s",
    )))
}

/// Where a cursor-only listing starts: after the cursor, or before everything on a first page.
pub(super) fn start(page: PageRequest) -> Cursor {
    match page.position() {
        Position::After(cursor) => cursor,
        Position::Offset(_) => Cursor::new(chrono::DateTime::<chrono::Utc>::MAX_UTC, i64::MAX),
    }
}

impl PostsPage {
    /// A page from rows fetched with `LIMIT limit + 1`: the extra row only says that more exist.
    pub(super) fn from_rows(mut posts: Vec<Post>, limit: u32) -> Self {
        let has_more = posts.len() > limit as usize;
        posts.truncate(limit as usize);
        Self { posts, has_more }
    }
}

/// Applies pending migrations from `migrations/` and returns how many were applied.
///
/// # Errors
/// PostgreSQL is unreachable (or its TLS certificate is refused) or a migration fails (it is then
/// rolled back).
pub async fn migrate(database_url: &str) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    use sqlx::Connection as _;

    let connection = sqlx::PgConnection::connect(database_url)
        .await
        .context("connecting to PostgreSQL to migrate")?;
    let mut migrator = migrate::Migrator(connection);
    let report = migrations::runner()
        .run_async(&mut migrator)
        .await
        .context("applying migrations")?;
    migrator.0.close().await.ok();
    Ok(report.applied_migrations().len())
}
