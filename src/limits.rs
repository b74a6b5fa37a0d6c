//! Rate limits: keyed GCRA limiters (the `governor` crate), writes per acting user and per client
//! address, reads per client address. HTTP-free: routes decide what a request is and whose.
//!
//! Memory: a key's state is kept only while it differs from a fresh one, i.e. for at most
//! burst / rate seconds after the key's last request (2 to 4 s with the defaults); a cleanup every
//! [`CLEANUP_EVERY`] drops the rest and gives the memory back. So a limiter holds the keys seen in
//! the last burst / rate + 10 s, at about 80 bytes each (a 17-byte address or an 8-byte user id, an
//! 8-byte state, the map's slack): 100,000 distinct clients in that window cost about 8 MB.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitSettings;
use crate::domain::UserId;
use crate::metrics::{zero_series, Metrics};
use crate::tasks::Tasks;

/// How often idle keys are dropped from the limiters.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(10);

/// Which limit refused a request; the `limit` label of `http_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    WritesPerUser,
    WritesPerAddress,
    ReadsPerAddress,
}

impl Limit {
    /// Every limit, whose `http_rate_limited_total` series exist at 0 from the start.
    pub const ALL: [Self; 3] = [
        Self::WritesPerUser,
        Self::WritesPerAddress,
        Self::ReadsPerAddress,
    ];

    /// The label value, and the name in a 429's message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WritesPerUser => "writes_per_user",
            Self::WritesPerAddress => "writes_per_address",
            Self::ReadsPerAddress => "reads_per_address",
        }
    }
}

/// A request over a limit: which, and how long until it would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub limit: Limit,
    pub retry_after: Duration,
}

/// One limiter per limit; `None` when switched off (a rate of 0).
pub struct RateLimits {
    writes_per_user: Option<DefaultKeyedRateLimiter<UserId>>,
    writes_per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    reads_per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    /// The limiters `settings` ask for.
    pub fn new(settings: &RateLimitSettings, metrics: Arc<Metrics>) -> Self {
        zero_series(&metrics.rate_limited, Limit::ALL.map(Limit::as_str));
        Self {
            writes_per_user: limiter(
                settings.rate_limit_writes_per_user,
                settings.rate_limit_writes_per_user_burst,
            ),
            writes_per_address: limiter(
                settings.rate_limit_writes_per_ip,
                settings.rate_limit_writes_per_ip_burst,
            ),
            reads_per_address: limiter(
                settings.rate_limit_reads_per_ip,
                settings.rate_limit_reads_per_ip_burst,
            ),
            metrics,
        }
    }

    /// Counts a write acting as `user`.
    ///
    /// # Errors
    /// [`Throttled`] when `user` is over its write rate.
    pub fn write_as(&self, user: UserId) -> Result<(), Throttled> {
        self.check(self.writes_per_user.as_ref(), &user, Limit::WritesPerUser)
    }

    /// Counts a write from a client address.
    ///
    /// # Errors
    /// [`Throttled`] when the address is over its write rate.
    pub fn write_from(&self, address: IpAddr) -> Result<(), Throttled> {
        self.check(
            self.writes_per_address.as_ref(),
            &client_key(address),
            Limit::WritesPerAddress,
        )
    }

