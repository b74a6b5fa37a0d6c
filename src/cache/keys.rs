//! Every Redis key string is built here.
//!
//! Layout (prefix `hf` by default):
//! - `hf:post:<id>`, `hf:user:<id>`: one object per key, no hash tag, so objects spread over all
//!   shards on purpose and a page's posts are fetched from several nodes at once. Which Rust type a
//!   key holds is fixed by [`CachedObject`]: a post key can only be read as a [`Post`].
//! - `hf:{b<n>.<k>}:post:<id>` instead, under `CACHE_FETCH=bucket-mget`: post `id` goes to bucket
//!   `n = id mod B` (`CACHE_OBJECT_BUCKETS`), whose tag `b<n>.<k>` is the first `k` that puts it in
//!   the `n`-th of `B` equal ranges of slots. The buckets are thus spread over the slot space as
//!   evenly as the masters' slot ranges are, and a node reads all the posts of one bucket with one
//!   `MGET`.
//! - `hf:{user:<id>}:pages`: a hash holding every cached page of one user's posts (the listing
//!   [`ListingKey::UserPosts`]), field `<limit>:<offset>` or `<limit>:c<micros>.<id>` (cursor). One `DEL` drops them all, whatever their
//!   number.
//! - `hf:{user:<id>}:gen`: that listing's generation, a random token replaced on every write to it, so a page read
//!   from PostgreSQL before a write cannot be cached after it. The `{user:<id>}` hash tag keeps it
//!   in the same slot as the pages hash: one atomic pipeline or script touches both.
//! - `hf:{user:<id>}:inbox` (+ `:meta`, `:building`): a reader's home-feed inbox, a sorted set of
//!   [`FeedEntry`] members, all of score 0 so that lexicographic order is feed order; its meta hash
//!   says whether it holds the whole feed and which celebrities' outboxes complete it; the
//!   building key holds the token of a rebuild in progress. `hf:{user:<id>}:outbox` (+ `:meta`,
//!   `:building`): an author's newest posts, read by the followers of a celebrity. One hash tag, so
//!   one script reads or writes a box with its meta.

use std::fmt::Display;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::local::Topic;
use super::options::CacheOptions;
use crate::domain::{PageRequest, Position, Post, PostId, User, UserId};

/// A value cached under a key of its own; the key's kind names the type it holds.
pub trait CachedObject: Serialize + DeserializeOwned + Send + Sync {
    /// The identifier in the key.
    type Id: Copy + Display + Send + Sync;
    /// The key segment naming this kind of object.
    const KIND: &'static str;
    /// This object's identifier.
    fn id(&self) -> Self::Id;
    /// The key this object lives under.
    fn key(keys: &Keys, id: Self::Id) -> String {
        keys.untagged(Self::KIND, id)
    }
    /// Its version: `updated_at` in microseconds, which every change moves forward. A fill never
    /// replaces a cached version with an older one.
    fn version(&self) -> i64;
    /// What the in-process tier holds that a change of this object makes stale.
    fn topics(&self) -> Vec<Topic> {
        Vec::new()
    }
}

impl CachedObject for Post {
    type Id = PostId;
    const KIND: &'static str = "post";
    fn id(&self) -> PostId {
        self.id
    }
    fn key(keys: &Keys, id: PostId) -> String {
        keys.post(id)
    }
    fn version(&self) -> i64 {
        self.updated_at.timestamp_micros()
    }
    /// A page's body holds its posts' content: an edit evicts the author's pages too.
    fn topics(&self) -> Vec<Topic> {
        vec![
            Topic::Post(self.id),
            Topic::Listing(ListingKey::UserPosts(self.user_id)),
        ]
    }
}

impl CachedObject for User {
    type Id = UserId;
    const KIND: &'static str = "user";
    fn id(&self) -> UserId {
        self.id
    }
    fn version(&self) -> i64 {
        self.updated_at.timestamp_micros()
    }
}

/// A sorted set of feed entries: a reader's inbox or an author's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoxKey {
    /// Fanned-out posts for this reader.
    Inbox(UserId),
    /// This author's own newest posts.
    Outbox(UserId),
}

/// One post in a box: its position in feed order. Encoded as a fixed-width member
/// `<created_at micros, 17 digits>:<id, 19 digits>` (37 bytes, under the 64 of Redis's compact
/// listpack encoding), so that byte order is `(created_at, id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedEntry {
    pub created_at_micros: i64,
    pub id: PostId,
}

impl FeedEntry {
    /// The entry of a post.
    pub fn of(post: &Post) -> Self {
        Self {
            created_at_micros: post.created_at.timestamp_micros(),
            id: post.id,
        }
    }

    /// The entry a cursor points after.
    pub fn at(cursor: crate::domain::Cursor) -> Self {
        Self {
            created_at_micros: cursor.created_at().timestamp_micros(),
            id: PostId::from_trusted(cursor.id()),
        }
    }

