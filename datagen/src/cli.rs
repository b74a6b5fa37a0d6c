//! The command line. Every option becomes its domain value while parsing, so a bad flag stops
//! the program before anything connects, let alone writes.

use chrono::{DateTime, TimeDelta, Utc};
use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, ValueEnum};
use hotfeed::config::{
    parse_key_prefix, DEFAULT_DATABASE_URL, DEFAULT_KEY_PREFIX, DEFAULT_REDIS_URLS,
};

/// Most users one run creates: they are generated and kept in memory before the load.
pub const MAX_USERS: u32 = 10_000_000;
/// Most posts one run creates: a bound that keeps every id and timestamp computation exact.
pub const MAX_POSTS: u64 = 1_000_000_000;
/// Most follow rows one run creates (users × follows per user), the same bound as posts.
pub const MAX_FOLLOWS: u64 = 1_000_000_000;
/// Longest `created_at` range, in days.
pub const MAX_SPAN_DAYS: u32 = 36_500;

/// Seeds hotfeed's PostgreSQL with users, Zipf-skewed posts and a Zipf-popular follow graph at
/// COPY speed.
///
/// The whole load is one transaction: an interrupted or failed run leaves the database as it was.
/// After a replace, the service's cached keys are flushed from the Redis Cluster.
//
// The command line as typed; `Args` is what it means once the profile is applied.
#[derive(Debug, Clone, Parser)]
#[command(name = "datagen", version, about)]
struct Cli {
    /// Sizes to start from: demo = 100 users, 2,000,000 posts, 10 follows per user (1,000
    /// follows); feed = 100,000 users, 2,000,000 posts, 50 follows per user (5,000,000 follows).
    /// --users, --posts and --follows-per-user override each of its values.
    #[arg(long, value_enum, default_value_t = Profile::Demo)]
    profile: Profile,

    /// Users to create; post authors and followees are drawn from them [default: the profile's,
    /// 100 for demo, 100000 for feed].
    #[arg(long, value_parser = parse_users, allow_negative_numbers = true)]
    users: Option<u32>,

    /// Posts to create [default: the profile's, 2000000 for both].
    #[arg(long, value_parser = parse_posts, allow_negative_numbers = true)]
    posts: Option<u64>,

    /// Mean number of accounts each new user follows (each follows between N - N/2 and N + N/2,
    /// distinct, never itself); 0 seeds no follows. At most --users - 1 [default: the profile's,
    /// 10 for demo (lowered to --users - 1 for fewer than 11 users), 50 for feed].
    #[arg(long, value_parser = parse_follows_per_user, allow_negative_numbers = true)]
    follows_per_user: Option<u32>,

    /// Popularity skew: exponent s of the Zipf distribution followees are drawn from (user k is
    /// drawn with weight 1/k^s, so user 1 is the most followed); 1.0 makes user 1 of 100 followed
    /// by about 9 in 10 users at 10 follows per user.
    #[arg(long, default_value_t = 1.0, value_parser = parse_exponent, allow_negative_numbers = true)]
    follow_exponent: f64,

    /// Skew: exponent s of the Zipf distribution of posts over users (user k's share is
    /// proportional to 1/k^s); 1.0 gives user 1 of 100 about a fifth of all posts.
    #[arg(long, default_value_t = 1.0, value_parser = parse_exponent, allow_negative_numbers = true)]
    exponent: f64,

    /// Seed of the random generator: the same seed and --until give the same rows.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Days covered by the posts' created_at, ending at --until.
    #[arg(long, default_value_t = 365, value_parser = parse_span_days, allow_negative_numbers = true)]
    span_days: u32,

    /// End of the posts' created_at range, RFC 3339 [default: today 00:00 UTC, so runs on the
    /// same day are identical].
    #[arg(long, value_parser = parse_until)]
    until: Option<DateTime<Utc>>,

    /// What happens to the users, posts and follows already in the database.
    #[arg(long, value_enum, default_value_t = Mode::Replace)]
    mode: Mode,

    /// PostgreSQL connection URL (secrets in it are never printed).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    database_url: String,

