//! Deterministic rows: users from `fake`, posts whose authors follow a Zipf distribution.
//!
//! Posts are generated in fixed-size chunks, each from its own ChaCha stream of the seed, so the
//! rows depend only on the seed and the chunk index: never on how many threads generate them or
//! in what order the chunks are consumed.

use std::fmt::Write as _;
use std::ops::Range;

use chrono::{DateTime, TimeDelta, Utc};
use fake::faker::internet::en::Username;
use fake::faker::lorem::en::Word;
use fake::faker::name::en::Name;
use fake::Fake as _;
use hotfeed::domain::{NewUser, CONTENT_MAX_CHARS, USERNAME_MAX_CHARS};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Zipf};

/// Posts per chunk: large enough to amortise the hand-off between threads, small enough that a
/// few chunks in flight cost only tens of megabytes.
pub const CHUNK_POSTS: u64 = 32_768;

/// The text every post starts with; the reference document's demo output shows it.
const CONTENT_PREFIX: &str = "This is post content ";

/// Longest tail of lorem words; keeps every post far below the API's content limit.
const MAX_WORDS: u32 = 80;
const _: () = assert!(
    (MAX_WORDS as usize) * 16 + 128 < CONTENT_MAX_CHARS,
    "generated posts must stay valid for the API"
);

/// The `created_at` range of the posts: `(start, end]`, spread evenly so `created_at` grows with `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Everything that determines the generated rows.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub users: u32,
    pub posts: u64,
    pub exponent: f64,
    pub seed: u64,
    pub window: Window,
    /// Id of the first generated user; user ranks 1..=users map to consecutive ids from here.
    pub first_user_id: i64,
    /// Id of the first generated post.
    pub first_post_id: i64,
}

/// A user row, validated by the service's own rules.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: i64,
    pub user: NewUser,
    pub created_at: DateTime<Utc>,
}

/// A post row; `updated_at` equals `created_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostRow {
    pub id: i64,
    pub user_id: i64,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl Dataset {
    /// The user rows, user 1 (the hottest) first.
    pub fn users(&self) -> Vec<UserRow> {
        let mut rng = self.rng(0);
        (0..self.users)
            .map(|rank| {
                let id = self.first_user_id + i64::from(rank);
                let raw: String = Username().fake_with_rng(&mut rng);
                let display_name: String = Name().fake_with_rng(&mut rng);
                let joined_before = TimeDelta::seconds(rng.random_range(86_400..90 * 86_400));
                UserRow {
                    id,
                    user: NewUser::parse(username(&raw, id), Some(display_name))
                        .expect("sanitised usernames and fake names satisfy the service's rules"),
                    created_at: self.window.start - joined_before,
                }
            })
            .collect()
    }

    /// Number of post chunks.
    pub fn chunk_count(&self) -> u64 {
        self.posts.div_ceil(CHUNK_POSTS)
    }

    /// The posts of chunk `index`, in id order.
    pub fn chunk(&self, index: u64) -> Vec<PostRow> {
        let positions = self.chunk_positions(index);
        let mut rng = self.rng(index + 1);
        let zipf = Zipf::new(f64::from(self.users), self.exponent)
            .expect("the exponent was checked positive and users at least 1");
        let step = self.step_micros();
        let mut rows = Vec::with_capacity((positions.end - positions.start) as usize);
        for position in positions {
            let id = self.first_post_id + position as i64;
            let rank = zipf.sample(&mut rng) as i64;
            let user_id = self.first_user_id + rank - 1;
            let jitter = if step > 1 {
                rng.random_range(0..step)
            } else {
                0
            };
            let offset = step * position as i64 + jitter;
            rows.push(PostRow {
                id,
                user_id,
                content: content(id, user_id, &mut rng),
                created_at: self.window.start + TimeDelta::microseconds(offset + 1),
            });
        }
        rows
    }

    /// Expected share of all posts written by the user of `rank` (1 = hottest): `rank^-s / H(n, s)`.
    pub fn expected_share(&self, rank: u32) -> f64 {
        let harmonic: f64 = (1..=self.users)
            .map(|k| f64::from(k).powf(-self.exponent))
            .sum();
        f64::from(rank).powf(-self.exponent) / harmonic
    }

    fn chunk_positions(&self, index: u64) -> Range<u64> {
        let start = index * CHUNK_POSTS;
        start..(start + CHUNK_POSTS).min(self.posts)
    }

    /// Microseconds between consecutive posts, so the last one lands at or before the window's end.
    fn step_micros(&self) -> i64 {
        let span = (self.window.end - self.window.start)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        (span - 1) / self.posts as i64
    }

    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }
}

