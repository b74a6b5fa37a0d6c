//! Command line and environment configuration: one typed, validated set of settings.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{KeyHash, UserId};

mod cache;

pub use cache::{
    parse_key_prefix, CacheFetch, CacheMode, CacheSettings, DEFAULT_KEY_PREFIX, DEFAULT_REDIS_URLS,
};

/// PostgreSQL of the local stack (`scripts/stack.sh up`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/hotfeed";
/// The `ADMIN_API_KEY` that compose.yml uses when none is set: public, so the service warns.
pub const PLACEHOLDER_ADMIN_API_KEY: &str = "change-me-hotfeed-compose-admin-key";
/// Shortest `ADMIN_API_KEY` accepted: 32 characters of `[A-Za-z0-9-._~+/=]` is ~190 bits or more
/// when random (`openssl rand -base64 32` gives 44).
pub const ADMIN_API_KEY_MIN_LEN: usize = 32;

/// Top-level command line of the `hotfeed` binary.
#[derive(Debug, Parser)]
#[command(name = "hotfeed", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// What the binary should do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies pending migrations first unless `--no-migrate`).
    Serve(Box<Settings>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseSettings),
    /// Issue a new API key for an existing user and print it (shown this once; e.g. for a
    /// seeded user). The user's other keys stay valid.
    ApiKey(ApiKeyArgs),
}

/// What `hotfeed api-key` needs.
#[derive(Debug, Clone, Args)]
pub struct ApiKeyArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,

    /// The user the key acts as.
    #[arg(long, value_parser = parse_user_id)]
    pub user_id: UserId,
}

fn parse_user_id(raw: &str) -> Result<UserId, String> {
    UserId::parse(raw).map_err(|invalid| invalid.message)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Which requests the access log (`routes/observe.rs`) writes a line for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLog {
    /// Server errors and slow requests only: what an operator reads a log for. Every request
    /// still counts in `http_requests_total` and `http_request_duration_seconds`.
    ErrorsAndSlow,
    /// Every request.
    All,
}

/// A feature that can be switched off, to measure what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL connection URL (secrets in it are never logged).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: String,

    /// Maximum number of pooled PostgreSQL connections.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,

    /// Most requests that may wait on PostgreSQL at once (misses and writes; cache hits never
    /// count); past it a request is answered 503 `overloaded` at once instead of queueing.
    #[arg(long, env = "DB_MAX_INFLIGHT", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub db_max_inflight: u32,

    /// How long a request waits for a pooled PostgreSQL connection, in milliseconds.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,

    /// Longest any PostgreSQL statement may run, in milliseconds (`statement_timeout` on every
    /// connection); past it the request answers 503 `unavailable` and the connection is freed.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub db_statement_timeout_ms: u64,
}