    /// Comma-separated Redis Cluster seed nodes, flushed of the service's keys after a replace
    /// (secrets in them are never printed).
    #[arg(
        long,
        env = "REDIS_URLS",
        value_delimiter = ',',
        hide_env_values = true,
        default_value = DEFAULT_REDIS_URLS
    )]
    redis_urls: Vec<String>,

    /// Prefix of the service's Redis keys: `<prefix>:*` is flushed after a replace.
    #[arg(long, env = "CACHE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX, value_parser = parse_key_prefix)]
    cache_key_prefix: String,

    /// Do not flush the cache after a replace (for a service running with CACHE=off).
    #[arg(long)]
    no_cache_flush: bool,
}

/// One run's settings: the command line with the profile applied and the sizes checked against
/// each other. Built by [`Args::try_parse`] or [`Args::try_parse_from`].
#[derive(Debug, Clone)]
pub struct Args {
    /// The profile the sizes started from.
    pub profile: Profile,
    pub users: u32,
    pub posts: u64,
    /// Mean follows per new user; 0 seeds none.
    pub follows_per_user: u32,
    /// Zipf exponent of followee popularity.
    pub follow_exponent: f64,
    /// Zipf exponent of post authorship.
    pub exponent: f64,
    pub seed: u64,
    pub span_days: u32,
    pub until: Option<DateTime<Utc>>,
    pub mode: Mode,
    pub database_url: String,
    pub redis_urls: Vec<String>,
    pub cache_key_prefix: String,
    pub no_cache_flush: bool,
}

/// A named set of sizes; explicit flags override each of its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The reference's demo, every user's feed merged from several authors.
    Demo,
    /// The home-feed benchmark: a few hundred accounts above the service's celebrity threshold.
    Feed,
}

impl Profile {
    /// Users the profile creates.
    pub fn users(self) -> u32 {
        match self {
            Self::Demo => 100,
            Self::Feed => 100_000,
        }
    }

    /// Posts the profile creates.
    pub fn posts(self) -> u64 {
        2_000_000
    }

    /// Mean follows per user the profile asks for (lowered to users - 1 when the users are fewer).
    pub fn follows_per_user(self) -> u32 {
        match self {
            Self::Demo => 10,
            Self::Feed => 50,
        }
    }
}

/// What a run does with existing users, posts and follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Delete every user, post and follow, then load; ids restart at 1, so the seed alone decides
    /// the data.
    Replace,
    /// Keep existing rows and add new users with their posts and follows among them, ids and
    /// created_at after the existing ones; the cache stays valid, so it is not flushed.
    Append,
}

impl Args {
    /// Parses the process's command line (and environment).
    ///
    /// # Errors
    /// A bad flag, or sizes that contradict each other, as a clap error; `--help` and `--version`
    /// too, as clap reports them.
    pub fn try_parse() -> Result<Self, clap::Error> {
        Self::resolve(Cli::try_parse()?)
    }

    /// Parses a command line (and the environment); the first item is the program name.
    ///
    /// # Errors
    /// As [`Args::try_parse`].
    pub fn try_parse_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::resolve(Cli::try_parse_from(argv)?)
    }

    /// Applies the profile under the explicit flags and checks the sizes against each other.
    fn resolve(cli: Cli) -> Result<Self, clap::Error> {
        let invalid = |message: String| Cli::command().error(ErrorKind::ValueValidation, message);
        let profile = cli.profile;
        let users = cli.users.unwrap_or(profile.users());
        let follows_per_user = match cli.follows_per_user {
            Some(n) if n >= users => {
                return Err(invalid(format!(
                    "--follows-per-user {n} is too large for {users} users: a user follows at most \
                     the {} others",
                    users - 1
                )))
            }
            Some(n) => n,
            None => profile.follows_per_user().min(users - 1),
        };
        let follows = u64::from(users) * u64::from(follows_per_user);
        if follows > MAX_FOLLOWS {
            return Err(invalid(format!(
                "{users} users following {follows_per_user} accounts each make {follows} follows, \
                 more than the {MAX_FOLLOWS} one run creates"
            )));
        }
        Ok(Self {
            profile,
            users,
            posts: cli.posts.unwrap_or(profile.posts()),
            follows_per_user,
            follow_exponent: cli.follow_exponent,
            exponent: cli.exponent,
            seed: cli.seed,
            span_days: cli.span_days,
            until: cli.until,
            mode: cli.mode,
            database_url: cli.database_url,
            redis_urls: cli.redis_urls,
            cache_key_prefix: cli.cache_key_prefix,
            no_cache_flush: cli.no_cache_flush,
        })
    }

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
    parse_count_from(raw, what, 1, max)
}