    /// The sorted-set member.
    pub fn member(&self) -> String {
        format!(
            "{:017}:{:019}",
            self.created_at_micros.max(0),
            self.id.get()
        )
    }

    /// Parses a member written by [`FeedEntry::member`].
    pub fn parse(member: &str) -> Option<Self> {
        let (micros, id) = member.split_once(':')?;
        let id: i64 = id.parse().ok()?;
        Some(Self {
            created_at_micros: micros.parse().ok()?,
            id: (id > 0).then(|| PostId::from_trusted(id))?,
        })
    }
}

/// A listing as the cache knows it: which pages hash and generation it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListingKey {
    /// One author's posts, newest first.
    UserPosts(UserId),
}

impl ListingKey {
    /// The user whose listing it is.
    pub fn owner(self) -> UserId {
        match self {
            Self::UserPosts(author) => author,
        }
    }
}

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// Builds the keys of one deployment (one prefix, one post layout).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// The hash tags of the post buckets, when posts are bucketed.
    post_tags: Option<Arc<[String]>>,
}

impl Keys {
    /// Keys under `prefix`, which must not contain `{` or `}` (the configuration checks it), with
    /// untagged post keys.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            post_tags: None,
        }
    }

    /// The keys a service with these settings uses.
    pub fn of(settings: &CacheOptions) -> Self {
        let keys = Self::new(settings.key_prefix.clone());
        match settings.post_buckets() {
            Some(buckets) => keys.with_post_buckets(buckets),
            None => keys,
        }
    }

    /// The same keys with posts in `buckets` hash-tag buckets (at least one).
    pub fn with_post_buckets(self, buckets: u16) -> Self {
        Self {
            post_tags: Some(bucket_tags(buckets.max(1)).into()),
            ..self
        }
    }

    /// The key of one cached object.
    pub fn object<T: CachedObject>(&self, id: T::Id) -> String {
        T::key(self, id)
    }

    fn untagged(&self, kind: &str, id: impl Display) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    /// The cached JSON of one post. Built without `format!`: a page builds 50 of them, and the
    /// formatting machinery was a tenth of a cached page's instructions (callgrind).
    pub fn post(&self, id: PostId) -> String {
        let mut digits = itoa::Buffer::new();
        let id_text = digits.format(id.get());
        let tag = self.post_tags.as_ref().map(|tags| {
            let bucket = id.get().rem_euclid(tags.len() as i64) as usize;
            tags[bucket].as_str()
        });
        let mut key = String::with_capacity(
            self.prefix.len()
                + tag.map_or(0, |t| t.len() + 3)
                + Post::KIND.len()
                + id_text.len()
                + 2,
        );
        key.push_str(&self.prefix);
        if let Some(tag) = tag {
            key.push_str(":{");
            key.push_str(tag);
            key.push('}');
        }
        key.push(':');
        key.push_str(Post::KIND);
        key.push(':');
        key.push_str(id_text);
        key
    }

    /// The cached JSON of one user.
    pub fn user(&self, id: UserId) -> String {
        self.object::<User>(id)
    }

    /// The hash of a listing's cached pages of post ids.
    pub fn pages(&self, listing: ListingKey) -> String {
        match listing {
            ListingKey::UserPosts(id) => format!("{}:{{user:{id}}}:pages", self.prefix),
        }
    }

    /// The generation token of a listing's pages; same slot as [`Keys::pages`].
    pub fn generation(&self, listing: ListingKey) -> String {
        match listing {
            ListingKey::UserPosts(id) => format!("{}:{{user:{id}}}:gen", self.prefix),
        }
    }

    /// A box's sorted set, its meta hash and its rebuild token, in one slot.
    pub fn feed_box(&self, key: BoxKey) -> [String; 3] {
        let (id, kind) = match key {
            BoxKey::Inbox(id) => (id, "inbox"),
            BoxKey::Outbox(id) => (id, "outbox"),
        };
        let base = format!("{}:{{user:{id}}}:{kind}", self.prefix);
        [
            base.clone(),
            format!("{base}:meta"),
            format!("{base}:building"),
        ]
    }

    /// The hash of a user's cached pages of their own posts.
    pub fn user_pages(&self, id: UserId) -> String {
        self.pages(ListingKey::UserPosts(id))
    }

    /// The generation token of a user's pages of their own posts.
    pub fn user_generation(&self, id: UserId) -> String {
        self.generation(ListingKey::UserPosts(id))
    }

    /// The field of one page inside [`Keys::pages`]: `<limit>:<offset>` for an offset page,
    /// `<limit>:c<created_at micros>.<id>` for a page after a cursor.
    pub fn page_field(page: PageRequest) -> String {
        match page.position() {
            Position::Offset(offset) => format!("{}:{offset}", page.limit()),
            Position::After(cursor) => format!(
                "{}:c{}.{}",
                page.limit(),
                cursor.created_at().timestamp_micros(),
                cursor.id()
            ),
        }
    }

    /// The pattern matching every key of this deployment, for `SCAN` in maintenance tools.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

