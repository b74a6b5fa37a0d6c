//! The closing summary: what was written, how fast, and how skewed.

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
    pub cache: CacheOutcome,
    /// The keys a flush removes, `<prefix>:*`.
    pub key_pattern: String,
}

/// Durations of the phases.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Generating and copying the posts (overlapped).
    pub copy: Duration,
    /// Rebuilding primary key and indexes.
    pub indexes: Duration,
    /// Validating foreign keys.
    pub foreign_keys: Duration,
    pub analyze: Duration,
    pub commit: Duration,
    /// From the start of the run to the commit: when the posts became query-ready.
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
    /// Posts made query-ready per second, end to end.
    pub fn posts_per_second(&self) -> f64 {
        self.dataset.posts as f64 / self.times.total.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = &self.dataset;
        let verb = match self.mode {
            Mode::Replace => "replaced all users and posts with",
            Mode::Append => "appended",
        };
        writeln!(
            f,
            "datagen: {verb} {} users (ids from {}) and {} posts (ids from {})",
            HumanCount(u64::from(data.users)),
            data.first_user_id,
            HumanCount(data.posts),
            data.first_post_id
        )?;
        writeln!(
            f,
            "  seed {}, Zipf exponent {}, created_at from {} to {}{}",
            data.seed,
            data.exponent,
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
            "  query-ready in {:.2} s: {} posts/s end to end \
             (generate+COPY {:.2} s, indexes {:.2} s, analyze {:.2} s, foreign keys {:.2} s, commit {:.2} s)",
            t.total.as_secs_f64(),
            HumanCount(self.posts_per_second().round() as u64),
            t.copy.as_secs_f64(),
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
}
