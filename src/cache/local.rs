//! The in-process tier (L1): the hottest pages, post objects and outbox reads of this instance,
//! in memory, in front of the Redis Cluster.
//!
//! It holds what a hit needs to answer at once (a page is its rendered body) and admits only
//! what the hot-key detection names hot, so a cold key never displaces a hot one; within that,
//! moka bounds it by bytes with TinyLFU admission and LRU eviction.
//!
//! **Staying correct with several instances.** Every entry depends on one [`Topic`] (a listing,
//! a post, an outbox). A write evicts its topics here at once and publishes them on the
//! invalidation channel (`invalidation.rs`), so the other instances evict them when the message
//! arrives. Eviction is by epoch, not by key: each topic hashes to one of [`STRIPES`] counters, an
//! entry remembers the counter as it was *before* its value was read from Redis (its [`Ticket`]),
//! and it is served only while the counter still has that value. So an invalidation that arrives
//! while a reader is between its Redis read and its insert makes the insert dead on arrival: an
//! entry is never older than the last invalidation of its topic this instance has heard of.
//! While the channel is down nothing is served or admitted, and when it comes back every entry
//! is dropped (messages may have been missed). A message that never arrives (a write whose
//! publish failed) is bounded by `L1_TTL_MS`, the staleness bound of last resort.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::notification::RemovalCause;

use super::keys::{FeedEntry, ListingKey};
use super::types::BoxRead;
use crate::domain::PageBody;
use crate::domain::{PageRequest, PostId, UserId};
use crate::metrics::{zero_series, Metrics};

/// Epoch counters topics hash onto; a false eviction needs two hot topics in one stripe.
pub const STRIPES: usize = 4096;
/// The `kind` label values of `l1_hits_total` and `l1_misses_total`: one per kind of entry.
const KINDS: [&str; 3] = ["page", "post", "outbox"];

/// What an entry depends on: a write to it evicts the entry on every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every cached page of a listing (a new or deleted post, or an edit of a post it shows).
    Listing(ListingKey),
    /// One post object.
    Post(PostId),
    /// One author's outbox.
    Outbox(UserId),
}

impl Topic {
    /// The topic as the invalidation channel spells it.
    pub fn encode(self) -> String {
        match self {
            Self::Listing(ListingKey::UserPosts(user)) => format!("l{user}"),
            Self::Post(post) => format!("p{post}"),
            Self::Outbox(user) => format!("o{user}"),
        }
    }

    /// A topic the channel carried; `None` for one this version does not know.
    pub fn decode(raw: &str) -> Option<Self> {
        let (kind, id) = raw.split_at_checked(1)?;
        let id: i64 = id.parse().ok().filter(|id| *id > 0)?;
        match kind {
            "l" => Some(Self::Listing(ListingKey::UserPosts(UserId::from_trusted(
                id,
            )))),
            "p" => Some(Self::Post(PostId::from_trusted(id))),
            "o" => Some(Self::Outbox(UserId::from_trusted(id))),
            _ => None,
        }
    }
}

/// The epochs an entry was read under; it is valid while both are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    global: u64,
    stripe: usize,
    epoch: u64,
}

/// An entry's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LocalKey {
    Page(ListingKey, PageRequest),
    Post(PostId),
    Outbox(UserId, Option<FeedEntry>, usize),
}

#[derive(Debug, Clone)]
enum LocalValue {
    Page(PageBody),
    Post(Bytes),
    Outbox(Arc<BoxRead>),
}

#[derive(Debug)]
struct Entry {
    ticket: Ticket,
    value: LocalValue,
}

/// The in-process tier; cheap to clone.
#[derive(Clone)]
pub struct LocalTier {
    entries: moka::sync::Cache<LocalKey, Arc<Entry>>,
    epochs: Arc<Epochs>,
    metrics: Arc<Metrics>,
}

struct Epochs {
    /// Bumped when every entry must go (the channel was down: messages may be lost).
    global: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    /// Whether the invalidation channel is subscribed: nothing is served or admitted otherwise.
    listening: AtomicBool,
}

