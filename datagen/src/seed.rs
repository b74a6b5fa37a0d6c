//! One run, end to end: migrate, load in one transaction, commit, flush the cache.
//!
//! Atomicity: everything between `BEGIN` and `COMMIT` (truncate, drops, the COPYs of users, posts
//! and follows, rebuilds, ANALYZE, sequences) is one transaction. An interrupt cancels the running statement and closes the
//! connection; a failure returns before `COMMIT`. Either way PostgreSQL rolls back, and the
//! service, whose reads wait on the load's lock meanwhile, sees the old data or the new, never a
//! half-loaded table.

use std::future::Future;
use std::pin::pin;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hotfeed::cache::Keys;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls, Transaction};

use crate::cache;
use crate::cli::{Args, Mode};
use crate::generate::{Dataset, FollowGraph, UserRow, Window};
use crate::load::{self, Deferred};
use crate::progress::Progress;
use crate::report::{CacheOutcome, Followed, Report, Times, TopFollowed, TopUser};

/// Chunks generated ahead of the COPY: enough to ride out a slow moment on either side.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Users listed in each table of the report.
const TOP_USERS: usize = 10;
/// The tables whose indexes and constraints are rebuilt after the load rather than maintained row
/// by row (one sort per index instead of one tree insert per row), in an order that drops the foreign keys
/// of posts, follows and API keys before the primary key of users they reference. datagen writes
/// no API keys (`hotfeed api-key` issues them); the table is here for its foreign key.
const REBUILT: [&str; 4] = ["posts", "follows", "api_keys", "users"];

/// The run was interrupted before its commit; the database is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted: the load was rolled back, the database is unchanged")
    }
}

impl std::error::Error for Interrupted {}

/// What the transaction did before its commit.
struct Loaded {
    dataset: Dataset,
    top: Vec<TopUser>,
    followed: Followed,
    migrations: usize,
    times: Times,
}

/// Runs the whole seed. `interrupt` resolving (Ctrl-C) before the commit rolls everything back;
/// after the commit it only cuts the cache flush short.
///
/// # Errors
/// [`Interrupted`], or the first failure, with context; in both cases nothing was committed.
pub async fn run(
    args: &Args,
    progress: &mut Progress,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut interrupt = pin!(interrupt);

    progress.step("connecting to PostgreSQL");
    let mut client = tokio::select! {
        client = load::connect(&args.database_url) => client?,
        () = &mut interrupt => return Err(Interrupted.into()),
    };
    let cancel = client.cancel_token();
    let (tx, mut loaded) = tokio::select! {
        loaded = load_uncommitted(&mut client, args, progress) => loaded?,
        () = &mut interrupt => {
            // Stops the statement in progress (an index build can run for seconds) so that the
            // rollback and the release of the locks happen now, not when it would have ended.
            let _ = cancel.cancel_query(NoTls).await;
            return Err(Interrupted.into());
        }
    };

    progress.step("committing");
    let committing = Instant::now();
    tx.commit().await.context("committing the load")?;
    loaded.times.commit = committing.elapsed();
    loaded.times.total = started.elapsed();

    let cache = match (args.mode, args.no_cache_flush) {
        (Mode::Append, _) => CacheOutcome::NotNeeded,
        (Mode::Replace, true) => CacheOutcome::Skipped,
        (Mode::Replace, false) => {
            progress.step("flushing the service's keys from the Redis Cluster");
            let keys = Keys::new(args.cache_key_prefix.clone());
            let flushing = Instant::now();
            let outcome = tokio::select! {
                flushed = cache::flush(&args.redis_urls, &keys) => match flushed {
                    Ok(flushed) => CacheOutcome::Flushed(flushed),
                    Err(error) => CacheOutcome::Failed(format!("{error:#}")),
                },
                () = &mut interrupt => CacheOutcome::Failed("interrupted".into()),
            };
            loaded.times.flush = flushing.elapsed();
            outcome
        }
    };
    progress.finish();

    Ok(Report {
        mode: args.mode,
        dataset: loaded.dataset,
        migrations: loaded.migrations,
        times: loaded.times,
        top: loaded.top,
        followed: loaded.followed,
        cache,
        key_pattern: Keys::new(args.cache_key_prefix.clone()).pattern(),
    })
}

