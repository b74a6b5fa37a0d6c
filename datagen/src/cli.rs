//! The command line. Every option becomes its domain value while parsing, so a bad flag stops
//! the program before anything connects, let alone writes.

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, ValueEnum};
use hotfeed::config::{
    parse_key_prefix, DEFAULT_DATABASE_URL, DEFAULT_KEY_PREFIX, DEFAULT_REDIS_URLS,
};

/// Most users one run creates: they are generated and kept in memory before the load.
pub const MAX_USERS: u32 = 10_000_000;
/// Most posts one run creates: a bound that keeps every id and timestamp computation exact.
pub const MAX_POSTS: u64 = 1_000_000_000;
/// Longest `created_at` range, in days.
pub const MAX_SPAN_DAYS: u32 = 36_500;

/// Seeds hotfeed's PostgreSQL with users and Zipf-skewed posts at COPY speed.
///
/// The whole load is one transaction: an interrupted or failed run leaves the database as it was.
/// After a replace, the service's cached keys are flushed from the Redis Cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "datagen", version, about)]
pub struct Args {
    /// Users to create; post authors are drawn from them.
    #[arg(long, default_value_t = 100, value_parser = parse_users, allow_negative_numbers = true)]
    pub users: u32,

    /// Posts to create.
    #[arg(long, default_value_t = 2_000_000, value_parser = parse_posts, allow_negative_numbers = true)]
    pub posts: u64,

    /// Skew: exponent s of the Zipf distribution of posts over users (user k's share is
    /// proportional to 1/k^s); 1.0 gives user 1 of 100 about a fifth of all posts.
    #[arg(long, default_value_t = 1.0, value_parser = parse_exponent, allow_negative_numbers = true)]
    pub exponent: f64,

    /// Seed of the random generator: the same seed and --until give the same rows.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Days covered by the posts' created_at, ending at --until.
    #[arg(long, default_value_t = 365, value_parser = parse_span_days, allow_negative_numbers = true)]
    pub span_days: u32,

    /// End of the posts' created_at range, RFC 3339 [default: today 00:00 UTC, so runs on the
    /// same day are identical].
    #[arg(long, value_parser = parse_until)]
    pub until: Option<DateTime<Utc>>,

    /// What happens to the users and posts already in the database.
    #[arg(long, value_enum, default_value_t = Mode::Replace)]
    pub mode: Mode,

    /// PostgreSQL connection URL (secrets in it are never printed).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: String,

    /// Comma-separated Redis Cluster seed nodes, flushed of the service's keys after a replace
    /// (secrets in them are never printed).
    #[arg(
        long,
        env = "REDIS_URLS",
        value_delimiter = ',',
        hide_env_values = true,
        default_value = DEFAULT_REDIS_URLS
    )]
    pub redis_urls: Vec<String>,

    /// Prefix of the service's Redis keys: `<prefix>:*` is flushed after a replace.
    #[arg(long, env = "CACHE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX, value_parser = parse_key_prefix)]
    pub cache_key_prefix: String,

    /// Do not flush the cache after a replace (for a service running with CACHE=off).
    #[arg(long)]
    pub no_cache_flush: bool,
}

/// What a run does with existing users and posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Delete every user and post, then load; ids restart at 1, so the seed alone decides the data.
    Replace,
    /// Keep existing rows and add new users with their posts, ids and created_at after the
    /// existing ones; the cache stays valid, so it is not flushed.
    Append,
}

impl Args {
    /// The end of the `created_at` range: `--until`, or the start of the current UTC day.
    pub fn until_or_today(&self) -> DateTime<Utc> {
        self.until.unwrap_or_else(|| {
            Utc::now()
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists every day")
                .and_utc()
        })
    }

    /// The length of the `created_at` range.
    pub fn span(&self) -> TimeDelta {
        TimeDelta::days(i64::from(self.span_days))
    }
}

fn parse_count(raw: &str, what: &str, max: u64) -> Result<u64, String> {
    match raw.trim().replace('_', "").parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{what} must be a whole number from 1 to {max}")),
    }
}

fn parse_users(raw: &str) -> Result<u32, String> {
    parse_count(raw, "the number of users", u64::from(MAX_USERS))
        .map(|n| u32::try_from(n).expect("bounded by MAX_USERS"))
}

fn parse_posts(raw: &str) -> Result<u64, String> {
    parse_count(raw, "the number of posts", MAX_POSTS)
}

fn parse_span_days(raw: &str) -> Result<u32, String> {
    parse_count(raw, "the span in days", u64::from(MAX_SPAN_DAYS))
        .map(|n| u32::try_from(n).expect("bounded by MAX_SPAN_DAYS"))
}

fn parse_exponent(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 100.0 => Ok(s),
        _ => Err("the Zipf exponent must be a number greater than 0 (and at most 100)".into()),
    }
}

fn parse_until(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.to_utc())
        .map_err(|e| format!("expected an RFC 3339 timestamp such as 2026-01-31T00:00:00Z ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_consistent() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_reference_demo() {
        let args = Args::try_parse_from(["datagen"]).expect("defaults parse");
        assert_eq!((args.users, args.posts, args.seed), (100, 2_000_000, 42));
        assert_eq!(args.exponent, 1.0);
        assert_eq!(args.mode, Mode::Replace);
        assert!(args.until_or_today() <= Utc::now());
    }

    #[test]
    fn counts_accept_underscores_and_refuse_zero_and_negatives() {
        let args = Args::try_parse_from(["datagen", "--posts", "20_000"]).expect("parses");
        assert_eq!(args.posts, 20_000);
        for (flag, value) in [
            ("--users", "0"),
            ("--users", "-3"),
            ("--posts", "-1"),
            ("--posts", "1e6"),
            ("--exponent", "0"),
            ("--exponent", "-1.5"),
            ("--exponent", "NaN"),
            ("--span-days", "0"),
            ("--until", "yesterday"),
            ("--cache-key-prefix", "a{b}"),
        ] {
            let error = Args::try_parse_from(["datagen", flag, value]).expect_err(value);
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag} {value}"
            );
        }
    }
}