impl LocalTier {
    /// A tier of at most `max_bytes` (keys and values, approximately), whose entries live at most
    /// `ttl`. It serves nothing until [`LocalTier::set_listening`] says the channel is up.
    pub fn new(max_bytes: u64, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        zero_series(&metrics.l1_hits, KINDS);
        zero_series(&metrics.l1_misses, KINDS);
        zero_series(&metrics.l1_evictions, ["expired", "size", "invalidated"]);
        let evictions = Arc::clone(&metrics);
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &LocalKey, entry: &Arc<Entry>| entry.weight())
            .time_to_live(ttl)
            .eviction_listener(move |_key, _entry, cause| {
                let cause = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "size",
                    RemovalCause::Explicit => "invalidated",
                    RemovalCause::Replaced => return,
                };
                evictions.l1_evictions.with_label_values(&[cause]).inc();
            })
            .build();
        Self {
            entries,
            epochs: Arc::new(Epochs {
                global: AtomicU64::new(0),
                stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
                hasher: std::collections::hash_map::RandomState::new(),
                listening: AtomicBool::new(false),
            }),
            metrics,
        }
    }

    /// The ticket a reader takes before it reads `topic`'s value from Redis; `None` while the
    /// channel is down (nothing read then may be kept).
    pub fn ticket(&self, topic: Topic) -> Option<Ticket> {
        let epochs = &self.epochs;
        if !epochs.listening.load(Ordering::Acquire) {
            return None;
        }
        let global = epochs.global.load(Ordering::Acquire);
        let stripe = epochs.stripe(topic);
        let epoch = epochs.stripes[stripe].load(Ordering::Acquire);
        Some(Ticket {
            global,
            stripe,
            epoch,
        })
    }

    /// Evicts every entry that depends on `topic` (a write here, or a message from another
    /// instance).
    pub fn evict(&self, topic: Topic) {
        let stripe = self.epochs.stripe(topic);
        self.epochs.stripes[stripe].fetch_add(1, Ordering::AcqRel);
    }

    /// Evicts every entry.
    pub fn evict_all(&self) {
        self.epochs.global.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// Evicts everything, and stops or resumes serving: the channel went down or came back.
    pub fn set_listening(&self, listening: bool) {
        self.epochs.listening.store(listening, Ordering::Release);
        self.evict_all();
        self.metrics.l1_listening.set(i64::from(listening));
    }

    /// Whether the tier is serving (its channel is up).
    pub fn is_listening(&self) -> bool {
        self.epochs.listening.load(Ordering::Acquire)
    }

    /// A cached page's body.
    pub fn page(&self, listing: ListingKey, page: PageRequest) -> Option<PageBody> {
        match self.get(&LocalKey::Page(listing, page), "page")? {
            LocalValue::Page(body) => Some(body),
            _ => None,
        }
    }

    /// Keeps a page's body read under `ticket`.
    pub fn keep_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        ticket: Ticket,
        body: PageBody,
    ) {
        self.keep(
            LocalKey::Page(listing, page),
            ticket,
            LocalValue::Page(body),
        );
    }

    /// A cached post's JSON.
    pub fn post(&self, id: PostId) -> Option<Bytes> {
        match self.get(&LocalKey::Post(id), "post")? {
            LocalValue::Post(json) => Some(json),
            _ => None,
        }
    }

    /// Keeps a post's JSON read under `ticket`.
    pub fn keep_post(&self, id: PostId, ticket: Ticket, json: Bytes) {
        self.keep(LocalKey::Post(id), ticket, LocalValue::Post(json));
    }

    /// A cached read of an outbox (its newest `count` entries older than `after`).
    pub fn outbox(
        &self,
        author: UserId,
        after: Option<FeedEntry>,
        count: usize,
    ) -> Option<Arc<BoxRead>> {
        match self.get(&LocalKey::Outbox(author, after, count), "outbox")? {
            LocalValue::Outbox(read) => Some(read),
            _ => None,
        }
    }

    /// Keeps an outbox read under `ticket`.
    pub fn keep_outbox(
        &self,
        author: UserId,
        after: Option<FeedEntry>,
        count: usize,
        ticket: Ticket,
        read: Arc<BoxRead>,
    ) {
        self.keep(
            LocalKey::Outbox(author, after, count),
            ticket,
            LocalValue::Outbox(read),
        );
    }

    /// Publishes the tier's size to the metrics.
    pub fn report(&self) {
        self.entries.run_pending_tasks();
        self.metrics
            .l1_bytes
            .set(i64::try_from(self.entries.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .l1_entries
            .set(i64::try_from(self.entries.entry_count()).unwrap_or(i64::MAX));
    }

    fn get(&self, key: &LocalKey, kind: &str) -> Option<LocalValue> {
        let found = self
            .entries
            .get(key)
            .filter(|entry| self.epochs.is_current(entry.ticket));
        let counter = if found.is_some() {
            &self.metrics.l1_hits
        } else {
            &self.metrics.l1_misses
        };
        counter.with_label_values(&[kind]).inc();
        found.map(|entry| entry.value.clone())
    }

    fn keep(&self, key: LocalKey, ticket: Ticket, value: LocalValue) {
        // Dead on arrival if an invalidation came in since the ticket: not worth the space.
        if self.epochs.is_current(ticket) {
            self.entries.insert(key, Arc::new(Entry { ticket, value }));
        }
    }
}

impl Epochs {
    fn stripe(&self, topic: Topic) -> usize {
        (self.hasher.hash_one(topic) as usize) % STRIPES
    }

    fn is_current(&self, ticket: Ticket) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.global.load(Ordering::Acquire) == ticket.global
            && self.stripes[ticket.stripe].load(Ordering::Acquire) == ticket.epoch
    }
}