/// Everything up to, not including, the commit.
async fn load_uncommitted<'c>(
    client: &'c mut Client,
    args: &Args,
    progress: &mut Progress,
) -> anyhow::Result<(Transaction<'c>, Loaded)> {
    progress.step("applying migrations");
    let migrations = hotfeed::store::migrate(&args.database_url).await?;

    let tx = client
        .transaction()
        .await
        .context("starting the load transaction")?;
    load::configure(&tx)
        .await
        .context("configuring the load session")?;

    progress.step("locking users, posts and follows");
    load::lock(&tx)
        .await
        .context("locking users, posts and follows")?;

    let dataset = plan(&tx, args, progress).await?;
    let freeze = args.mode == Mode::Replace;

    let mut deferred = Vec::with_capacity(REBUILT.len());
    for table in REBUILT {
        deferred.push(
            Deferred::drop_from(&tx, table)
                .await
                .with_context(|| format!("dropping the indexes and constraints of {table}"))?,
        );
    }
    let users = dataset.users();
    let (per_user, posts) = load_posts(&tx, &dataset, users.len(), freeze, progress).await?;
    let (following, followers, follows) =
        load_follows(&tx, &dataset, &users, freeze, progress).await?;

    // Last, so that each user's row is written once, with counts equal to its follow rows.
    let copying = Instant::now();
    load::copy_users(&tx, &users, &followers, &following, freeze)
        .await
        .context("loading users")?;
    let users_copy = copying.elapsed();

    let (indexes, analyze, foreign_keys) = rebuild(&tx, &deferred, progress).await?;

    load::set_sequences(
        &tx,
        dataset.first_user_id + i64::from(dataset.users) - 1,
        dataset.first_post_id + dataset.posts as i64 - 1,
    )
    .await
    .context("moving the id sequences past the loaded rows")?;

    let top = top_users(&dataset, &users, &per_user);
    let followed = most_followed(&users, &followers);
    Ok((
        tx,
        Loaded {
            dataset,
            top,
            followed,
            migrations,
            times: Times {
                posts,
                follows,
                users: users_copy,
                indexes,
                foreign_keys,
                analyze,
                commit: Duration::ZERO,
                total: Duration::ZERO,
                flush: Duration::ZERO,
            },
        },
    ))
}

/// What this run generates: the arguments, placed after the existing rows when appending (the
/// tables are emptied first when replacing).
async fn plan(
    tx: &Transaction<'_>,
    args: &Args,
    progress: &mut Progress,
) -> anyhow::Result<Dataset> {
    let until = args.until_or_today();
    let mut window = Window {
        start: until - args.span(),
        end: until,
    };
    let (first_user_id, first_post_id) = match args.mode {
        Mode::Replace => {
            progress.step("emptying users, posts and follows");
            load::truncate(tx)
                .await
                .context("emptying users, posts and follows")?;
            (1, 1)
        }
        Mode::Append => {
            let existing = load::existing(tx)
                .await
                .context("reading where the existing rows end")?;
            if let Some(newest) = existing.newest_post {
                anyhow::ensure!(
                    newest < until,
                    "append: the newest existing post ({}) is not before --until ({}); pass a later --until",
                    newest.to_rfc3339(),
                    until.to_rfc3339()
                );
                window.start = window.start.max(newest);
            }
            (existing.next_user_id, existing.next_post_id)
        }
    };
    Ok(Dataset {
        users: args.users,
        posts: args.posts,
        exponent: args.exponent,
        seed: args.seed,
        window,
        first_user_id,
        first_post_id,
        follows_per_user: args.follows_per_user,
        follow_exponent: args.follow_exponent,
    })
}

/// Generates the posts on a thread of their own while they are copied; each user's count of
/// posts, and the time it took.
async fn load_posts(
    tx: &Transaction<'_>,
    dataset: &Dataset,
    users: usize,
    freeze: bool,
    progress: &mut Progress,
) -> anyhow::Result<(Vec<u64>, Duration)> {
    let copying = Instant::now();
    let (chunks, received) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let generator = {
        let dataset = dataset.clone();
        spawn_generator(
            "datagen-posts",
            dataset.chunk_count(),
            chunks,
            move |index| dataset.chunk(index),
        )
    };
    let mut per_user = vec![0; users];
    let copied = load::copy_posts(
        tx,
        received,
        dataset.posts,
        freeze,
        &mut per_user,
        dataset.first_user_id,
        progress,
    )
    .await
    .context("loading posts")?;
    join(generator, "post")?;
    anyhow::ensure!(
        copied == dataset.posts,
        "loaded {copied} posts instead of {}",
        dataset.posts
    );
    let posts = copying.elapsed();
    progress.done("posts generated and copied", posts);
    Ok((per_user, posts))
}

