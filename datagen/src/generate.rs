//! Deterministic rows: users from `fake`, posts whose authors follow a Zipf distribution, and a
//! follow graph whose followees are drawn Zipf-popular.
//!
//! Posts and follows are generated in fixed-size chunks, each from its own ChaCha stream of the
//! seed, so the rows depend only on the seed and the chunk index: never on how many threads
//! generate them or in what order the chunks are consumed.

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
use rand_distr::weighted::WeightedTreeIndex;
use rand_distr::{Distribution as _, Zipf};

/// Posts per chunk: large enough to amortise the hand-off between threads, small enough that a
/// few chunks in flight cost only tens of megabytes.
pub const CHUNK_POSTS: u64 = 32_768;

/// Follow rows per chunk, about: a chunk holds whole followers, as many as make this many rows.
pub const CHUNK_FOLLOWS: u64 = 32_768;

/// ChaCha stream of the follow counts; the users take stream 0 and post chunk `i` stream `i + 1`,
/// far below this.
const DEGREE_STREAM: u64 = 1 << 62;
/// ChaCha stream of follow chunk 0; chunk `i` takes `FOLLOW_STREAM + i`.
const FOLLOW_STREAM: u64 = DEGREE_STREAM + 1;

/// Integer weight of the most popular followee. Integer weights make removing a drawn followee
/// and putting it back exact, so every follower draws from the very same distribution; 2^40
/// keeps 10,000,000 users' weights summable in a u64 and the weight of rank 10,000,000 at s = 1
/// exact to 1e-5.
const TOP_FOLLOW_WEIGHT: f64 = (1_u64 << 40) as f64;

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
    /// Mean accounts each generated user follows, among the generated users.
    pub follows_per_user: u32,
    /// Zipf exponent of followee popularity: rank k is drawn with weight 1/k^s.
    pub follow_exponent: f64,
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