/// Everything `hotfeed serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,

    /// Address the HTTP server binds to.
    #[arg(long, env = "APP_HOST", default_value = "0.0.0.0")]
    pub app_host: String,

    /// Port the HTTP server listens on (0 picks a free port).
    #[arg(long, env = "APP_PORT", default_value_t = 8080)]
    pub app_port: u16,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "APP_WORKERS")]
    pub app_workers: Option<usize>,

    /// Longest a client may take to send a request's head (line and headers), in milliseconds;
    /// past it the connection gets 408 and is closed.
    #[arg(long, env = "HTTP_HEAD_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub http_head_timeout_ms: u64,

    /// Longest from a request's start to the last byte of its body, in milliseconds; past it the
    /// request is answered 408 `body_timeout`, however slowly the bytes still trickle in.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub http_body_timeout_ms: u64,

    /// Longest from a request's start to its response, in milliseconds; past it the request is
    /// answered 503 `timeout`.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub http_request_timeout_ms: u64,

    /// Seconds an idle keep-alive connection stays open (0: no keep-alive).
    #[arg(long, env = "HTTP_KEEP_ALIVE_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub http_keep_alive_secs: u64,

    /// Most open connections per worker thread; past it new connections wait in the listen
    /// backlog until one closes.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// Seconds between SIGTERM/SIGINT and closing the listener: readiness (`/health`) answers 503
    /// and every response closes its connection, while requests are still served, so a load
    /// balancer takes the instance out before it refuses anything. Set it above the balancer's
    /// time to notice (check interval x failures); 0 (the default: no balancer to tell) stops at
    /// once. A second signal cuts the drain short.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_drain_secs: u64,

    /// Do not apply pending migrations at start.
    #[arg(long, env = "NO_MIGRATE", default_value_t = false)]
    pub no_migrate: bool,

    /// Which requests get a "request served" log line: `errors-and-slow` (5xx, and requests
    /// slower than LOG_SLOW_REQUEST_MS) or `all` (one line per request, as a development server
    /// writes; on a busy instance the logging costs more than serving a cached page).
    #[arg(long, env = "ACCESS_LOG", value_enum, default_value_t = AccessLog::ErrorsAndSlow)]
    pub access_log: AccessLog,

    /// A request that takes longer than this many milliseconds is logged whatever ACCESS_LOG says.
    #[arg(long, env = "LOG_SLOW_REQUEST_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub log_slow_request_ms: u64,

    #[command(flatten)]
    pub cache: CacheSettings,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub rate_limits: RateLimitSettings,

    /// Default page size of `GET /api/v1/users/{id}/posts`.
    #[arg(long, env = "PAGE_SIZE_DEFAULT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size_default: u32,

    /// Largest page size a client may ask for.
    #[arg(long, env = "PAGE_SIZE_MAX", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size_max: u32,

    /// Deepest `offset` accepted; deeper pages are a 400 `offset_too_deep` pointing to `cursor`,
    /// which reads any depth at the cost of the first page.
    #[arg(long, env = "PAGE_OFFSET_MAX", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub page_offset_max: u32,

    /// Followers from which an author is a celebrity: their posts are not fanned out to inboxes
    /// but merged from their outbox by each reader, so one post costs one write, not millions.
    #[arg(long, env = "FEED_CELEBRITY_FOLLOWERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub feed_celebrity_followers: u32,

    /// Distinct `user_id` label values kept in the per-user cache metrics; the rest are counted as "other".
    #[arg(long, env = "METRICS_USER_LABEL_LIMIT", default_value_t = 1000)]
    pub metrics_user_label_limit: usize,
}

/// Who may write.
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// Admin API key: acts as any user and opens admin endpoints; unset, there is no admin. At
    /// least 32 characters of [A-Za-z0-9-._~+/=], e.g. `openssl rand -base64 32`. Prefer the
    /// environment to the flag (a flag shows in `ps`); never logged.
    #[arg(
        long,
        env = "ADMIN_API_KEY",
        hide_env_values = true,
        value_parser = AdminKeyParser
    )]
    pub admin_api_key: Option<AdminKey>,
}

/// Parses `ADMIN_API_KEY` with an error that does not repeat the value: clap's own errors quote
/// what they refuse, which would print a key that is merely too short.
#[derive(Clone)]
struct AdminKeyParser;

impl clap::builder::TypedValueParser for AdminKeyParser {
    type Value = AdminKey;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<AdminKey, clap::Error> {
        let refused = |reason: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid ADMIN_API_KEY (--admin-api-key): {reason}\n"),
            )
        };
        let raw = value.to_str().ok_or_else(|| refused("not UTF-8"))?;
        AdminKey::parse(raw).map_err(|reason| refused(&reason))
    }
}

/// The admin API key, held only as its hash: it cannot be printed, logged or leaked by a dump.
#[derive(Clone, Copy)]
pub struct AdminKey(KeyHash);

