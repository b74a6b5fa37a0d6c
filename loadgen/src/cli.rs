//! The command line, and the validated [`Plan`] a run follows.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use clap::builder::TypedValueParser as _;
use clap::Parser;
use reqwest::Url;

use crate::mix::{DepthMix, PageMix, UserSampler};

/// Longest measured phase (or warm-up) accepted: a load run is an experiment, not a soak.
pub const MAX_PHASE: Duration = Duration::from_secs(3600);

/// Page mix of a user's posts when `--offsets` is not given: mostly first pages, some deep ones.
pub const DEFAULT_OFFSETS: &str = "0=80,50=10,500=5,10000=5";

/// Walk depths of the home feed when `--depths` is not given: first pages only.
pub const DEFAULT_DEPTHS: &str = "1=100";

/// Highest `--write-rate` accepted, posts per second.
pub const MAX_WRITE_RATE: f64 = 100_000.0;

/// Skewed load for hotfeed: Zipf-distributed users, a page mix, open or closed loop.
///
/// Open loop (`--rate N`): request i is due at start + i/N whatever happened before it, and its
/// latency counts from that due time, so a stall shows in the percentiles instead of slowing the
/// load down. Closed loop (`--concurrency N`, the default with N = 16): N workers, each sending
/// its next request when the previous one answered, as fast as the service allows.
///
/// Home feed (`--endpoint feed`): each reader walks `--depths` pages down their feed, following
/// `next_cursor` page after page; `--rate` is then readers per second. `--write-rate N` adds N
/// posts per second on a schedule of their own, reported apart from the reads.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Base URL of the service; only loopback hosts are accepted.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Length of the measured phase (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Load sent before the measured phase and left out of every figure (fills caches, opens
    /// connections). 0s for none.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Open loop: requests per second, on a fixed schedule (home-feed walks: readers per second,
    /// each reading its pages one after another).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,

    /// Closed loop: number of workers, each with one request in flight [default: 16].
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Open loop (reads, and writes of `--write-rate`, each on its own): most requests in flight
    /// at once; a request due while all are busy is not sent and counted under the status
    /// `not_sent`.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Number of users to draw from: Zipf rank r is user id r (user 1 hottest), as datagen seeds.
    #[arg(long, default_value_t = 100)]
    pub users: u64,

    /// Zipf exponent s: user r is drawn with weight 1/r^s (0 = uniform); same meaning and default
    /// as datagen's `--exponent`.
    #[arg(long, visible_alias = "exponent", default_value_t = 1.0)]
    pub zipf_exponent: f64,

    /// Send every request for this one user instead of drawing users.
    #[arg(long)]
    pub user: Option<u64>,

    /// Page mix of a user's posts (`--endpoint posts`) as offset=weight pairs: mostly the first
    /// page, some deep pages [default: 0=80,50=10,500=5,10000=5].
    #[arg(long)]
    pub offsets: Option<PageMix>,

    /// Which listing each request reads: a user's own posts, or their home feed (the posts of
    /// everyone they follow, which draws offsets never: feeds page by cursor).
    #[arg(long, value_enum, default_value_t = Endpoint::Posts)]
    pub endpoint: Endpoint,

    /// Home feed only: how many pages each reader walks, following `next_cursor`, as depth=weight
    /// pairs, e.g. 1=80,2=10,5=5,20=5 (at most 1000 pages) [default: 1=100, first pages].
    #[arg(long)]
    pub depths: Option<DepthMix>,

    /// Read the page after this keyset cursor (a `next_cursor` the service returned) instead of
    /// drawing offsets: how a client pages deep without OFFSET.
    #[arg(long, conflicts_with_all = ["offsets", "depths"])]
    pub cursor: Option<String>,

    /// Also create this many posts per second (`POST /api/v1/posts`), open loop on a schedule of
    /// their own, latency from the due time; authors are drawn like the readers (Zipf), so the
    /// hottest accounts post too. Reported apart from the reads.
    #[arg(long)]
    pub write_rate: Option<f64>,

    /// Key that `--write-rate` posts are authenticated with (`Authorization: Bearer`): the
    /// service's ADMIN_API_KEY, which may post as any user, so the Zipf-drawn authors can write.
    #[arg(long, env = "ADMIN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Redis Cluster seed nodes of the service (comma-separated, as its REDIS_URLS): read once,
    /// for `CLUSTER SLOTS`, to name the node holding the most followed account's outbox. Without
    /// it the report names the account but not the node.
    #[arg(long, env = "REDIS_URLS")]
    pub redis_urls: Option<String>,

    /// Posts per page (`limit`).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,

    /// Time budget of one request; past it the request counts as `timeout`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Stop the measured phase after this many requests even if time remains.
    #[arg(long)]
    pub max_requests: Option<u64>,

    /// Worker threads of loadgen's own runtime. It shares the machine with the service: keep it low.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub threads: usize,

    /// Seed of the user and page draws, for repeatable request sequences.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How load is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// A fixed schedule of `rate` requests per second, at most `max_in_flight` outstanding.
    Open { rate: f64, max_in_flight: usize },
    /// `concurrency` workers, one request each in flight.
    Closed { concurrency: usize },
}