impl Entry {
    /// Approximate bytes held: the value, plus a fixed cost for the key, the entry and moka's
    /// bookkeeping.
    fn weight(&self) -> u32 {
        const OVERHEAD: usize = 160;
        let value = match &self.value {
            LocalValue::Page(body) => body.json.len(),
            LocalValue::Post(json) => json.len(),
            LocalValue::Outbox(read) => {
                read.entries.len() * std::mem::size_of::<FeedEntry>()
                    + read.celebs.len() * std::mem::size_of::<UserId>()
            }
        };
        u32::try_from(value + OVERHEAD).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::from_trusted(1)
    }

    fn first_page() -> PageRequest {
        PageRequest::new(50, 0)
    }

    fn tier() -> LocalTier {
        let tier = LocalTier::new(1 << 20, Duration::from_secs(60), Arc::new(Metrics::new(10)));
        tier.set_listening(true);
        tier
    }

    fn body(text: &str) -> PageBody {
        PageBody {
            json: bytes::Bytes::copy_from_slice(text.as_bytes()),
            limit: 50,
            next_cursor: None,
        }
    }

    #[test]
    fn a_kept_page_is_served_until_its_listing_is_evicted() {
        let tier = tier();
        let listing = ListingKey::UserPosts(user());
        let ticket = tier.ticket(Topic::Listing(listing)).unwrap();
        tier.keep_page(listing, first_page(), ticket, body("[1]"));
        assert_eq!(tier.page(listing, first_page()).unwrap().json, "[1]");

        tier.evict(Topic::Listing(listing));

        assert!(tier.page(listing, first_page()).is_none());
    }

    #[test]
    fn an_eviction_between_the_read_and_the_keep_makes_the_entry_dead_on_arrival() {
        // Arrange: a reader takes its ticket, then (while it reads Redis) a write is heard of.
        let tier = tier();
        let listing = ListingKey::UserPosts(user());
        let ticket = tier.ticket(Topic::Listing(listing)).unwrap();
        tier.evict(Topic::Listing(listing));

        // Act: the reader keeps what it read before the write.
        tier.keep_page(listing, first_page(), ticket, body("[old]"));

        // Assert
        assert!(
            tier.page(listing, first_page()).is_none(),
            "the stale page is never served"
        );
    }

    #[test]
    fn nothing_is_served_or_kept_while_the_channel_is_down_and_all_goes_when_it_drops() {
        let tier = tier();
        let listing = ListingKey::UserPosts(user());
        let ticket = tier.ticket(Topic::Listing(listing)).unwrap();
        tier.keep_page(listing, first_page(), ticket, body("[1]"));

        tier.set_listening(false);
        assert!(tier.ticket(Topic::Listing(listing)).is_none());
        assert!(tier.page(listing, first_page()).is_none());
        tier.set_listening(true);

        assert!(
            tier.page(listing, first_page()).is_none(),
            "an entry from before a drop may have missed a message"
        );
    }

    #[test]
    fn other_topics_survive_an_eviction() {
        let tier = tier();
        let post = PostId::from_trusted(42);
        let json = Bytes::from_static(b"{\"id\":42}");
        let ticket = tier.ticket(Topic::Post(post)).unwrap();
        tier.keep_post(post, ticket, json.clone());

        tier.evict(Topic::Outbox(user()));
        tier.evict(Topic::Post(PostId::from_trusted(43)));

        // Two topics in one stripe would evict each other (rare, and only ever early).
        let same_stripe =
            |other: Topic| tier.epochs.stripe(other) == tier.epochs.stripe(Topic::Post(post));
        if !same_stripe(Topic::Outbox(user()))
            && !same_stripe(Topic::Post(PostId::from_trusted(43)))
        {
            assert_eq!(tier.post(post).unwrap(), json);
        }
    }

    #[test]
    fn topics_survive_the_channel() {
        for topic in [
            Topic::Listing(ListingKey::UserPosts(user())),
            Topic::Post(PostId::from_trusted(9_000_000_001)),
            Topic::Outbox(UserId::from_trusted(77)),
        ] {
            assert_eq!(Topic::decode(&topic.encode()), Some(topic));
        }
        for junk in ["", "x1", "p", "p-1", "p0", "l1.5", "o99999999999999999999"] {
            assert_eq!(Topic::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_tier_is_bounded_by_bytes() {
        let tier = LocalTier::new(
            64 * 1024,
            Duration::from_secs(60),
            Arc::new(Metrics::new(10)),
        );
        tier.set_listening(true);
        for id in 1..=10_000 {
            let post = PostId::from_trusted(id);
            let ticket = tier.ticket(Topic::Post(post)).unwrap();
            let json = Bytes::from(format!("{{\"id\":{id},\"pad\":\"{}\"}}", "x".repeat(200)));
            tier.keep_post(post, ticket, json);
        }
        tier.report();
        assert!(tier.entries.weighted_size() <= 64 * 1024);
    }
}
