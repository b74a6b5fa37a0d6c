//! The values the cache's operations take and return, apart from the tiers that produce them, so
//! that the tiers import them from here and not from the façade (`mod.rs`) that dispatches to
//! them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::FeedEntry;
use super::local::Ticket;
use crate::domain::{PageBody, PostId, UserId};

/// A cached page: the ids of its posts, newest first, and whether older posts exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPage {
    pub ids: Vec<PostId>,
    pub has_more: bool,
}

/// What the in-process tier said of a page.
#[derive(Debug)]
pub enum LocalPage {
    /// It holds the page: answer with this body.
    Hit(PageBody),
    /// It does not; a body rendered from what is read next may be kept under this ticket
    /// (`None`: no in-process tier, or its channel is down).
    Miss(Option<Ticket>),
}

/// A listing's generation as seen by a page look-up: the token a page fill must present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation(pub(super) String);

/// What one look-up of a page found.
#[derive(Debug)]
pub struct PageLookup {
    /// The page, when cached.
    pub page: Option<CachedPage>,
    /// The listing's generation seen in the same round trip; a page read from PostgreSQL after
    /// this look-up may be cached only while the generation is unchanged. `None`: the look-up
    /// failed (or there is no cache), so the page must not be cached.
    pub generation: Option<Generation>,
    /// How long the pages hash has left, when early refresh asked.
    pub expires_in: Option<Duration>,
}

/// What a box held, as far as a read asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxRead {
    /// The box holds every entry of its source (nothing older exists outside it).
    pub complete: bool,
    /// For an inbox: the celebrities whose outboxes complete the reader's feed.
    pub celebs: Vec<UserId>,
    /// Entries older than the read's bound, newest first.
    pub entries: Vec<FeedEntry>,
}

/// What reading one box found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxLookup {
    /// The box was never built, expired, was evicted or dropped: rebuild it.
    Missing,
    /// The box exists.
    Found(BoxRead),
    /// Its node failed or timed out: serve from PostgreSQL, rebuild nothing.
    Failed,
}

/// Proof that this rebuild, and no other since, may store its box.
#[derive(Debug)]
pub struct RebuildToken(pub(super) String);

/// How the cache tier answered a health probe.
#[derive(Debug)]
pub enum CacheHealth {
    /// `CACHE=off`.
    Disabled,
    /// No connection to the cluster, or no topology known yet.
    Unreachable,
    /// One entry per master of the last known topology.
    Masters(Vec<NodeHealth>),
}

/// One master's answer to a ping.
#[derive(Debug)]
pub struct NodeHealth {
    /// `host:port`.
    pub node: String,
    /// The round trip, or why there was none.
    pub outcome: Result<Duration, String>,
}