    /// Counts a read from a client address.
    ///
    /// # Errors
    /// [`Throttled`] when the address is over its read rate.
    pub fn read_from(&self, address: IpAddr) -> Result<(), Throttled> {
        self.check(
            self.reads_per_address.as_ref(),
            &client_key(address),
            Limit::ReadsPerAddress,
        )
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
        limit: Limit,
    ) -> Result<(), Throttled> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            self.metrics
                .rate_limited
                .with_label_values(&[limit.as_str()])
                .inc();
            Throttled {
                limit,
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            }
        })
    }

    /// Drops the keys whose state is the same as a fresh one and returns their memory.
    pub fn clean_up(&self) {
        fn clean<K: Hash + Eq + Clone>(limiter: Option<&DefaultKeyedRateLimiter<K>>) -> usize {
            limiter.map_or(0, |limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
        }
        let kept = [
            (Limit::WritesPerUser, clean(self.writes_per_user.as_ref())),
            (
                Limit::WritesPerAddress,
                clean(self.writes_per_address.as_ref()),
            ),
            (
                Limit::ReadsPerAddress,
                clean(self.reads_per_address.as_ref()),
            ),
        ];
        for (limit, keys) in kept {
            self.metrics
                .rate_limiter_keys
                .with_label_values(&[limit.as_str()])
                .set(i64::try_from(keys).unwrap_or(i64::MAX));
        }
    }

    /// Cleans up every [`CLEANUP_EVERY`] until shutdown.
    pub fn spawn_cleanup(self: &Arc<Self>, tasks: &Tasks) {
        let limits = Arc::clone(self);
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(CLEANUP_EVERY);
            loop {
                ticks.tick().await;
                limits.clean_up();
            }
        });
    }
}

fn limiter<K: Hash + Eq + Clone>(rate: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Some(DefaultKeyedRateLimiter::dashmap(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The key an address is limited under: an IPv4 address (also when mapped into IPv6) as it is, an
/// IPv6 address by its /64, the smallest block one subscriber usually holds, so that rotating
/// through one's own block does not escape the limit.
fn client_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(settings: impl FnOnce(&mut RateLimitSettings)) -> RateLimits {
        let mut all = RateLimitSettings::disabled();
        settings(&mut all);
        RateLimits::new(&all, Arc::new(Metrics::new(10)))
    }

    #[test]
    fn a_burst_is_admitted_then_the_next_request_waits_about_one_interval() {
        let limits = limits(|s| {
            s.rate_limit_writes_per_user = 2;
            s.rate_limit_writes_per_user_burst = 3;
        });
        let user = UserId::from_trusted(1);
        for n in 0..3 {
            assert_eq!(limits.write_as(user), Ok(()), "request {n} of the burst");
        }
        let throttled = limits.write_as(user).expect_err("past the burst");
        assert_eq!(throttled.limit, Limit::WritesPerUser);
        assert!(
            throttled.retry_after <= Duration::from_millis(500)
                && throttled.retry_after > Duration::from_millis(400),
            "one token every 500 ms: {:?}",
            throttled.retry_after
        );
        assert_eq!(
            limits.write_as(UserId::from_trusted(2)),
            Ok(()),
            "another user has a limit of their own"
        );
    }

    #[test]
    fn a_rate_of_zero_switches_a_limit_off() {
        let limits = limits(|_| {});
        let address: IpAddr = "192.0.2.1".parse().expect("an address");
        for _ in 0..10_000 {
            assert_eq!(limits.read_from(address), Ok(()));
        }
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_and_mapped_ipv4_as_ipv4() {
        let cases = [
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("192.0.2.7", "192.0.2.7"),
        ];
        for (address, key) in cases {
            let address: IpAddr = address.parse().expect("an address");
            let key: IpAddr = key.parse().expect("an address");
            assert_eq!(client_key(address), key, "{address}");
        }
    }

    #[test]
    fn clean_up_forgets_keys_that_are_back_to_a_fresh_state() {
        let limits = limits(|s| {
            s.rate_limit_reads_per_ip = 1000;
            s.rate_limit_reads_per_ip_burst = 1;
        });
        for n in 0..100_u8 {
            limits
                .read_from(IpAddr::from([192, 0, 2, n]))
                .expect("first request");
        }
        std::thread::sleep(Duration::from_millis(5));
        limits.clean_up();
        let reads = limits.reads_per_address.as_ref().expect("on");
        assert_eq!(
            reads.len(),
            0,
            "1 ms after their request, all were fresh again"
        );
    }
}
