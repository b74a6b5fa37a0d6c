//! The PostgreSQL side, done the way bulk loaders do it, inside the caller's one transaction:
//! the indexes and constraints of `posts` and `follows` are dropped, rows arrive by binary `COPY`,
//! then the indexes and constraints are rebuilt from the definitions the catalog held, and the
//! tables are analysed. Nothing here commits.

use std::pin::pin;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::Host;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, Transaction};

use crate::generate::{FollowRow, PostRow, UserRow};
use crate::progress::Progress;

/// Time allowed to reach PostgreSQL before the run gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Session settings of the load transaction. A large `maintenance_work_mem` keeps the index sorts
/// in memory; `lock_timeout` turns a wait behind a long query of the service into a clear error.
const SETTINGS_SQL: &str =
    "SET LOCAL maintenance_work_mem = '512MB'; SET LOCAL lock_timeout = '10s'";

/// Takes the tables for the whole transaction: the service's reads and writes wait for the commit,
/// so none sees a half-loaded table and no insert takes an id the load is using. `follows` too: it
/// references users, and a replace empties it.
const LOCK_SQL: &str =
    "LOCK TABLE users, posts, follows, api_keys, idempotency_keys IN ACCESS EXCLUSIVE MODE";

/// Empties the tables (follows and API keys reference users, so they go too; so do idempotency
/// keys, which would otherwise replay a post of the old data). `RESTART IDENTITY` is
/// transactional: on rollback the sequences come back too.
const TRUNCATE_SQL: &str =
    "TRUNCATE api_keys, idempotency_keys, follows, posts, users RESTART IDENTITY";

/// The constraints of a table that make a load slow: primary key, unique, exclusion, foreign
/// keys. Checks stay: they cost little per row, and re-adding one would scan the table.
const CONSTRAINTS_SQL: &str = "
SELECT quote_ident(conname), pg_get_constraintdef(oid), contype = 'f'
FROM pg_constraint
WHERE conrelid = $1::text::regclass AND contype IN ('p', 'u', 'x', 'f')
ORDER BY contype = 'f', conname";

/// The indexes of a table that back no constraint.
const INDEXES_SQL: &str = "
SELECT quote_ident(ic.relname), pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = $1::text::regclass
  AND NOT EXISTS (
    SELECT 1 FROM pg_constraint c
    WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
ORDER BY ic.relname";

/// First free id of a table in append mode: past both its rows and its sequence (which the
/// service's inserts use), so no id is ever reused.
const NEXT_ID_SQL: &str = "
SELECT GREATEST(nextval(pg_get_serial_sequence('{table}', 'id')), (SELECT coalesce(max(id), 0) + 1 FROM {table}))";

/// Connects with a bounded wait and drives the connection on the runtime.
///
/// # Errors
/// The URL is not a PostgreSQL URL, or the server cannot be reached; messages name the host and
/// database, never the password.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let mut config: Config = url
        .parse()
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL connection URL"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("datagen");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", describe(&config)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `host:port/database` of a connection, without credentials.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}

/// Applies the load's session settings.
///
/// # Errors
/// PostgreSQL refuses a setting.
pub async fn configure(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(SETTINGS_SQL).await
}

/// Locks the tables until the commit.
///
/// # Errors
/// Lock timeout: a long transaction of someone else holds them.
pub async fn lock(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(LOCK_SQL).await
}

/// Deletes every user, post and follow and restarts the sequences, all undone on rollback.
///
/// # Errors
/// Lock timeout, or another table references `users` or `posts`.
pub async fn truncate(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(TRUNCATE_SQL).await
}

/// Where appended rows start: the first free user id and post id, and the newest post's time.
#[derive(Debug, Clone, Copy)]
pub struct Existing {
    pub next_user_id: i64,
    pub next_post_id: i64,
    pub newest_post: Option<DateTime<Utc>>,
}