/// A follow row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowRow {
    pub follower_id: i64,
    pub followee_id: i64,
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

    /// Follow rows in all: exactly users × follows per user.
    pub fn follows(&self) -> u64 {
        u64::from(self.users) * u64::from(self.follows_per_user)
    }

    /// How many accounts each user follows, by rank: N plus or minus up to N/2 (less when there
    /// are too few users), in pairs of consecutive ranks that sum to 2N, so the mean is exactly N
    /// and no user's feed draws on fewer than N - N/2 accounts.
    pub fn follow_degrees(&self) -> Vec<u32> {
        let mean = self.follows_per_user;
        let spread = (mean / 2).min(self.users - 1 - mean);
        let mut rng = self.rng(DEGREE_STREAM);
        let mut degrees = Vec::with_capacity(self.users as usize);
        for _ in 0..self.users / 2 {
            let delta = rng.random_range(0..=2 * spread);
            degrees.push(mean - spread + delta);
            degrees.push(mean + spread - delta);
        }
        if self.users % 2 == 1 {
            degrees.push(mean);
        }
        degrees
    }

    /// Followers per follow chunk.
    pub fn followers_per_chunk(&self) -> u32 {
        let rows = CHUNK_FOLLOWS / u64::from(self.follows_per_user.max(1));
        u32::try_from(rows.max(1)).expect("at most CHUNK_FOLLOWS")
    }

    /// Number of follow chunks; none when nobody follows anyone.
    pub fn follow_chunk_count(&self) -> u64 {
        if self.follows_per_user == 0 {
            return 0;
        }
        u64::from(self.users).div_ceil(u64::from(self.followers_per_chunk()))
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

/// Draws followees: a Zipf popularity over the generated users, sampled without replacement.
///
/// The weights live in a sum tree (`rand_distr`'s `WeightedTreeIndex`): a draw and the removal of
/// the drawn account cost O(log users) each, so a follower's N distinct followees cost
/// O(N log users) at any density, where redrawing duplicates of a Zipf sample would crawl once a
/// follower has taken most of the popular accounts. The tree is put back after each follower,
/// so each follower's draw depends only on its chunk's stream.
#[derive(Debug, Clone)]
pub struct FollowGraph {
    dataset: Dataset,
    degrees: Vec<u32>,
    /// `created_at` of each user, by rank - 1: a follow is never older than either account.
    joined: Vec<DateTime<Utc>>,
    popularity: WeightedTreeIndex<u64>,
}

impl FollowGraph {
    /// Prepares the draws for `dataset`, whose users joined at `joined` (by rank - 1).
    pub fn new(dataset: &Dataset, joined: Vec<DateTime<Utc>>) -> Self {
        assert_eq!(joined.len(), dataset.users as usize, "one time per user");
        let weights = (1..=dataset.users).map(|rank| {
            let weight = TOP_FOLLOW_WEIGHT * f64::from(rank).powf(-dataset.follow_exponent);
            (weight.round() as u64).max(1)
        });
        Self {
            dataset: dataset.clone(),
            degrees: dataset.follow_degrees(),
            joined,
            popularity: WeightedTreeIndex::new(weights)
                .expect("weights from 1 to 2^40 for at most 10,000,000 users fit a u64"),
        }
    }

    /// How many accounts each user follows, by rank - 1: the `following_count` the load writes.
    pub fn degrees(&self) -> &[u32] {
        &self.degrees
    }

    /// The follows of chunk `index`: its followers in rank order, each one's followees in id
    /// order.
    pub fn chunk(&mut self, index: u64) -> Vec<FollowRow> {
        let per_chunk = u64::from(self.dataset.followers_per_chunk());
        let first = index * per_chunk;
        let last = (first + per_chunk).min(u64::from(self.dataset.users));
        let (first_id, posts_start) = (self.dataset.first_user_id, self.dataset.window.start);
        let mut rng = self.dataset.rng(FOLLOW_STREAM + index);
        let mut rows = Vec::with_capacity(
            CHUNK_FOLLOWS as usize + 3 * self.dataset.follows_per_user as usize / 2,
        );
        let mut taken: Vec<(usize, u64)> = Vec::new();
        for follower in first as usize..last as usize {
            // Never oneself: the follower's weight is out of the tree while it draws.
            taken.push((follower, self.popularity.get(follower)));
            self.remove(follower);
            for _ in 0..self.degrees[follower] {
                let followee = self.popularity.sample(&mut rng);
                taken.push((followee, self.popularity.get(followee)));
                self.remove(followee);
            }
            let drawn = rows.len();
            for &(followee, _) in &taken[1..] {
                let since = self.joined[follower].max(self.joined[followee]);
                let room = (posts_start - since)
                    .num_microseconds()
                    .expect("users join at most 90 days before the posts");
                rows.push(FollowRow {
                    follower_id: first_id + follower as i64,
                    followee_id: first_id + followee as i64,
                    created_at: since + TimeDelta::microseconds(rng.random_range(0..room)),
                });
            }
            rows[drawn..].sort_unstable_by_key(|row| row.followee_id);
            for (user, weight) in taken.drain(..) {
                self.popularity
                    .update(user, weight)
                    .expect("a weight the tree held before");
            }
        }
        rows
    }

    fn remove(&mut self, user: usize) {
        self.popularity
            .update(user, 0)
            .expect("zero is a valid weight");
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
            follows_per_user: 10,
            follow_exponent: 1.0,
        }
    }

    fn graph(data: &Dataset) -> FollowGraph {
        let joined = data.users().iter().map(|user| user.created_at).collect();
        FollowGraph::new(data, joined)
    }

    fn all_follows(data: &Dataset) -> Vec<FollowRow> {
        let mut graph = graph(data);
        (0..data.follow_chunk_count())
            .flat_map(|c| graph.chunk(c))
            .collect()
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

    #[test]
    fn follow_degrees_average_exactly_n_and_stay_within_half_of_it() {
        for (users, n) in [(100, 10), (101, 10), (7, 6), (1000, 1), (50, 0)] {
            let data = Dataset {
                follows_per_user: n,
                ..dataset(users, 1)
            };
            let degrees = data.follow_degrees();
            assert_eq!(degrees.len(), users as usize);
            let total: u64 = degrees.iter().map(|&d| u64::from(d)).sum();
            assert_eq!(total, data.follows(), "{users} users, n {n}");
            assert!(
                degrees
                    .iter()
                    .all(|&d| d >= n - n / 2 && d <= n + n / 2 && d < users),
                "{users} users, n {n}: {degrees:?}"
            );
        }
    }

    #[test]
    fn follows_are_distinct_never_oneself_and_after_both_users_joined() {
        let data = Dataset {
            follows_per_user: 40,
            ..dataset(50, 1)
        };
        let users = data.users();
        let follows = all_follows(&data);
        assert_eq!(follows.len() as u64, data.follows());
        let pairs: std::collections::HashSet<(i64, i64)> = follows
            .iter()
            .map(|f| (f.follower_id, f.followee_id))
            .collect();
        assert_eq!(pairs.len(), follows.len(), "no duplicates");
        for follow in &follows {
            assert_ne!(follow.follower_id, follow.followee_id);
            let joined = |id: i64| users[(id - 1) as usize].created_at;
            assert!(follow.created_at >= joined(follow.follower_id));
            assert!(follow.created_at >= joined(follow.followee_id));
            assert!(follow.created_at < data.window.start);
        }
    }

    #[test]
    fn everyone_follows_everyone_else_when_n_is_users_minus_one() {
        let data = Dataset {
            follows_per_user: 29,
            follow_exponent: 3.0,
            ..dataset(30, 1)
        };
        assert_eq!(all_follows(&data).len(), 30 * 29);
    }

    #[test]
    fn a_follow_chunk_depends_only_on_the_seed_and_its_index() {
        let data = Dataset {
            follows_per_user: 5_000,
            ..dataset(20_000, 1)
        };
        assert!(data.follow_chunk_count() > 2);
        let (mut one, mut other) = (graph(&data), graph(&data));
        let second = one.chunk(1);
        other.chunk(0);
        other.chunk(2);
        assert_eq!(other.chunk(1), second);
    }

    #[test]
    fn the_most_popular_account_is_followed_by_most() {
        let data = Dataset {
            follows_per_user: 10,
            ..dataset(1_000, 1)
        };
        let mut followers = vec![0_u32; 1_000];
        for follow in all_follows(&data) {
            followers[(follow.followee_id - 1) as usize] += 1;
        }
        let mut sorted = followers.clone();
        sorted.sort_unstable();
        assert!(followers[0] > 500, "user 1 has {} followers", followers[0]);
        assert!(sorted[500] < 10, "the median account has {}", sorted[500]);
    }
}