/// Posts written beside the reads: always open loop.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteLoad {
    /// Posts per second.
    pub rate: f64,
    /// Most posts in flight at once (`--max-in-flight`); one due while all are busy is `not_sent`.
    pub max_in_flight: usize,
    /// Sent as `Authorization: Bearer` with every post (`--api-key`).
    pub api_key: Option<String>,
}

/// The listing a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    /// `GET /api/v1/users/{id}/posts`.
    Posts,
    /// `GET /api/v1/users/{id}/feed`.
    Feed,
}

impl Endpoint {
    /// The listing's path segment after `/api/v1/users/{id}/`.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Posts => "posts",
            Self::Feed => "feed",
        }
    }

    /// The route pattern the service labels this listing's requests with.
    pub fn route(self) -> &'static str {
        match self {
            Self::Posts => "/api/v1/users/{id}/posts",
            Self::Feed => "/api/v1/users/{id}/feed",
        }
    }
}

/// A validated run: what the command line asked for, checked once.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base_url: Url,
    pub load: Load,
    pub duration: Duration,
    pub warmup: Duration,
    pub users: UserSampler,
    /// `--users`: the ids `1..=user_count` the Zipf draws come from.
    pub user_count: u64,
    pub offsets: PageMix,
    pub endpoint: Endpoint,
    /// Pages per home-feed walk; first pages only (`1=100`) for a user's posts.
    pub depths: DepthMix,
    pub cursor: Option<String>,
    /// Posts written beside the reads (`--write-rate`).
    pub writes: Option<WriteLoad>,
    /// Redis seed URLs for the slot map; empty for none.
    pub redis_urls: Vec<String>,
    pub limit: u32,
    pub timeout: Duration,
    pub max_requests: Option<u64>,
    pub seed: u64,
    pub progress: bool,
}

impl TryFrom<Args> for Plan {
    type Error = anyhow::Error;

    fn try_from(mut args: Args) -> anyhow::Result<Self> {
        let base_url = loopback_url(&args.url)?;
        ensure!(
            !args.duration.is_zero() && args.duration <= MAX_PHASE,
            "--duration must be more than 0 and at most {}",
            humantime::format_duration(MAX_PHASE)
        );
        ensure!(
            args.warmup <= MAX_PHASE,
            "--warmup must be at most {}",
            humantime::format_duration(MAX_PHASE)
        );
        ensure!(!args.timeout.is_zero(), "--timeout must be more than 0");
        ensure!(args.limit >= 1, "--limit must be at least 1");
        ensure!(
            args.max_in_flight >= 1,
            "--max-in-flight must be at least 1"
        );
        let load = read_load(&args)?;
        let (offsets, depths) = page_mixes(&mut args)?;
        let writes = write_load(&mut args)?;
        let redis_urls = redis_seeds(args.redis_urls.as_deref().unwrap_or_default())?;
        let users = match args.user {
            Some(user) => {
                ensure!(user >= 1, "--user must be at least 1");
                UserSampler::fixed(user)
            }
            None => UserSampler::zipf(args.users, args.zipf_exponent)?,
        };
        Ok(Self {
            base_url,
            load,
            duration: args.duration,
            warmup: args.warmup,
            users,
            user_count: args.users,
            offsets,
            endpoint: args.endpoint,
            depths,
            cursor: args.cursor,
            writes,
            redis_urls,
            limit: args.limit,
            timeout: args.timeout,
            max_requests: args.max_requests,
            seed: args.seed.unwrap_or_else(rand::random),
            progress: !args.quiet,
        })
    }
}