/// Generates the follow graph while it is copied; each user's following and follower counts,
/// and the time it took.
async fn load_follows(
    tx: &Transaction<'_>,
    dataset: &Dataset,
    users: &[UserRow],
    freeze: bool,
    progress: &mut Progress,
) -> anyhow::Result<(Vec<u32>, Vec<u64>, Duration)> {
    let copying = Instant::now();
    let mut graph = FollowGraph::new(dataset, users.iter().map(|u| u.created_at).collect());
    let following = graph.degrees().to_vec();
    let mut followers = vec![0; users.len()];
    if dataset.follows() > 0 {
        let (chunks, received) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let generator = spawn_generator(
            "datagen-follows",
            dataset.follow_chunk_count(),
            chunks,
            move |index| graph.chunk(index),
        );
        let copied = load::copy_follows(
            tx,
            received,
            dataset.follows(),
            freeze,
            &mut followers,
            dataset.first_user_id,
            progress,
        )
        .await
        .context("loading follows")?;
        join(generator, "follow")?;
        anyhow::ensure!(
            copied == dataset.follows(),
            "loaded {copied} follows instead of {}",
            dataset.follows()
        );
    }
    let follows = copying.elapsed();
    progress.done("follows generated and copied", follows);
    Ok((following, followers, follows))
}

/// Rebuilds what the load dropped, and analyzes: the times of the indexes, of ANALYZE and of the
/// foreign keys.
async fn rebuild(
    tx: &Transaction<'_>,
    deferred: &[Deferred],
    progress: &mut Progress,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    progress.step("building the primary keys and indexes");
    let building = Instant::now();
    for table in deferred {
        table
            .rebuild_indexes(tx)
            .await
            .context("rebuilding the primary keys and indexes")?;
    }
    let indexes = building.elapsed();
    progress.done("indexes built", indexes);

    progress.step("analyzing");
    let analyzing = Instant::now();
    load::analyze(tx).await.context("analyzing")?;
    let analyze = analyzing.elapsed();
    progress.done("analyzed", analyze);

    progress.step("validating the foreign keys");
    let validating = Instant::now();
    for table in deferred {
        table
            .restore_foreign_keys(tx)
            .await
            .context("restoring the foreign keys")?;
    }
    let foreign_keys = validating.elapsed();
    progress.done("foreign keys validated", foreign_keys);
    Ok((indexes, analyze, foreign_keys))
}

/// Generates `count` chunks in order on their own thread, so generation overlaps the COPY. Stops
/// early when the receiver is gone (the COPY failed or the run was interrupted).
fn spawn_generator<T: Send + 'static>(
    name: &str,
    count: u64,
    chunks: mpsc::Sender<Vec<T>>,
    mut chunk: impl FnMut(u64) -> Vec<T> + Send + 'static,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for index in 0..count {
                if chunks.blocking_send(chunk(index)).is_err() {
                    return;
                }
            }
        })
        .expect("the OS can start one thread")
}

/// Waits for a generator thread, turning its panic into an error.
fn join(generator: JoinHandle<()>, what: &str) -> anyhow::Result<()> {
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the {what} generator thread panicked"))
}

/// The users with the most posts, with their share and the Zipf expectation for their rank.
fn top_users(dataset: &Dataset, users: &[UserRow], per_user: &[u64]) -> Vec<TopUser> {
    let mut ranked: Vec<usize> = (0..users.len()).collect();
    ranked.sort_by_key(|&i| (std::cmp::Reverse(per_user[i]), i));
    ranked
        .into_iter()
        .take(TOP_USERS)
        .map(|i| TopUser {
            id: users[i].id,
            username: users[i].user.username.clone(),
            posts: per_user[i],
            share: per_user[i] as f64 / dataset.posts as f64,
            expected: dataset.expected_share(i as u32 + 1),
        })
        .collect()
}

/// The accounts with the most followers, and the median, which shows how skewed they are.
fn most_followed(users: &[UserRow], followers: &[u64]) -> Followed {
    let mut ranked: Vec<usize> = (0..users.len()).collect();
    ranked.sort_by_key(|&i| (std::cmp::Reverse(followers[i]), i));
    let median = followers[ranked[ranked.len() / 2]];
    let top = ranked
        .into_iter()
        .take(TOP_USERS)
        .map(|i| TopFollowed {
            id: users[i].id,
            username: users[i].user.username.clone(),
            followers: followers[i],
            share: followers[i] as f64 / users.len() as f64,
        })
        .collect();
    Followed { top, median }
}
