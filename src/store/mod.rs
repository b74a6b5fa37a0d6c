//! PostgreSQL access. The SQL lives in `db/queries/`, one statement a file.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DatabaseSettings;
use crate::domain::{NewPost, NewUser, PageRequest, Post, PostId, User, UserId};

// Generates `mod migrations` with the files of `migrations/` compiled in.
refinery::embed_migrations!("migrations");

/// The PostgreSQL side of the service: the source of truth.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// One page of posts read from PostgreSQL.
#[derive(Debug)]
pub struct PostsPage {
    pub posts: Vec<Post>,
    pub has_more: bool,
}

impl Store {
    /// Creates a lazily connecting pool: the service starts even while PostgreSQL is still booting.
    ///
    /// # Errors
    /// The URL cannot be parsed.
    pub fn connect_lazy(settings: &DatabaseSettings) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions = settings.database_url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.db_max_connections)
            .acquire_timeout(settings.acquire_timeout())
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(options.application_name("hotfeed"));
        Ok(Self { pool })
    }

    /// The underlying pool, for health checks and shutdown.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a user.
    ///
    /// # Errors
    /// A unique violation on `users_username_key` when the username is taken.
    #[tracing::instrument(skip_all, fields(username = %user.username))]
    pub async fn insert_user(&self, user: &NewUser) -> Result<User, sqlx::Error> {
        sqlx::query_as(include_str!("../../db/queries/insert_user.sql"))
            .bind(&user.username)
            .bind(&user.display_name)
            .fetch_one(&self.pool)
            .await
    }

    /// Reads one user.
    ///
    /// # Errors
    /// Database errors only; an unknown id is `Ok(None)`.
    #[tracing::instrument(skip(self))]
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, sqlx::Error> {
        sqlx::query_as(include_str!("../../db/queries/user_by_id.sql"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Whether a user exists.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn user_exists(&self, id: UserId) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(include_str!("../../db/queries/user_exists.sql"))
            .bind(id)
            .fetch_one(&self.pool)
            .await
    }

    /// Inserts a post.
    ///
    /// # Errors
    /// A foreign key violation on `posts_user_id_fkey` when the author does not exist.
    #[tracing::instrument(skip_all, fields(user_id = %post.user_id))]
    pub async fn insert_post(&self, post: &NewPost) -> Result<Post, sqlx::Error> {
        sqlx::query_as(include_str!("../../db/queries/insert_post.sql"))
            .bind(post.user_id)
            .bind(&post.content)
            .fetch_one(&self.pool)
            .await
    }

    /// Reads posts by id, in no particular order; unknown ids are absent from the result.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn posts_by_ids(&self, ids: &[PostId]) -> Result<Vec<Post>, sqlx::Error> {
        let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        sqlx::query_as(include_str!("../../db/queries/posts_by_ids.sql"))
            .bind(raw)
            .fetch_all(&self.pool)
            .await
    }

    /// Reads one newest-first page of a user's posts.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn user_posts_page(
        &self,
        user_id: UserId,
        page: PageRequest,
    ) -> Result<PostsPage, sqlx::Error> {
        let mut posts: Vec<Post> =
            sqlx::query_as(include_str!("../../db/queries/user_posts_page.sql"))
                .bind(user_id)
                .bind(i64::from(page.limit()) + 1)
                .bind(i64::from(page.offset()))
                .fetch_all(&self.pool)
                .await?;
        let has_more = posts.len() > page.limit() as usize;
        posts.truncate(page.limit() as usize);
        Ok(PostsPage { posts, has_more })
    }
}

/// Applies pending migrations from `migrations/` and returns how many were applied.
///
/// # Errors
/// PostgreSQL is unreachable or a migration fails (it is then rolled back).
pub async fn migrate(database_url: &str) -> anyhow::Result<usize> {
    use anyhow::Context as _;

    let (mut client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL to migrate")?;
    let driver = tokio::spawn(connection);
    let report = migrations::runner()
        .run_async(&mut client)
        .await
        .context("applying migrations")?;
    drop(client);
    let _ = driver.await;
    Ok(report.applied_migrations().len())
}