/// `fake`'s username reduced to the service's alphabet and made unique by the user's id.
fn username(raw: &str, id: i64) -> String {
    let suffix = format!("_{id}");
    let mut base: String = raw
        .chars()
        .filter_map(|c| {
            let c = c.to_ascii_lowercase();
            (c.is_ascii_alphanumeric() || c == '_' || c == '.').then_some(c)
        })
        .take(USERNAME_MAX_CHARS.saturating_sub(suffix.len()).min(20))
        .collect();
    if base.is_empty() {
        base.push_str("user");
    }
    base + &suffix
}

/// The reference's recognisable text, then lorem words of varied length: mostly short posts, a
/// quarter of medium ones, a few long ones.
fn content(id: i64, user_id: i64, rng: &mut ChaCha8Rng) -> String {
    let words = match rng.random_range(0..100) {
        0..70 => rng.random_range(3..=12),
        70..95 => rng.random_range(13..=30),
        _ => rng.random_range(31..=MAX_WORDS),
    };
    let mut text = String::with_capacity(96 + 8 * words as usize);
    write!(
        text,
        "{CONTENT_PREFIX}{id} generated by datagen. UserId is {user_id}. Random data:"
    )
    .expect("writing to a String cannot fail");
    for _ in 0..words {
        text.push(' ');
        text.push_str(Word().fake_with_rng::<&str, _>(rng));
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotfeed::domain::NewPost;

    fn dataset(users: u32, posts: u64) -> Dataset {
        let end = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("a valid timestamp")
            .to_utc();
        Dataset {
            users,
            posts,
            exponent: 1.0,
            seed: 7,
            window: Window {
                start: end - TimeDelta::days(365),
                end,
            },
            first_user_id: 1,
            first_post_id: 1,
        }
    }

    #[test]
    fn posts_are_valid_for_the_api_and_keep_the_reference_prefix() {
        let data = dataset(10, 5_000);
        for post in data.chunk(0) {
            assert!(
                post.content.starts_with(&format!(
                    "This is post content {} generated by datagen. UserId is {}. Random data: ",
                    post.id, post.user_id
                )),
                "{}",
                post.content
            );
            NewPost::parse(post.user_id, post.content).expect("a valid post");
        }
    }

    #[test]
    fn created_at_grows_with_id_and_stays_inside_the_window() {
        let data = dataset(5, 3 * CHUNK_POSTS + 17);
        let posts: Vec<PostRow> = (0..data.chunk_count())
            .flat_map(|c| data.chunk(c))
            .collect();
        assert_eq!(posts.len() as u64, data.posts);
        assert!(posts.windows(2).all(|w| w[0].id + 1 == w[1].id));
        assert!(posts.windows(2).all(|w| w[0].created_at < w[1].created_at));
        assert!(posts[0].created_at > data.window.start);
        assert!(posts[posts.len() - 1].created_at <= data.window.end);
    }

    #[test]
    fn a_chunk_depends_only_on_the_seed_and_its_index() {
        let data = dataset(20, 2 * CHUNK_POSTS);
        assert_eq!(data.chunk(1), data.chunk(1));
        assert_ne!(data.chunk(0)[0].content, data.chunk(1)[0].content);
        let other_seed = Dataset {
            seed: 8,
            ..data.clone()
        };
        assert_ne!(data.chunk(1), other_seed.chunk(1));
    }

    #[test]
    fn usernames_are_unique_and_valid_even_for_huge_ids() {
        assert_eq!(username("Ada.Lovelace", 7), "ada.lovelace_7");
        assert_eq!(username("O'Hara", 12), "ohara_12");
        assert_eq!(username("", 3), "user_3");
        let long = username(&"x".repeat(50), i64::MAX);
        NewUser::parse(long, None).expect("fits the username limit");
        let users = dataset(300, 1).users();
        let names: std::collections::HashSet<&str> =
            users.iter().map(|u| u.user.username.as_str()).collect();
        assert_eq!(names.len(), 300);
    }

    #[test]
    fn expected_shares_sum_to_one_and_give_user_one_a_fifth_of_a_hundred() {
        let data = dataset(100, 1);
        let total: f64 = (1..=100).map(|rank| data.expected_share(rank)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let hottest = data.expected_share(1);
        assert!((0.19..0.20).contains(&hottest), "{hottest}");
    }
}
