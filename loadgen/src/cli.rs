//! The command line, and the validated [`Plan`] a run follows.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use clap::builder::TypedValueParser as _;
use clap::Parser;
use reqwest::Url;

use crate::mix::{PageMix, UserSampler};

/// Longest measured phase (or warm-up) accepted: a load run is an experiment, not a soak.
pub const MAX_PHASE: Duration = Duration::from_secs(3600);

/// Skewed load for hotfeed: Zipf-distributed users, a page mix, open or closed loop.
///
/// Open loop (`--rate N`): request i is due at start + i/N whatever happened before it, and its
/// latency counts from that due time, so a stall shows in the percentiles instead of slowing the
/// load down. Closed loop (`--concurrency N`, the default with N = 16): N workers, each sending
/// its next request when the previous one answered, as fast as the service allows.
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

    /// Open loop: requests per second, on a fixed schedule.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,

    /// Closed loop: number of workers, each with one request in flight [default: 16].
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Open loop: most requests in flight at once; a request due while all are busy is not sent
    /// and counted under the status `not_sent`.
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

    /// Page mix as offset=weight pairs: mostly the first page, some deep pages.
    #[arg(long, default_value = "0=80,50=10,500=5,10000=5")]
    pub offsets: PageMix,

    /// Which listing each request reads: a user's own posts, or their home feed (the posts of
    /// everyone they follow, which draws offsets never: feeds page by cursor).
    #[arg(long, value_enum, default_value_t = Endpoint::Posts)]
    pub endpoint: Endpoint,

    /// Read the page after this keyset cursor (a `next_cursor` the service returned) instead of
    /// drawing offsets: how a client pages deep without OFFSET.
    #[arg(long, conflicts_with = "offsets")]
    pub cursor: Option<String>,

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

/// The listing a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    /// `GET /api/v1/users/{id}/posts`.
    Posts,
    /// `GET /api/v1/users/{id}/feed`.
    Feed,
}

/// A validated run: what the command line asked for, checked once.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base_url: Url,
    pub load: Load,
    pub duration: Duration,
    pub warmup: Duration,
    pub users: UserSampler,
    pub offsets: PageMix,
    pub endpoint: Endpoint,
    pub cursor: Option<String>,
    pub limit: u32,
    pub timeout: Duration,
    pub max_requests: Option<u64>,
    pub seed: u64,
    pub progress: bool,
}

impl TryFrom<Args> for Plan {
    type Error = anyhow::Error;

    fn try_from(args: Args) -> anyhow::Result<Self> {
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
        let load = match (args.rate, args.concurrency) {
            (Some(rate), _) => {
                ensure!(
                    rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0,
                    "--rate must be more than 0 and at most 1000000 requests/s, got {rate}"
                );
                ensure!(
                    args.max_in_flight >= 1,
                    "--max-in-flight must be at least 1"
                );
                Load::Open {
                    rate,
                    max_in_flight: args.max_in_flight,
                }
            }
            (None, concurrency) => {
                let concurrency = concurrency.unwrap_or(16);
                ensure!(
                    (1..=10_000).contains(&concurrency),
                    "--concurrency must be from 1 to 10000, got {concurrency}"
                );
                Load::Closed { concurrency }
            }
        };
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
            offsets: args.offsets,
            endpoint: args.endpoint,
            cursor: args.cursor,
            limit: args.limit,
            timeout: args.timeout,
            max_requests: args.max_requests,
            seed: args.seed.unwrap_or_else(rand::random),
            progress: !args.quiet,
        })
    }
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
    fn invalid_runs_are_refused_with_a_reason() {
        let cases: [(&[&str], &str); 7] = [
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