fn parse_count_from(raw: &str, what: &str, min: u64, max: u64) -> Result<u64, String> {
    match raw.trim().replace('_', "").parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{what} must be a whole number from {min} to {max}")),
    }
}

fn parse_users(raw: &str) -> Result<u32, String> {
    parse_count(raw, "the number of users", u64::from(MAX_USERS))
        .map(|n| u32::try_from(n).expect("bounded by MAX_USERS"))
}

fn parse_posts(raw: &str) -> Result<u64, String> {
    parse_count(raw, "the number of posts", MAX_POSTS)
}

/// Up to `MAX_USERS - 1`; the bound of the run's own `--users` is checked once both are known.
fn parse_follows_per_user(raw: &str) -> Result<u32, String> {
    parse_count_from(
        raw,
        "the number of follows per user",
        0,
        u64::from(MAX_USERS - 1),
    )
    .map(|n| u32::try_from(n).expect("bounded by MAX_USERS"))
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
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_reference_demo() {
        let args = Args::try_parse_from(["datagen"]).expect("defaults parse");
        assert_eq!(args.profile, Profile::Demo);
        assert_eq!((args.users, args.posts, args.seed), (100, 2_000_000, 42));
        assert_eq!(args.follows_per_user, 10);
        assert_eq!((args.exponent, args.follow_exponent), (1.0, 1.0));
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
            ("--follows-per-user", "-1"),
            ("--follows-per-user", "ten"),
            ("--follows-per-user", "10000000"),
            ("--follow-exponent", "0"),
            ("--profile", "huge"),
        ] {
            let error = Args::try_parse_from(["datagen", flag, value]).expect_err(value);
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                ),
                "{flag} {value}: {:?}",
                error.kind()
            );
        }
    }

    #[test]
    fn the_feed_profile_sets_every_size_and_flags_override_each() {
        /// Users, posts, follows per user.
        type Sizes = (u32, u64, u32);
        let cases: [(&[&str], Sizes); 6] = [
            (&["--profile", "feed"], (100_000, 2_000_000, 50)),
            (
                &["--profile", "feed", "--users", "500"],
                (500, 2_000_000, 50),
            ),
            (&["--profile", "feed", "--posts", "7"], (100_000, 7, 50)),
            (
                &["--profile", "feed", "--follows-per-user", "0"],
                (100_000, 2_000_000, 0),
            ),
            (&["--profile", "feed", "--users", "20"], (20, 2_000_000, 19)),
            (&["--profile", "demo", "--users", "4"], (4, 2_000_000, 3)),
        ];
        for (flags, expected) in cases {
            let args = Args::try_parse_from(std::iter::once(&"datagen").chain(flags))
                .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            assert_eq!(
                (args.users, args.posts, args.follows_per_user),
                expected,
                "{flags:?}"
            );
        }
    }

    #[test]
    fn follows_per_user_must_leave_someone_to_follow() {
        let cases: [(&[&str], &str); 3] = [
            (
                &["--users", "100", "--follows-per-user", "100"],
                "--follows-per-user 100 is too large for 100 users",
            ),
            (
                &["--users", "1", "--follows-per-user", "1"],
                "a user follows at most the 0 others",
            ),
            (
                &["--users", "10000000", "--follows-per-user", "101"],
                "more than the 1000000000 one run creates",
            ),
        ];
        for (flags, message) in cases {
            let error =
                Args::try_parse_from(std::iter::once(&"datagen").chain(flags)).expect_err(message);
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{flags:?}");
            assert!(error.to_string().contains(message), "{flags:?}: {error}");
        }
        let one = Args::try_parse_from(["datagen", "--users", "1"]).expect("a lone user");
        assert_eq!(one.follows_per_user, 0, "the default leaves a lone user be");
    }
}