/// The read load: open at `--rate`, else closed at `--concurrency` (16).
fn read_load(args: &Args) -> anyhow::Result<Load> {
    match (args.rate, args.concurrency) {
        (Some(rate), _) => {
            ensure!(
                rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0,
                "--rate must be more than 0 and at most 1000000 requests/s, got {rate}"
            );
            Ok(Load::Open {
                rate,
                max_in_flight: args.max_in_flight,
            })
        }
        (None, concurrency) => {
            let concurrency = concurrency.unwrap_or(16);
            ensure!(
                (1..=10_000).contains(&concurrency),
                "--concurrency must be from 1 to 10000, got {concurrency}"
            );
            Ok(Load::Closed { concurrency })
        }
    }
}

/// The pages asked for: offsets for a user's posts, walk depths for the home feed; the option of
/// the other endpoint is refused.
fn page_mixes(args: &mut Args) -> anyhow::Result<(PageMix, DepthMix)> {
    let default_offsets = || -> PageMix { DEFAULT_OFFSETS.parse().expect("the default parses") };
    let default_depths = || -> DepthMix { DEFAULT_DEPTHS.parse().expect("the default parses") };
    match args.endpoint {
        Endpoint::Posts => {
            ensure!(
                args.depths.is_none(),
                "--depths walks the home feed by cursor (--endpoint feed); a user's posts are \
                 drawn from --offsets"
            );
            Ok((
                args.offsets.take().unwrap_or_else(default_offsets),
                default_depths(),
            ))
        }
        Endpoint::Feed => {
            ensure!(
                args.offsets.is_none(),
                "--offsets does not apply to --endpoint feed: the feed pages by cursor only; \
                 walk it deeper with --depths (e.g. 1=80,2=10,5=5,20=5)"
            );
            Ok((
                default_offsets(),
                args.depths.take().unwrap_or_else(default_depths),
            ))
        }
    }
}

/// The write load of `--write-rate`, if any.
fn write_load(args: &mut Args) -> anyhow::Result<Option<WriteLoad>> {
    let Some(rate) = args.write_rate else {
        return Ok(None);
    };
    ensure!(
        rate.is_finite() && rate > 0.0 && rate <= MAX_WRITE_RATE,
        "--write-rate must be more than 0 and at most {MAX_WRITE_RATE} posts/s, got \
         {rate} (leave it out for reads only)"
    );
    Ok(Some(WriteLoad {
        rate,
        max_in_flight: args.max_in_flight,
        api_key: args.api_key.take().filter(|key| !key.is_empty()),
    }))
}

impl Plan {
    /// The plan the command line would give for `args` (program name not included).
    ///
    /// # Errors
    /// Unknown flags or invalid values, as the command line would report them.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(
            std::iter::once(std::ffi::OsString::from("loadgen"))
                .chain(args.into_iter().map(Into::into)),
        )?;
        Self::try_from(args)
    }
}

/// Parses the base URL and refuses anything but a loopback host: load is only ever sent to this
/// machine.
fn loopback_url(raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).with_context(|| format!("--url {raw:?} is not a URL"))?;
    ensure!(
        url.scheme() == "http",
        "--url must be plain http:// (loadgen has no TLS), got {raw:?}"
    );
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--url must point at this machine (localhost, 127.0.0.0/8 or [::1]), got {host:?}");
    }
    Ok(url)
}

