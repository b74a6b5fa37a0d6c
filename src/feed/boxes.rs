//! The home feed's boxes as this instance keeps them in repair: missing boxes rebuilt in the
//! background (once per box in this instance, claimed with a token across instances), and boxes
//! a fan-out could not reach dropped as soon as their node answers, not served meanwhile. Only
//! the home feed (`home_feed.rs`) holds a [`Boxes`]; the page pipeline only starts the
//! [`Rebuild`] a look-up handed it, after the page was served from PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use crate::cache::{BoxKey, Cache, FeedEntry};
use crate::domain::UserId;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;

/// How long a failed drop is retried, how often, and how many boxes may wait at once (past that,
/// their TTL is the bound).
const DROP_RETRY_FOR: Duration = Duration::from_secs(120);
const DROP_RETRY_EVERY: Duration = Duration::from_millis(100);
const MAX_PENDING_DROPS: usize = 100_000;

/// The retried drops of [`Boxes::defer_drops`].
#[derive(Default)]
struct PendingDrops {
    since: HashMap<BoxKey, Instant>,
    worker: bool,
}

/// What the home feed reads and repairs its boxes with; cheap to clone.
#[derive(Clone)]
pub(super) struct Boxes {
    pub(super) cache: Cache,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    /// Followers from which an author's posts are pulled by readers instead of pushed.
    pub(super) celebrity_followers: u32,
    /// Boxes being rebuilt by this instance: one rebuild each, however many readers miss it.
    rebuilding: Arc<Mutex<HashSet<BoxKey>>>,
    /// Boxes a fan-out could not reach, since when: their drop is retried by one background
    /// worker, and this instance does not serve them meanwhile.
    pending_drops: Arc<Mutex<PendingDrops>>,
    /// Where the rebuilds and the drop worker run.
    tasks: Tasks,
}

/// Missing boxes a look-up found, to rebuild once the page it could not serve is answered.
pub(super) struct Rebuild {
    boxes: Boxes,
    keys: Vec<BoxKey>,
}

impl Rebuild {
    /// Rebuilds the boxes in the background, each once in this instance at a time.
    pub(super) fn start(self) {
        self.boxes.spawn_rebuilds(self.keys);
    }
}

impl Boxes {
    pub(super) fn new(
        cache: Cache,
        store: Store,
        metrics: Arc<Metrics>,
        celebrity_followers: u32,
        tasks: Tasks,
    ) -> Self {
        Self {
            cache,
            store,
            metrics,
            celebrity_followers,
            rebuilding: Arc::default(),
            pending_drops: Arc::default(),
            tasks,
        }
    }

    /// The rebuild of `keys`, for the pipeline to start after the page is served.
    pub(super) fn rebuild_later(&self, keys: Vec<BoxKey>) -> Box<Rebuild> {
        Box::new(Rebuild {
            boxes: self.clone(),
            keys,
        })
    }

    /// Whether a box may have missed a write this instance could not deliver.
    pub(super) fn is_unreachable(&self, key: BoxKey) -> bool {
        lock(&self.pending_drops).since.contains_key(&key)
    }

    /// Drops `boxes` as soon as their nodes answer (back, or replaced by a promoted replica),
    /// retrying in one background worker; the next read rebuilds them.
    pub(super) fn defer_drops(&self, boxes: &[BoxKey]) {
        let start_worker = {
            let mut pending = lock(&self.pending_drops);
            let now = Instant::now();
            for &key in boxes {
                if pending.since.len() >= MAX_PENDING_DROPS {
                    tracing::error!(
                        "too many unreachable feed boxes; the rest expire within FEED_BOX_TTL_SECS"
                    );
                    break;
                }
                pending.since.entry(key).or_insert(now);
            }
            !std::mem::replace(&mut pending.worker, true)
        };
        if !start_worker {
            return;
        }
        let boxes = self.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::time::sleep(DROP_RETRY_EVERY).await;
                let keys: Vec<BoxKey> = lock(&boxes.pending_drops).since.keys().copied().collect();
                let still = boxes.cache.drop_boxes(&keys).await;
                let mut pending = lock(&boxes.pending_drops);
                pending.since.retain(|key, since| {
                    let waiting = still.contains(key) || !keys.contains(key);
                    if waiting && since.elapsed() >= DROP_RETRY_FOR {
                        tracing::error!(?key, "feed box still unreachable; it may serve without a write until FEED_BOX_TTL_SECS");
                        return false;
                    }
                    waiting
                });
                if pending.since.is_empty() {
                    pending.worker = false;
                    return;
                }
            }
        });
    }

    /// Rebuilds missing boxes in the background, each once in this instance at a time.
    fn spawn_rebuilds(&self, keys: Vec<BoxKey>) {
        for key in keys {
            let claimed = lock(&self.rebuilding).insert(key);
            if !claimed {
                continue;
            }
            let boxes = self.clone();
            self.tasks.spawn(async move {
                if let Err(error) = boxes.rebuild(key).await {
                    tracing::warn!(%error, ?key, "feed box rebuild failed; the next read tries again");
                }
                lock(&boxes.rebuilding).remove(&key);
            });
        }
    }

    /// Rebuilds one box from PostgreSQL, unless another rebuild holds it.
    async fn rebuild(&self, key: BoxKey) -> Result<(), StoreError> {
        let Some(token) = self.cache.begin_rebuild(key).await else {
            return Ok(());
        };
        let cap = self.cache.box_cap();
        let fetch = u32::try_from(cap + 1).unwrap_or(u32::MAX);
        let (posts, celebs) = match key {
            BoxKey::Inbox(reader) => {
                let sources = self.store.feed_sources(reader).await?;
                let threshold = i64::from(self.celebrity_followers);
                let (celebs, pushed): (Vec<_>, Vec<_>) = sources
                    .into_iter()
                    .partition(|&(_, followers)| followers >= threshold);
                let pushed: Vec<UserId> = pushed.into_iter().map(|(id, _)| id).collect();
                let posts = self.store.newest_posts_of(&pushed, fetch).await?;
                (posts, celebs.into_iter().map(|(id, _)| id).collect())
            }
            BoxKey::Outbox(author) => {
                let posts = self.store.newest_posts_of(&[author], fetch).await?;
                (posts, Vec::new())
            }
        };
        let complete = posts.len() <= cap;
        let entries: Vec<FeedEntry> = posts.iter().take(cap).map(FeedEntry::of).collect();
        let kind = match key {
            BoxKey::Inbox(_) => "inbox",
            BoxKey::Outbox(_) => "outbox",
        };
        if self
            .cache
            .store_box(key, &token, &entries, complete, &celebs)
            .await
        {
            self.metrics.feed_rebuilds.with_label_values(&[kind]).inc();
        } else {
            tracing::debug!(
                ?key,
                "rebuild not stored: a write poisoned it, or the node failed"
            );
        }
        Ok(())
    }

    /// Hands boxes whose node did not answer to the retried drop, with a warning.
    pub(super) fn report_failed(&self, failed: &[BoxKey]) {
        if !failed.is_empty() {
            tracing::warn!(
                boxes = failed.len(),
                "feed boxes could not be reached; retrying their drop in the background"
            );
            self.defer_drops(failed);
        }
    }
}
