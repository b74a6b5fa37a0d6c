//! What each request asks for: a user drawn from a Zipf distribution, and a page offset (a user's
//! posts) or a walk depth (a home feed, paged by cursor) from a weighted mix.

use std::fmt;
use std::str::FromStr;

use anyhow::{ensure, Context as _};
use rand::distr::weighted::WeightedIndex;
use rand::Rng;
use rand_distr::{Distribution as _, Zipf};

/// Draws the user of each request.
#[derive(Debug, Clone)]
pub enum UserSampler {
    /// Always the same user.
    Fixed(u64),
    /// Zipf over ranks `1..=users`; rank r is user id r, so user 1 is drawn most.
    Zipf {
        users: u64,
        exponent: f64,
        dist: Zipf<f64>,
    },
}

impl UserSampler {
    /// Zipf over `users` users with exponent `exponent` (weight of rank r is 1/r^exponent).
    ///
    /// # Errors
    /// No users, or a negative or non-finite exponent.
    pub fn zipf(users: u64, exponent: f64) -> anyhow::Result<Self> {
        ensure!(users >= 1, "--users must be at least 1");
        ensure!(
            exponent.is_finite() && exponent >= 0.0,
            "--zipf-exponent must be a finite number >= 0, got {exponent}"
        );
        let dist = Zipf::new(users as f64, exponent).context("Zipf parameters")?;
        Ok(Self::Zipf {
            users,
            exponent,
            dist,
        })
    }

    /// Always `user`.
    pub fn fixed(user: u64) -> Self {
        Self::Fixed(user)
    }

    /// The user id of the next request.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            Self::Fixed(user) => *user,
            // Zipf samples are whole numbers in [1, users] stored as f64.
            Self::Zipf { users, dist, .. } => (dist.sample(rng) as u64).clamp(1, *users),
        }
    }

    /// The probability that one draw is `user`.
    pub fn probability(&self, user: u64) -> f64 {
        match self {
            Self::Fixed(fixed) => f64::from(u8::from(*fixed == user)),
            Self::Zipf {
                users, exponent, ..
            } => {
                if user == 0 || user > *users {
                    return 0.0;
                }
                let norm: f64 = (1..=*users).map(|r| (r as f64).powf(-exponent)).sum();
                (user as f64).powf(-exponent) / norm
            }
        }
    }
}

impl fmt::Display for UserSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(user) => write!(f, "user {user}"),
            Self::Zipf {
                users, exponent, ..
            } => write!(f, "Zipf(s={exponent}) over users 1..={users}"),
        }
    }
}

/// What a [`Mix`] draws: its name in messages and the values it accepts.
pub trait MixKind {
    /// The value's name, as in `offset=weight`.
    const NAME: &'static str;
    /// Smallest value accepted.
    const MIN: u32;
    /// Largest value accepted.
    const MAX: u32;
}

/// Page offsets of a user's posts: `--offsets`.
#[derive(Debug, Clone, Copy)]
pub struct Offsets;

impl MixKind for Offsets {
    const NAME: &'static str = "offset";
    const MIN: u32 = 0;
    const MAX: u32 = u32::MAX;
}

/// Pages a reader walks down their home feed, following `next_cursor`: `--depths`.
#[derive(Debug, Clone, Copy)]
pub struct Depths;

impl MixKind for Depths {
    const NAME: &'static str = "depth";
    const MIN: u32 = 1;
    /// A walk is bounded: at most this many pages, each within `--timeout`.
    const MAX: u32 = 1000;
}

/// Weighted page offsets, parsed from `offset=weight,...` (e.g. `0=80,50=10,500=5,10000=5`).
pub type PageMix = Mix<Offsets>;

/// Weighted walk depths in pages, parsed from `depth=weight,...` (e.g. `1=80,2=10,5=5,20=5`).
pub type DepthMix = Mix<Depths>;

/// A weighted choice of whole numbers, parsed from `value=weight,...`.
#[derive(Debug, Clone)]
pub struct Mix<K> {
    entries: Vec<(u32, u32)>,
    index: WeightedIndex<u32>,
    kind: std::marker::PhantomData<K>,
}

impl<K> Mix<K> {
    /// The next draw.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        self.entries[self.index.sample(rng)].0
    }

    /// `(value, weight)` pairs as given.
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    /// The largest value with a weight above 0.
    pub fn max(&self) -> u32 {
        self.entries
            .iter()
            .filter(|&&(_, weight)| weight > 0)
            .map(|&(value, _)| value)
            .max()
            .expect("parsing keeps at least one weight above 0")
    }
}

impl<K: MixKind> FromStr for Mix<K> {
    type Err = anyhow::Error;

