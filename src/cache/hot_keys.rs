//! Hot-key detection: which keys, users and slots this instance reads most, over a sliding
//! window, in bounded memory whatever keys clients ask for.
//!
//! Keys and users are counted at every read, whichever tier answers, so a key the in-process
//! tier serves stays hot; slots are counted at the Redis tier, since a slot's load is what its
//! node carries. The detection decides what the in-process tier admits, and is served at
//! `GET /api/v1/admin/hot` and as the bounded `hot_key_reads` gauges.

use std::time::Duration;

use serde::Serialize;

use super::keys::{BoxKey, Keys, ListingKey};
use crate::domain::{PostId, UserId};
use crate::hot::TopK;

/// A cache key as the detection counts it: no string is built to count a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HotKey {
    /// Every page of a listing (one pages hash in Redis).
    Page(ListingKey),
    /// One post object.
    Post(PostId),
    /// A home-feed inbox or outbox.
    Box(BoxKey),
}

/// The detection of one instance.
pub struct HotKeys {
    keys: TopK<HotKey>,
    users: TopK<UserId>,
    slots: TopK<u16>,
    window: Duration,
}

/// What the detection reports: the hottest keys, users and slots over the window (all empty
/// when nothing is cached).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct HotReport {
    /// The window's length, in seconds.
    pub window_secs: u64,
    /// Reads of keys counted in the window (shares are of this).
    pub key_reads: u64,
    /// The hottest keys, hottest first.
    pub keys: Vec<HotKeyEntry>,
    /// Reads of listings and outboxes counted in the window, by owner.
    pub user_reads: u64,
    /// The hottest users (owners of the listings and outboxes read), hottest first.
    pub users: Vec<HotUserEntry>,
    /// Keys read from Redis in the window, by slot.
    pub slot_reads: u64,
    /// The hottest slots of the Redis tier, hottest first.
    pub slots: Vec<HotSlotEntry>,
}

/// One hot key.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HotKeyEntry {
    /// The Redis key.
    pub key: String,
    /// `pages`, `post`, `inbox` or `outbox`.
    pub kind: &'static str,
    /// Reads in the window (an estimate that never under-counts).
    pub reads: u64,
    /// Its share of all key reads.
    pub share: f64,
    /// Its slot in the cluster.
    pub slot: u16,
    /// The master that owns the slot, when the topology is known.
    pub node: Option<String>,
}

/// One hot user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HotUserEntry {
    pub user_id: UserId,
    pub reads: u64,
    pub share: f64,
    /// The master that owns the user's slot (`{user:<id>}`: pages, boxes), when known.
    pub node: Option<String>,
}

/// One hot slot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HotSlotEntry {
    pub slot: u16,
    pub reads: u64,
    pub share: f64,
    /// The master that owns it, when the topology is known.
    pub node: Option<String>,
}

impl HotKeys {
    /// Reports the `top_k` hottest of each over `window`.
    pub fn new(top_k: usize, window: Duration) -> Self {
        Self {
            keys: TopK::new(top_k, window),
            users: TopK::new(top_k, window),
            slots: TopK::new(top_k, window),
            window,
        }
    }

    /// Counts a read of `key`.
    pub fn record(&self, key: HotKey) {
        self.keys.record(&key);
    }

    /// Counts a read of something `user` owns.
    pub fn record_user(&self, user: UserId) {
        self.users.record(&user);
    }

    /// Counts a read of these posts, whichever tier answers it.
    pub fn record_posts(&self, ids: &[PostId]) {
        for &id in ids {
            self.record(HotKey::Post(id));
        }
    }

    /// Counts a read of a page of `listing`, and of its owner, whichever tier answers it.
    pub fn record_page(&self, listing: ListingKey) {
        self.record(HotKey::Page(listing));
        self.record_user(listing.owner());
    }

    /// Counts a read of these boxes, and of the authors of its outboxes, whichever tier answers.
    pub fn record_boxes(&self, boxes: &[BoxKey]) {
        for &key in boxes {
            self.record(HotKey::Box(key));
            if let BoxKey::Outbox(author) = key {
                self.record_user(author);
            }
        }
    }

    /// Counts a key read from Redis in `slot`.
    pub fn record_slot(&self, slot: u16) {
        self.slots.record(&slot);
    }

    /// Whether `key` was read at least `reads` times in the window.
    pub fn is_hot(&self, key: HotKey, reads: u64) -> bool {
        self.keys.is_hot(&key, reads)
    }

    /// The report, with key names from `keys` and owners from `node_of`.
    pub fn report(&self, keys: &Keys, node_of: impl Fn(u16) -> Option<String>) -> HotReport {
        let share = |reads: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                reads as f64 / total as f64
            }
        };
        let key_reads = self.keys.total();
        let user_reads = self.users.total();
        let slot_reads = self.slots.total();
        HotReport {
            window_secs: self.window.as_secs(),
            key_reads,
            keys: self
                .keys
                .top()
                .into_iter()
                .map(|(key, reads)| {
                    let (name, kind) = match key {
                        HotKey::Page(listing) => (keys.pages(listing), "pages"),
                        HotKey::Post(id) => (keys.post(id), "post"),
                        HotKey::Box(key) => {
                            let [set, _, _] = keys.feed_box(key);
                            let kind = match key {
                                BoxKey::Inbox(_) => "inbox",
                                BoxKey::Outbox(_) => "outbox",
                            };
                            (set, kind)
                        }
                    };
                    let slot = super::keys::slot(name.as_bytes());
                    HotKeyEntry {
                        key: name,
                        kind,
                        reads,
                        share: share(reads, key_reads),
                        slot,
                        node: node_of(slot),
                    }
                })
                .collect(),
            user_reads,
            users: self
                .users
                .top()
                .into_iter()
                .map(|(user_id, reads)| HotUserEntry {
                    user_id,
                    reads,
                    share: share(reads, user_reads),
                    node: node_of(super::keys::slot(keys.user_pages(user_id).as_bytes())),
                })
                .collect(),
            slot_reads,
            slots: self
                .slots
                .top()
                .into_iter()
                .map(|(slot, reads)| HotSlotEntry {
                    slot,
                    reads,
                    share: share(reads, slot_reads),
                    node: node_of(slot),
                })
                .collect(),
        }
    }
}