/// The hash tags of `buckets` post buckets: tag `n` is `b<n>.<k>` for the first `k` whose slot lies
/// in the `n`-th of `buckets` equal ranges of the slot space, so the buckets spread over the
/// masters as evenly as their slot ranges do. Deterministic: every instance computes the same.
fn bucket_tags(buckets: u16) -> Vec<String> {
    let buckets = u32::from(buckets);
    (0..buckets)
        .map(|n| {
            let low = n * u32::from(SLOT_COUNT) / buckets;
            let high = (n + 1) * u32::from(SLOT_COUNT) / buckets;
            (0u32..)
                .map(|k| format!("b{n}.{k}"))
                .find(|tag| (low..high).contains(&u32::from(slot(tag.as_bytes()))))
                .expect("CRC16 reaches every range of at least 16 slots")
        })
        .collect()
}

/// The cluster hash slot of a key: CRC16/XMODEM of the key, or of its `{hash tag}` when it has a
/// non-empty one, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(slot(b"post:1"), 10484);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn feed_entries_sort_as_the_feed_and_survive_their_encoding() {
        let entry = |micros, id| FeedEntry {
            created_at_micros: micros,
            id: PostId::from_trusted(id),
        };
        let entries = [
            entry(5, 9),
            entry(5, 10),
            entry(1_764_633_600_123_456, 2),
            entry(10, 1),
        ];
        let mut by_member: Vec<FeedEntry> = entries.to_vec();
        by_member.sort_by_key(FeedEntry::member);
        let mut by_order = entries.to_vec();
        by_order.sort();
        assert_eq!(
            by_member, by_order,
            "member bytes sort like (created_at, id)"
        );
        for e in entries {
            assert_eq!(FeedEntry::parse(&e.member()), Some(e));
            assert!(e.member().len() < 64, "fits the listpack encoding");
        }
        assert_eq!(FeedEntry::parse("garbage"), None);
    }

    #[test]
    fn a_box_and_its_meta_share_a_slot() {
        let keys = Keys::new("hf");
        let [set, meta, building] = keys.feed_box(BoxKey::Inbox(UserId::from_trusted(3)));
        assert_eq!(slot(set.as_bytes()), slot(meta.as_bytes()));
        assert_eq!(slot(set.as_bytes()), slot(building.as_bytes()));
    }

    #[test]
    fn a_users_page_keys_share_a_slot_and_posts_spread() {
        let keys = Keys::new("hf");
        let user = UserId::from_trusted(42);
        assert_eq!(
            slot(keys.user_pages(user).as_bytes()),
            slot(keys.user_generation(user).as_bytes())
        );
        let slots: std::collections::HashSet<u16> = (1..=50)
            .map(|id| slot(keys.post(PostId::from_trusted(id)).as_bytes()))
            .collect();
        assert!(
            slots.len() > 40,
            "post keys should scatter, got {} slots",
            slots.len()
        );
    }

    #[test]
    fn bucketed_posts_share_a_slot_per_bucket_and_buckets_spread_over_the_slots() {
        let buckets = 12;
        let keys = Keys::new("hf").with_post_buckets(buckets);
        let post = |id| keys.post(PostId::from_trusted(id));
        assert!(post(7).starts_with("hf:{b7.") && post(7).ends_with("}:post:7"));
        assert_eq!(slot(post(5).as_bytes()), slot(post(17).as_bytes()));
        let slots: Vec<u16> = (0..i64::from(buckets))
            .map(|id| slot(post(id).as_bytes()))
            .collect();
        for (n, &slot) in slots.iter().enumerate() {
            let width = usize::from(SLOT_COUNT) / usize::from(buckets);
            assert!(
                (n * width..(n + 1) * width + 1).contains(&usize::from(slot)),
                "bucket {n} in its range, got slot {slot}"
            );
        }
        // Three masters with the slot ranges `redis-cli --cluster create` gives own four each.
        let master = |slot: u16| match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        };
        let per_master = |m: u16| slots.iter().filter(|&&s| master(s) == m).count();
        assert_eq!([per_master(0), per_master(1), per_master(2)], [4, 4, 4]);
        assert_eq!(Keys::new("hf").post(PostId::from_trusted(7)), "hf:post:7");
    }

    #[test]
    fn the_widest_bucket_count_still_finds_every_tag() {
        let tags = bucket_tags(1024);
        let distinct: std::collections::HashSet<u16> =
            tags.iter().map(|tag| slot(tag.as_bytes())).collect();
        assert_eq!(distinct.len(), 1024);
    }
}