    fn from_str(raw: &str) -> anyhow::Result<Self> {
        let name = K::NAME;
        let entries = raw
            .split(',')
            .map(|pair| {
                let (value, weight) = pair
                    .trim()
                    .split_once('=')
                    .with_context(|| format!("{pair:?} is not {name}=weight"))?;
                let value: u32 = value
                    .trim()
                    .parse()
                    .with_context(|| format!("{name} {value:?} is not a whole number"))?;
                ensure!(
                    (K::MIN..=K::MAX).contains(&value),
                    "{name} {value} is out of range: from {} to {}",
                    K::MIN,
                    K::MAX
                );
                let weight: u32 = weight
                    .trim()
                    .parse()
                    .with_context(|| format!("weight {weight:?} is not a whole number"))?;
                Ok((value, weight))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(
            entries.iter().any(|&(_, weight)| weight > 0),
            "the mix needs at least one {name} with a weight above 0"
        );
        let index = WeightedIndex::new(entries.iter().map(|&(_, weight)| weight))
            .with_context(|| format!("{name} mix weights"))?;
        Ok(Self {
            entries,
            index,
            kind: std::marker::PhantomData,
        })
    }
}

impl<K> fmt::Display for Mix<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self
            .entries
            .iter()
            .map(|(value, weight)| format!("{value}={weight}"))
            .collect();
        f.write_str(&pairs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn zipf_draws_match_the_distribution_within_tolerance() {
        // Arrange
        let cases = [(100, 1.0), (100, 0.8), (10, 1.2), (100, 0.0)];
        for (users, exponent) in cases {
            let sampler = UserSampler::zipf(users, exponent).expect("valid parameters");
            let mut rng = StdRng::seed_from_u64(7);
            let draws = 200_000;

            // Act
            let mut counts = vec![0u64; users as usize + 1];
            for _ in 0..draws {
                counts[sampler.sample(&mut rng) as usize] += 1;
            }

            // Assert: every user in range, and each of the top 10 within 3% (relative) or 0.1
            // percentage points of its probability.
            assert_eq!(counts[0], 0, "user 0 is never drawn");
            for user in 1..=users.min(10) {
                let expected = sampler.probability(user);
                let observed = counts[user as usize] as f64 / draws as f64;
                assert!(
                    (observed - expected).abs() <= (0.03 * expected).max(0.001),
                    "users={users} s={exponent}: user {user} drawn {observed:.4}, expected {expected:.4}"
                );
            }
        }
    }

    #[test]
    fn user_one_is_the_hottest_and_ranks_are_ordered() {
        let sampler = UserSampler::zipf(100, 1.0).expect("valid parameters");
        let probabilities: Vec<f64> = (1..=100).map(|u| sampler.probability(u)).collect();
        assert!(probabilities.windows(2).all(|w| w[0] > w[1]));
        let total: f64 = probabilities.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
        // H(100) = 5.187..., so user 1 gets about 19.3% of the requests.
        assert!((probabilities[0] - 0.1928).abs() < 0.0005);
    }

    #[test]
    fn a_fixed_user_is_always_drawn() {
        let sampler = UserSampler::fixed(42);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..1000).all(|_| sampler.sample(&mut rng) == 42));
    }

    #[test]
    fn the_page_mix_follows_its_weights() {
        let mix: PageMix = "0=80, 50=10,500=5,10000=5".parse().expect("valid mix");
        let mut rng = StdRng::seed_from_u64(3);
        let draws = 100_000;
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..draws {
            *counts.entry(mix.sample(&mut rng)).or_insert(0u64) += 1;
        }
        for (offset, weight) in [(0, 80), (50, 10), (500, 5), (10_000, 5)] {
            let observed = counts[&offset] as f64 / draws as f64;
            let expected = f64::from(weight) / 100.0;
            assert!(
                (observed - expected).abs() < 0.01,
                "offset {offset}: {observed:.3} vs {expected:.3}"
            );
        }
        assert_eq!(mix.to_string(), "0=80,50=10,500=5,10000=5");
    }

    #[test]
    fn malformed_page_mixes_are_refused() {
        let cases = [
            ("", "not offset=weight"),
            ("0", "not offset=weight"),
            ("x=1", "offset"),
            ("0=-1", "weight"),
            ("0=0,50=0", "weight above 0"),
        ];
        for (raw, reason) in cases {
            let error = raw.parse::<PageMix>().expect_err(raw);
            assert!(
                format!("{error:#}").contains(reason),
                "{raw:?}: expected {reason:?} in {error:#}"
            );
        }
    }

    #[test]
    fn the_depth_mix_follows_its_weights_and_knows_its_deepest_walk() {
        let mix: DepthMix = "1=80,2=10,5=5,20=5,50=0".parse().expect("valid mix");
        let mut rng = StdRng::seed_from_u64(5);
        let draws = 100_000;
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..draws {
            *counts.entry(mix.sample(&mut rng)).or_insert(0u64) += 1;
        }
        for (depth, weight) in [(1, 80), (2, 10), (5, 5), (20, 5)] {
            let observed = counts[&depth] as f64 / draws as f64;
            let expected = f64::from(weight) / 100.0;
            assert!(
                (observed - expected).abs() < 0.01,
                "depth {depth}: {observed:.3} vs {expected:.3}"
            );
        }
        assert!(!counts.contains_key(&50), "a weight of 0 is never drawn");
        assert_eq!(mix.max(), 20, "the deepest walk that can be drawn");
        assert_eq!(mix.to_string(), "1=80,2=10,5=5,20=5,50=0");
    }

    #[test]
    fn malformed_depth_mixes_are_refused_with_a_reason() {
        let cases = [
            ("", "not depth=weight"),
            ("3", "not depth=weight"),
            ("0=1", "depth 0 is out of range: from 1 to 1000"),
            ("1001=1", "depth 1001 is out of range"),
            ("-1=1", "depth \"-1\" is not a whole number"),
            ("2=x", "weight \"x\" is not a whole number"),
            ("1=0", "at least one depth with a weight above 0"),
        ];
        for (raw, reason) in cases {
            let error = raw.parse::<DepthMix>().expect_err(raw);
            assert!(
                format!("{error:#}").contains(reason),
                "{raw:?}: expected {reason:?} in {error:#}"
            );
        }
    }
}