impl AdminKey {
    /// Accepts a key of at least [`ADMIN_API_KEY_MIN_LEN`] characters that can go in an
    /// `Authorization: Bearer` header as it is (RFC 6750's token alphabet).
    ///
    /// # Errors
    /// A reason that does not repeat the key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let alphabet = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if raw.len() < ADMIN_API_KEY_MIN_LEN || !alphabet {
            return Err(format!(
                "the admin API key must be at least {ADMIN_API_KEY_MIN_LEN} characters of [A-Za-z0-9-._~+/=] (try `openssl rand -base64 32`)"
            ));
        }
        Ok(Self(KeyHash::of(raw)))
    }

    /// Whether a presented secret (by its hash) is this key; constant time.
    pub fn matches(&self, presented: &KeyHash) -> bool {
        self.0.matches(presented)
    }

    /// Whether this is the public placeholder of compose.yml.
    pub fn is_placeholder(&self) -> bool {
        self.matches(&KeyHash::of(PLACEHOLDER_ADMIN_API_KEY))
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(…)")
    }
}

/// How fast clients may go (GCRA: a sustained rate per second and a burst on top). A rate of 0
/// switches that limit off. The admin key is not limited.
#[derive(Debug, Clone, Args)]
pub struct RateLimitSettings {
    /// Writes per second one user may make (posts, edits, deletes, follows, as that user).
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_USER", default_value_t = 5)]
    pub rate_limit_writes_per_user: u32,

    /// Writes one user may make at once before the rate applies.
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_USER_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_writes_per_user_burst: u32,

    /// Writes per second from one client address (sign-ups included, and requests with a wrong key).
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_IP", default_value_t = 20)]
    pub rate_limit_writes_per_ip: u32,

    /// Writes one client address may make at once before the rate applies.
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_IP_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_writes_per_ip_burst: u32,

    /// Reads per second from one client address; 0 (the default) switches it off. Off because no
    /// one figure fits: an instance serves tens of thousands of hot pages a second from its
    /// in-process tier, and behind a balancer without `TRUST_FORWARDED_FOR` every client shares the
    /// balancer's address. Set it where clients reach the service directly.
    #[arg(long, env = "RATE_LIMIT_READS_PER_IP", default_value_t = 0)]
    pub rate_limit_reads_per_ip: u32,

    /// Reads one client address may make at once before the rate applies.
    #[arg(long, env = "RATE_LIMIT_READS_PER_IP_BURST", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_reads_per_ip_burst: u32,

    /// Take the client address from the last `X-Forwarded-For` entry (the one your proxy added)
    /// instead of the connection's peer. Only behind a proxy that sets it: otherwise any client
    /// picks its own address.
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
}

impl RateLimitSettings {
    /// No limit at all: for tests and benchmarks that measure something else.
    pub fn disabled() -> Self {
        Self {
            rate_limit_writes_per_user: 0,
            rate_limit_writes_per_user_burst: 1,
            rate_limit_writes_per_ip: 0,
            rate_limit_writes_per_ip_burst: 1,
            rate_limit_reads_per_ip: 0,
            rate_limit_reads_per_ip_burst: 1,
            trust_forwarded_for: false,
        }
    }
}

impl Settings {
    /// The settings `hotfeed serve` would run with here: flags none, then the environment, then
    /// the defaults. Tests and benchmarks start from these.
    ///
    /// # Errors
    /// An environment variable holds a value the option refuses.
    pub fn from_env() -> Result<Self, clap::Error> {
        let cli = Cli::try_parse_from(["hotfeed", "serve"])?;
        match cli.command {
            Command::Serve(settings) => Ok(*settings),
            Command::Migrate(_) | Command::ApiKey(_) => {
                unreachable!("parsed the serve subcommand")
            }
        }
    }

    /// Checks the relations between options that clap cannot express.
    ///
    /// # Errors
    /// A human-readable description of the first inconsistent option.
    pub fn validate(&self) -> Result<(), String> {
        if self.page_size_default > self.page_size_max {
            return Err(format!(
                "PAGE_SIZE_DEFAULT ({}) must not exceed PAGE_SIZE_MAX ({})",
                self.page_size_default, self.page_size_max
            ));
        }
        self.cache.validate()
    }

