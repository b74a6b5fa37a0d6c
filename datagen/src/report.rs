//! The closing summary: what was written, how fast, and how skewed: who wrote the most posts, and
//! who has the most followers.

use std::fmt;
use std::time::Duration;

use indicatif::HumanCount;

use crate::cache::Flushed;
use crate::cli::Mode;
use crate::generate::Dataset;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub dataset: Dataset,
    /// Migrations applied before the load (0 when the schema was up to date).
    pub migrations: usize,
    pub times: Times,
    /// The users with the most posts, most first.
    pub top: Vec<TopUser>,
    /// The accounts with the most followers.
    pub followed: Followed,
    pub cache: CacheOutcome,
    /// The keys a flush removes, `<prefix>:*`.
    pub key_pattern: String,
}

/// Durations of the phases.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Generating and copying the posts (overlapped).
    pub posts: Duration,
    /// Generating and copying the follows (overlapped).
    pub follows: Duration,
    /// Copying the users, with their counts.
    pub users: Duration,
    /// Rebuilding primary keys and indexes.
    pub indexes: Duration,
    /// Validating foreign keys.
    pub foreign_keys: Duration,
    pub analyze: Duration,
    pub commit: Duration,
    /// From the start of the run to the commit: when the rows became query-ready.
    pub total: Duration,
    pub flush: Duration,
}

/// One line of the top-users table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopUser {
    pub id: i64,
    pub username: String,
    pub posts: u64,
    /// Fraction of all generated posts.
    pub share: f64,
    /// What the Zipf distribution predicts for this user's rank.
    pub expected: f64,
}

/// The most-followed accounts.
#[derive(Debug, Clone, PartialEq)]
pub struct Followed {
    /// Most followers first.
    pub top: Vec<TopFollowed>,
    /// Followers of the median generated user.
    pub median: u64,
}

/// One line of the most-followed table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopFollowed {
    pub id: i64,
    pub username: String,
    pub followers: u64,
    /// Fraction of the generated users who follow this account.
    pub share: f64,
}

/// Whether the cache can still serve the old data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The deployment's keys were unlinked.
    Flushed(Flushed),
    /// An append changes no cached user, page or post.
    NotNeeded,
    /// `--no-cache-flush`.
    Skipped,
    /// The flush did not complete; the service may serve old data until the keys expire.
    Failed(String),
}

impl Report {
    /// Rows (users, posts and follows) made query-ready per second, end to end.
    pub fn rows_per_second(&self) -> f64 {
        let data = &self.dataset;
        let rows = u64::from(data.users) + data.posts + data.follows();
        rows as f64 / self.times.total.as_secs_f64().max(1e-9)
    }

    /// The table of the users with the most posts.
    fn top_by_posts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  top {} users by posts:", self.top.len())?;
        writeln!(
            f,
            "  {:>4}  {:>8}  {:<26} {:>11}  {:>7}  {:>7}",
            "rank", "user_id", "username", "posts", "share", "Zipf"
        )?;
        for (rank, user) in self.top.iter().enumerate() {
            writeln!(
                f,
                "  {:>4}  {:>8}  {:<26} {:>11}  {:>6.2}%  {:>6.2}%",
                rank + 1,
                user.id,
                user.username,
                HumanCount(user.posts).to_string(),
                100.0 * user.share,
                100.0 * user.expected
            )?;
        }
        Ok(())
    }

    /// The table of the most followed users.
    fn top_by_followers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  top {} users by followers (the median user has {}):",
            self.followed.top.len(),
            HumanCount(self.followed.median)
        )?;
        writeln!(
            f,
            "  {:>4}  {:>8}  {:<26} {:>11}  {:>8}",
            "rank", "user_id", "username", "followers", "of users"
        )?;
        for (rank, user) in self.followed.top.iter().enumerate() {
            writeln!(
                f,
                "  {:>4}  {:>8}  {:<26} {:>11}  {:>7.2}%",
                rank + 1,
                user.id,
                user.username,
                HumanCount(user.followers).to_string(),
                100.0 * user.share
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = &self.dataset;
        let verb = match self.mode {
            Mode::Replace => "replaced all users, posts and follows with",
            Mode::Append => "appended",
        };
        writeln!(
            f,
            "datagen: {verb} {} users (ids from {}), {} posts (ids from {}) and {} follows \
             ({} per user on average)",
            HumanCount(u64::from(data.users)),
            data.first_user_id,
            HumanCount(data.posts),
            data.first_post_id,
            HumanCount(data.follows()),
            data.follows_per_user
        )?;
        writeln!(
            f,
            "  seed {}, Zipf exponent {} (posts) and {} (followees), created_at from {} to {}{}",
            data.seed,
            data.exponent,
            data.follow_exponent,
            data.window.start.format("%Y-%m-%dT%H:%M:%SZ"),
            data.window.end.format("%Y-%m-%dT%H:%M:%SZ"),
            if self.migrations > 0 {
                format!(", migrations applied first: {}", self.migrations)
            } else {
                String::new()
            }
        )?;
        let t = &self.times;
        writeln!(
            f,
            "  query-ready in {:.2} s: {} rows/s end to end (generate+COPY posts {:.2} s, \
             follows {:.2} s, COPY users {:.2} s, indexes {:.2} s, analyze {:.2} s, \
             foreign keys {:.2} s, commit {:.2} s)",
            t.total.as_secs_f64(),
            HumanCount(self.rows_per_second().round() as u64),
            t.posts.as_secs_f64(),
            t.follows.as_secs_f64(),
            t.users.as_secs_f64(),
            t.indexes.as_secs_f64(),
            t.analyze.as_secs_f64(),
            t.foreign_keys.as_secs_f64(),
            t.commit.as_secs_f64(),
        )?;
        match &self.cache {
            CacheOutcome::Flushed(flushed) => writeln!(
                f,
                "  cache: unlinked {} keys matching {} on {} masters in {:.2} s",
                HumanCount(flushed.keys),
                self.key_pattern,
                flushed.masters,
                t.flush.as_secs_f64()
            )?,
            CacheOutcome::NotNeeded => {
                writeln!(f, "  cache: left as is (an append changes no cached data)")?
            }
            CacheOutcome::Skipped => writeln!(f, "  cache: not flushed (--no-cache-flush)")?,
            CacheOutcome::Failed(error) => writeln!(f, "  cache: NOT FLUSHED ({error})")?,
        }
        self.top_by_posts(f)?;
        if data.follows() == 0 {
            return writeln!(f, "  no follows (--follows-per-user 0)");
        }
        self.top_by_followers(f)
    }
}