/// Reads where an append must start; reserves the ids by advancing the sequences.
///
/// # Errors
/// Database errors.
pub async fn existing(tx: &Transaction<'_>) -> Result<Existing, tokio_postgres::Error> {
    let next_id = |table: &'static str| async move {
        let sql = NEXT_ID_SQL.replace("{table}", table);
        tx.query_one(&sql, &[])
            .await
            .map(|row| row.get::<_, i64>(0))
    };
    let next_user_id = next_id("users").await?;
    let next_post_id = next_id("posts").await?;
    let newest_post = tx
        .query_one("SELECT max(created_at) FROM posts", &[])
        .await?
        .get(0);
    Ok(Existing {
        next_user_id,
        next_post_id,
        newest_post,
    })
}

/// The indexes and constraints of one table, as the catalog defined them before the load dropped
/// them; rebuilding from these makes the end state exactly the migrations' schema.
#[derive(Debug)]
pub struct Deferred {
    /// The table, a name the load chose (never input).
    table: &'static str,
    /// `(quoted name, definition)` of primary key, unique and exclusion constraints.
    keys: Vec<(String, String)>,
    /// `(quoted name, definition)` of foreign keys.
    foreign_keys: Vec<(String, String)>,
    /// `CREATE INDEX` statements of indexes that back no constraint.
    indexes: Vec<(String, String)>,
}

impl Deferred {
    /// Reads the definitions, then drops the constraints and indexes of `table`.
    ///
    /// # Errors
    /// Database errors, e.g. another table's foreign key depends on the table's primary key.
    pub async fn drop_from(
        tx: &Transaction<'_>,
        table: &'static str,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut deferred = Self {
            table,
            keys: Vec::new(),
            foreign_keys: Vec::new(),
            indexes: Vec::new(),
        };
        for row in tx.query(CONSTRAINTS_SQL, &[&table]).await? {
            let entry = (row.get(0), row.get(1));
            if row.get(2) {
                deferred.foreign_keys.push(entry);
            } else {
                deferred.keys.push(entry);
            }
        }
        for row in tx.query(INDEXES_SQL, &[&table]).await? {
            deferred.indexes.push((row.get(0), row.get(1)));
        }
        for (name, _) in deferred.foreign_keys.iter().chain(&deferred.keys) {
            tx.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}"))
                .await?;
        }
        for (name, _) in &deferred.indexes {
            tx.batch_execute(&format!("DROP INDEX {name}")).await?;
        }
        Ok(deferred)
    }

    /// Rebuilds the primary key and the indexes, one sort each.
    ///
    /// # Errors
    /// Database errors; a duplicate key is a bug of the generator.
    pub async fn rebuild_indexes(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        for (name, definition) in &self.keys {
            tx.batch_execute(&format!(
                "ALTER TABLE {} ADD CONSTRAINT {name} {definition}",
                self.table
            ))
            .await?;
        }
        for (_, create) in &self.indexes {
            tx.batch_execute(create).await?;
        }
        Ok(())
    }

    /// Adds the foreign keys back, each validated by one anti-join instead of a trigger per row.
    /// Run after `ANALYZE`: with statistics and the all-visible pages of `COPY FREEZE`, the
    /// planner validates from an index-only scan of an index led by the key's column instead of
    /// reading the heap.
    ///
    /// # Errors
    /// Database errors; an unknown user is a bug of the generator.
    pub async fn restore_foreign_keys(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        for (name, definition) in &self.foreign_keys {
            tx.batch_execute(&format!(
                "ALTER TABLE {} ADD CONSTRAINT {name} {definition}",
                self.table
            ))
            .await?;
        }
        Ok(())
    }
}

/// `COPY` options: `FREEZE` when the table was truncated in this transaction, which writes the
/// rows already frozen and all-visible, so the first reads and VACUUM do not rewrite every page.
fn copy_options(freeze: bool) -> &'static str {
    if freeze {
        "(FORMAT binary, FREEZE)"
    } else {
        "(FORMAT binary)"
    }
}