    /// How long after a request began its body must have arrived (`HTTP_BODY_TIMEOUT_MS`).
    pub fn http_body_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_timeout_ms)
    }

    /// How long after a request began it must be answered (`HTTP_REQUEST_TIMEOUT_MS`).
    pub fn http_request_timeout(&self) -> Duration {
        Duration::from_millis(self.http_request_timeout_ms)
    }

    /// Grace period for in-flight requests at shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// How long readiness fails before the listener closes (`SHUTDOWN_DRAIN_SECS`).
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_secs(self.shutdown_drain_secs)
    }
}

impl DatabaseSettings {
    /// How long a request waits for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }

    /// Longest a statement may run.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.db_statement_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_cannot_carry_hash_tags_or_globs() {
        assert_eq!(parse_key_prefix("hf:v2"), Ok("hf:v2".to_owned()));
        for bad in ["", "a{b}", "hf*", "h f", "a?"] {
            assert!(parse_key_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_service_refuses_a_key_prefix_with_a_hash_tag() {
        let parsed = Cli::try_parse_from(["hotfeed", "serve", "--cache-key-prefix", "a{b}"]);
        let error = parsed.expect_err("a{b} would put every key in one slot");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn admin_keys_too_short_or_outside_the_token_alphabet_are_refused() {
        let cases = [
            ("empty", String::new()),
            ("31 characters", "k".repeat(31)),
            ("a space", format!("{} x", "k".repeat(32))),
            ("a quote", format!("{}\"", "k".repeat(32))),
            ("non-ASCII", format!("{}é", "k".repeat(32))),
        ];
        for (what, raw) in cases {
            let error = AdminKey::parse(&raw).expect_err(what);
            if !raw.is_empty() {
                assert!(!error.contains(&raw), "{what}: the reason repeats the key");
            }
        }
        assert!(AdminKey::parse("qZ3+/x9_-.~=".repeat(3).as_str()).is_ok());
        let key = AdminKey::parse(PLACEHOLDER_ADMIN_API_KEY).expect("the placeholder is valid");
        assert!(key.is_placeholder());
        assert_eq!(format!("{key:?}"), "AdminKey(…)");
    }

    #[test]
    fn a_refused_admin_key_is_not_repeated_in_the_error() {
        let secret = "my-admin-secret-that-is-too-short";
        let parsed = Cli::try_parse_from(["hotfeed", "serve", "--admin-api-key", &secret[..20]]);
        let error = parsed.expect_err("20 characters are too few").to_string();
        assert!(error.contains("ADMIN_API_KEY"), "{error}");
        assert!(!error.contains(&secret[..20]), "{error}");
    }

    #[test]
    fn api_key_takes_a_positive_user_id() {
        let parsed = Cli::try_parse_from(["hotfeed", "api-key", "--user-id", "7"]).expect("valid");
        let Command::ApiKey(args) = parsed.command else {
            unreachable!("parsed api-key")
        };
        assert_eq!(args.user_id.get(), 7);
        for bad in ["0", "-1", "x"] {
            assert!(
                Cli::try_parse_from(["hotfeed", "api-key", "--user-id", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_default_page_size_above_the_maximum_is_refused() {
        let cli = Cli::try_parse_from([
            "hotfeed",
            "serve",
            "--page-size-default",
            "200",
            "--page-size-max",
            "100",
        ])
        .expect("each value is in range");
        let Command::Serve(settings) = cli.command else {
            unreachable!("parsed serve")
        };
        assert!(settings.validate().is_err());
    }

    #[test]
    fn reads_per_address_are_not_limited_by_default() {
        // One instance serves tens of thousands of hot pages a second, and behind a balancer every
        // client shares one address: the old default, 10,000/s, answered a single `wrk -c16` with
        // 429s (issue 22).
        let cli = Cli::try_parse_from(["hotfeed", "serve"]).expect("defaults parse");
        let Command::Serve(settings) = cli.command else {
            unreachable!("parsed serve")
        };
        assert_eq!(settings.rate_limits.rate_limit_reads_per_ip, 0);
    }
}