/// Splits `--redis-urls` into seed URLs, refusing anything that is not `redis://` or `rediss://`.
fn redis_seeds(raw: &str) -> anyhow::Result<Vec<String>> {
    raw.split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .map(|seed| {
            let url =
                Url::parse(seed).with_context(|| format!("--redis-urls: {seed:?} is not a URL"))?;
            ensure!(
                matches!(url.scheme(), "redis" | "rediss"),
                "--redis-urls: {seed:?} is not a redis:// or rediss:// URL"
            );
            Ok(seed.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_interface_parses() {
        let cases: [(&[&str], Load); 3] = [
            (
                &["--url", "http://127.0.0.1:8080", "--duration", "10s"],
                Load::Closed { concurrency: 16 },
            ),
            (
                &["--duration", "10s", "--rate", "250", "--json"],
                Load::Open {
                    rate: 250.0,
                    max_in_flight: 1024,
                },
            ),
            (
                &["--duration", "1m", "--concurrency", "4"],
                Load::Closed { concurrency: 4 },
            ),
        ];
        for (args, load) in cases {
            let plan = Plan::from_args(args.iter().copied()).expect("valid arguments");
            assert_eq!(plan.load, load, "load of {args:?}");
        }
    }

    #[test]
    fn the_feed_walks_and_writes_parse() {
        // Arrange
        let args = [
            "--endpoint",
            "feed",
            "--depths",
            "1=80,2=10,5=5,20=5",
            "--write-rate",
            "25.5",
            "--max-in-flight",
            "64",
            "--api-key",
            "hf_secret",
            "--redis-urls",
            "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
        ];

        // Act
        let plan = Plan::from_args(args).expect("valid arguments");

        // Assert
        assert_eq!(plan.endpoint, Endpoint::Feed);
        assert_eq!(plan.depths.to_string(), "1=80,2=10,5=5,20=5");
        assert_eq!(plan.depths.max(), 20);
        assert_eq!(
            plan.writes,
            Some(WriteLoad {
                rate: 25.5,
                max_in_flight: 64,
                api_key: Some("hf_secret".to_owned()),
            })
        );
        assert_eq!(
            plan.redis_urls,
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
    }

    #[test]
    fn each_listing_gets_its_own_default_mix() {
        let feed = Plan::from_args(["--endpoint", "feed", "--redis-urls", ""]).expect("valid");
        assert_eq!(feed.depths.to_string(), DEFAULT_DEPTHS, "first pages only");
        assert_eq!(feed.writes, None, "no writes unless asked for");
        assert!(feed.redis_urls.is_empty());
        let posts = Plan::from_args(["--duration", "1s"]).expect("valid");
        assert_eq!(posts.offsets.to_string(), DEFAULT_OFFSETS);
        assert_eq!(
            posts.depths.max(),
            1,
            "a user's posts are read a page at a time"
        );
    }

    #[test]
    fn invalid_runs_are_refused_with_a_reason() {
        let cases: [(&[&str], &str); 19] = [
            (
                &["--url", "http://10.0.0.8:8080"],
                "must point at this machine",
            ),
            (
                &["--url", "http://example.com"],
                "must point at this machine",
            ),
            (&["--url", "https://127.0.0.1"], "plain http"),
            (&["--rate", "0"], "--rate must be more than 0"),
            (
                &["--rate", "5", "--concurrency", "2"],
                "cannot be used with",
            ),
            (&["--duration", "0s"], "--duration must be more than 0"),
            (&["--offsets", "0=0"], "weight"),
            (
                &["--endpoint", "feed", "--offsets", "0=1"],
                "the feed pages by cursor only",
            ),
            (
                &["--depths", "1=80,5=20"],
                "--depths walks the home feed by cursor (--endpoint feed)",
            ),
            (
                &["--endpoint", "feed", "--depths", "0=1"],
                "depth 0 is out of range: from 1 to 1000",
            ),
            (
                &["--endpoint", "feed", "--depths", "5"],
                "\"5\" is not depth=weight",
            ),
            (
                &["--endpoint", "feed", "--depths", "2=1", "--cursor", "AQ"],
                "cannot be used with",
            ),
            (
                &["--write-rate", "0"],
                "--write-rate must be more than 0 and at most 100000 posts/s, got 0",
            ),
            (&["--write-rate=-3"], "--write-rate must be more than 0"),
            (&["--write-rate", "NaN"], "--write-rate must be more than 0"),
            (
                &["--write-rate", "fast"],
                "invalid value 'fast' for '--write-rate",
            ),
            (
                &["--redis-urls", "127.0.0.1:7000"],
                "--redis-urls: \"127.0.0.1:7000\" is not a URL",
            ),
            (
                &["--redis-urls", "http://127.0.0.1:7000"],
                "is not a redis:// or rediss:// URL",
            ),
            (
                &["--write-rate", "5", "--max-in-flight", "0"],
                "--max-in-flight must be at least 1",
            ),
        ];
        for (args, reason) in cases {
            let error = Plan::from_args(args.iter().copied())
                .expect_err(&format!("{args:?} should be refused"));
            assert!(
                format!("{error:#}").contains(reason),
                "{args:?}: expected {reason:?} in {error:#}"
            );
        }
    }

    #[test]
    fn loopback_hosts_are_accepted() {
        for url in ["http://localhost:1", "http://127.0.0.2:1", "http://[::1]:1"] {
            assert!(loopback_url(url).is_ok(), "{url}");
        }
    }
}