/// Loads the users by binary `COPY`, with their follow counts: `followers[i]` and `following[i]`
/// belong to `users[i]`, so the counts the service keeps equal the follow rows from the start.
///
/// # Errors
/// Database errors, e.g. a username already taken in append mode.
pub async fn copy_users(
    tx: &Transaction<'_>,
    users: &[UserRow],
    followers: &[u64],
    following: &[u32],
    freeze: bool,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "COPY users (id, username, display_name, created_at, updated_at, followers_count, \
         following_count) FROM STDIN {}",
        copy_options(freeze)
    );
    let sink = tx.copy_in(&sql).await?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::INT8,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for ((user, &followers), &following) in users.iter().zip(followers).zip(following) {
        let followers = i64::try_from(followers).expect("fewer followers than users");
        writer
            .as_mut()
            .write(&[
                &user.id,
                &user.user.username,
                &user.user.display_name,
                &user.created_at,
                &user.created_at,
                &followers,
                &i64::from(following),
            ])
            .await?;
    }
    writer.finish().await
}

/// Loads the posts arriving on `chunks` by binary `COPY`, and counts them per author:
/// `per_user[user_id - first_user_id]`.
///
/// # Errors
/// Database errors.
pub async fn copy_posts(
    tx: &Transaction<'_>,
    mut chunks: mpsc::Receiver<Vec<PostRow>>,
    total: u64,
    freeze: bool,
    per_user: &mut [u64],
    first_user_id: i64,
    progress: &mut Progress,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "COPY posts (id, user_id, content, created_at, updated_at) FROM STDIN {}",
        copy_options(freeze)
    );
    let sink = tx.copy_in(&sql).await?;
    let types = [
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut done = 0;
    progress.start_rows("posts", total);
    while let Some(chunk) = chunks.recv().await {
        for post in &chunk {
            writer
                .as_mut()
                .write(&[
                    &post.id,
                    &post.user_id,
                    &post.content,
                    &post.created_at,
                    &post.created_at,
                ])
                .await?;
            per_user[(post.user_id - first_user_id) as usize] += 1;
        }
        done += chunk.len() as u64;
        progress.rows(done, total);
    }
    writer.finish().await
}

/// Loads the follows arriving on `chunks` by binary `COPY`, and counts each user's followers:
/// `followers[user_id - first_user_id]`.
///
/// # Errors
/// Database errors.
pub async fn copy_follows(
    tx: &Transaction<'_>,
    mut chunks: mpsc::Receiver<Vec<FollowRow>>,
    total: u64,
    freeze: bool,
    followers: &mut [u64],
    first_user_id: i64,
    progress: &mut Progress,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "COPY follows (follower_id, followee_id, created_at) FROM STDIN {}",
        copy_options(freeze)
    );
    let sink = tx.copy_in(&sql).await?;
    let types = [Type::INT8, Type::INT8, Type::TIMESTAMPTZ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut done = 0;
    progress.start_rows("follows", total);
    while let Some(chunk) = chunks.recv().await {
        for follow in &chunk {
            writer
                .as_mut()
                .write(&[&follow.follower_id, &follow.followee_id, &follow.created_at])
                .await?;
            followers[(follow.followee_id - first_user_id) as usize] += 1;
        }
        done += chunk.len() as u64;
        progress.rows(done, total);
    }
    writer.finish().await
}

/// Refreshes the planner's statistics; without them the page query of a hot user becomes a
/// bitmap scan plus sort, which reads and sorts every post of the user for a deep page.
///
/// # Errors
/// Database errors.
pub async fn analyze(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute("ANALYZE users, posts, follows").await
}

/// Moves both sequences to the last loaded ids, so the service's next insert gets a fresh id.
///
/// # Errors
/// Database errors.
pub async fn set_sequences(
    tx: &Transaction<'_>,
    last_user_id: i64,
    last_post_id: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('users', 'id'), $1), \
                setval(pg_get_serial_sequence('posts', 'id'), $2)",
        &[&last_user_id, &last_post_id],
    )
    .await
    .map(drop)
}
