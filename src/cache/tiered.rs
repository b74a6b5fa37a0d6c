//! The in-process tier in front of the Redis Cluster: the one place that decides what it
//! answers, what a read from Redis may keep (tickets, admission by the hot-key detection) and
//! what a write evicts on every instance (the invalidation channel). Reads are counted for the
//! hot-key detection here, at the tier's door, whichever tier then answers them.

use std::sync::Arc;

use bytes::Bytes;

use super::error::CacheError;
use super::hot_keys::HotKey;
use super::invalidation::{self, Publisher};
use super::keys::{BoxKey, FeedEntry, ListingKey};
use super::local::{LocalTier, Ticket, Topic};
use super::options::CacheOptions;
use super::redis::RedisCache;
use super::types::{BoxLookup, LocalPage};
use crate::domain::{PageBody, PageRequest, PostId};
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// The in-process tier in front of the Redis Cluster, and the channel that keeps it in step with
/// the other instances' writes.
#[derive(Clone)]
pub struct Tiered {
    pub(super) redis: RedisCache,
    pub(super) local: LocalTier,
    publisher: Publisher,
    /// Reads in the hot-key window before a key is admitted.
    admit_reads: u64,
    /// Where the broadcasts of this instance's writes run.
    tasks: Tasks,
}

impl Tiered {
    /// The in-process tier in front of `redis`, and the subscriber that keeps it in step.
    ///
    /// # Errors
    /// `REDIS_CA_CERT` cannot be read.
    pub(super) fn new(
        redis: RedisCache,
        settings: &CacheOptions,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Result<Self, CacheError> {
        let local = LocalTier::new(settings.l1_max_bytes, settings.l1_ttl, Arc::clone(&metrics));
        let publisher = invalidation::start(
            settings,
            redis.cluster.clone(),
            local.clone(),
            metrics,
            tasks,
        )
        .map_err(CacheError::CaCertificate)?;
        Ok(Self {
            redis,
            local,
            publisher,
            admit_reads: settings.l1_admit_reads,
            tasks: tasks.clone(),
        })
    }

    fn admits(&self, key: HotKey) -> bool {
        self.redis.hot.is_hot(key, self.admit_reads)
    }

    /// Posts from the in-process tier when it holds them, else from Redis (and the hot ones are
    /// then kept in-process).
    pub(super) async fn posts_json(&self, ids: &[PostId]) -> Vec<Option<Bytes>> {
        self.redis.hot.record_posts(ids);
        let local = &self.local;
        let mut found: Vec<Option<Bytes>> = ids.iter().map(|&id| local.post(id)).collect();
        let missing: Vec<(usize, PostId, Option<Ticket>)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| found[*i].is_none())
            .map(|(i, &id)| (i, id, local.ticket(Topic::Post(id))))
            .collect();
        if missing.is_empty() {
            return found;
        }
        let missing_ids: Vec<PostId> = missing.iter().map(|&(_, id, _)| id).collect();
        let read = self.redis.posts_json(&missing_ids).await;
        for ((i, id, ticket), json) in missing.into_iter().zip(read) {
            if let (Some(ticket), Some(json)) = (ticket, &json) {
                if self.admits(HotKey::Post(id)) {
                    local.keep_post(id, ticket, json.clone());
                }
            }
            found[i] = json;
        }
        found
    }

    /// A page the in-process tier holds, or the ticket a page read next may be kept under.
    pub(super) fn local_page(&self, listing: ListingKey, page: PageRequest) -> LocalPage {
        self.redis.hot.record_page(listing);
        match self.local.page(listing, page) {
            Some(body) => LocalPage::Hit(body),
            None => LocalPage::Miss(self.local.ticket(Topic::Listing(listing))),
        }
    }

    /// Keeps a rendered page if its listing is hot.
    pub(super) fn keep_page(
        &self,
        listing: ListingKey,
        page: PageRequest,
        ticket: Ticket,
        body: &PageBody,
    ) {
        if self.admits(HotKey::Page(listing)) {
            self.local.keep_page(listing, page, ticket, body.clone());
        }
    }

    /// Boxes from the in-process tier (hot outboxes only), else from Redis.
    pub(super) async fn read_boxes(
        &self,
        boxes: &[BoxKey],
        after: Option<FeedEntry>,
        count: usize,
    ) -> Vec<BoxLookup> {
        self.redis.hot.record_boxes(boxes);
        let local = &self.local;
        let mut found: Vec<Option<BoxLookup>> = boxes
            .iter()
            .map(|&key| match key {
                BoxKey::Outbox(author) => local
                    .outbox(author, after, count)
                    .map(|read| BoxLookup::Found((*read).clone())),
                BoxKey::Inbox(_) => None,
            })
            .collect();
        let missing: Vec<(usize, BoxKey, Option<Ticket>)> = boxes
            .iter()
            .enumerate()
            .filter(|(i, _)| found[*i].is_none())
            .map(|(i, &key)| {
                let ticket = match key {
                    BoxKey::Outbox(author) => local.ticket(Topic::Outbox(author)),
                    BoxKey::Inbox(_) => None,
                };
                (i, key, ticket)
            })
            .collect();
        let keys: Vec<BoxKey> = missing.iter().map(|&(_, key, _)| key).collect();
        let read = if keys.is_empty() {
            Vec::new()
        } else {
            self.redis.read_boxes(&keys, after, count).await
        };
        for ((i, key, ticket), lookup) in missing.into_iter().zip(read) {
            if let (Some(ticket), BoxKey::Outbox(author), BoxLookup::Found(box_read)) =
                (ticket, key, &lookup)
            {
                if self.admits(HotKey::Box(key)) {
                    local.keep_outbox(author, after, count, ticket, Arc::new(box_read.clone()));
                }
            }
            found[i] = Some(lookup);
        }
        found
            .into_iter()
            .map(|lookup| lookup.expect("every box was looked up in one tier or the other"))
            .collect()
    }

    /// Evicts `topics` from the in-process tier here at once, and on every other instance
    /// through the invalidation channel. The write does not wait for the broadcast: the other
    /// instances hear it when it is delivered either way, and a frozen or dead node would
    /// otherwise add its budget (twice, with the retry) to every acknowledged write.
    pub(super) fn changed(&self, topics: &[Topic]) {
        for &topic in topics {
            self.local.evict(topic);
        }
        let publisher = self.publisher.clone();
        let topics = topics.to_vec();
        self.tasks
            .spawn(async move { publisher.publish(&topics).await });
    }
}
