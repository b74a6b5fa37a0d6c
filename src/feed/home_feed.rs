//! The home feed: a reader's own posts and those of everyone they follow, newest first,
//! `GET /api/v1/users/{id}/feed`. Hybrid fan-out:
//!
//! - **On write**, a post of an ordinary author is appended to the inbox of each follower whose
//!   inbox exists (one pipeline per node) and to the author's own outbox. An author with
//!   `FEED_CELEBRITY_FOLLOWERS` or more followers is a celebrity: the post goes to the outbox only.
//! - **On read**, one round trip reads the reader's inbox and the list of celebrities they follow;
//!   one more, one pipeline per node, reads those celebrities' outboxes; the entries are merged.
//!   A page the boxes cannot cover (a missing box, or deeper than they reach) is read from
//!   PostgreSQL, and missing boxes are rebuilt in the background, once per box however many
//!   readers ask (coalesced in this instance, claimed with a token across instances).
//! - **Consistency**: a rebuild that read PostgreSQL before a post or a delete is poisoned by that
//!   write and stores nothing; a follow or unfollow drops the follower's inbox; an author who
//!   becomes a celebrity drops their followers' inboxes (they then pull the author instead); a box
//!   a fan-out could not reach is dropped; every box lives at most `FEED_BOX_TTL_SECS`.

use std::collections::BTreeSet;
use std::time::Instant;

use super::boxes::Boxes;
use super::listing::{Change, IdsLookup, Remember, Source};
use crate::cache::{BoxKey, BoxLookup, BoxRead, CachedPage, FeedEntry};
use crate::domain::{PageRequest, Position, Post, PostId, UserId};
use crate::store::{PostsPage, Store, StoreError};

/// One user's home boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeFeed {
    reader: UserId,
}

/// Ids from the reader's inbox only.
const INBOX: Source = Source {
    header: "inbox",
    label: "inbox",
};
/// Ids from the inbox merged with the outboxes of the celebrities the reader follows.
const PULLED: Source = Source {
    header: "inbox+pulled",
    label: "pulled",
};

impl HomeFeed {
    /// The home feed pages by cursor only: its pages carry no offset.
    pub(super) const PAGES_BY_OFFSET: bool = false;
    /// A page PostgreSQL listed.
    pub(super) const DATABASE_SOURCE: Option<Source> = Some(Source {
        header: "database",
        label: "database",
    });

    pub(super) fn new(reader: UserId) -> Self {
        Self { reader }
    }

    pub(super) fn owner(&self) -> UserId {
        self.reader
    }

    pub(super) async fn lookup(&self, boxes: &Boxes, page: PageRequest) -> IdsLookup {
        let miss = |remember| IdsLookup {
            ids: None,
            remember,
            source: None,
            expires_in: None,
        };
        let after = match page.position() {
            Position::After(cursor) => Some(FeedEntry::at(cursor)),
            Position::Offset(_) => None,
        };
        let count = page.limit() as usize + 1;
        let inbox = BoxKey::Inbox(self.reader);
        if boxes.is_unreachable(inbox) {
            return miss(Remember::Objects);
        }
        let inbox_read = match first(boxes.cache.read_boxes(&[inbox], after, count).await) {
            BoxLookup::Found(read) => read,
            BoxLookup::Missing => return miss(Remember::Rebuild(boxes.rebuild_later(vec![inbox]))),
            BoxLookup::Failed => return miss(Remember::Nothing),
        };
        let outboxes: Vec<BoxKey> = inbox_read
            .celebs
            .iter()
            .map(|&c| BoxKey::Outbox(c))
            .collect();
        let mut sources = vec![inbox_read];
        if !outboxes.is_empty() {
            boxes
                .metrics
                .feed_celebrity_pulls
                .inc_by(outboxes.len() as u64);
            let reads = boxes.cache.read_boxes(&outboxes, after, count).await;
            let mut missing = Vec::new();
            for (key, read) in outboxes.iter().zip(reads) {
                match read {
                    BoxLookup::Found(read) => sources.push(read),
                    BoxLookup::Missing => missing.push(*key),
                    BoxLookup::Failed => return miss(Remember::Nothing),
                }
            }
            if !missing.is_empty() {
                return miss(Remember::Rebuild(boxes.rebuild_later(missing)));
            }
        }
        match merge(&sources, page.limit() as usize) {
            Some(cached) => IdsLookup {
                ids: Some(cached),
                remember: Remember::Objects,
                source: Some(if outboxes.is_empty() { INBOX } else { PULLED }),
                expires_in: None,
            },
            // Deeper than the boxes reach: PostgreSQL serves it, and there is nothing to rebuild.
            None => miss(Remember::Objects),
        }
    }

    pub(super) async fn load(
        &self,
        store: &Store,
        page: PageRequest,
    ) -> Result<Option<PostsPage>, StoreError> {
        let rows = store.home_feed_page(self.reader, page).await?;
        if rows.posts.is_empty() && !store.user_exists(self.reader).await? {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// Fan-out of posts and deletes; dropped inboxes for follows.
    pub(super) async fn apply(boxes: &Boxes, change: Change<'_>) {
        let result = match change {
            Change::PostCreated(post) => fan_out(boxes, post, Write::Append).await,
            Change::PostDeleted(post) => fan_out(boxes, post, Write::Remove).await,
            Change::Follows { follow, followee } => {
                let mut dropped = vec![BoxKey::Inbox(follow.follower)];
                // Just became a celebrity: its followers' inboxes, and its own, hold its
                // fanned-out posts but would miss the next ones; rebuilt, they pull its outbox.
                if followee.followers_count == i64::from(boxes.celebrity_followers) {
                    dropped.push(BoxKey::Inbox(follow.followee));
                    match boxes
                        .store
                        .follower_ids(follow.followee, boxes.celebrity_followers)
                        .await
                    {
                        Ok(followers) => dropped.extend(followers.into_iter().map(BoxKey::Inbox)),
                        Err(error) => {
                            tracing::error!(%error, "a new celebrity's followers could not be listed; their inboxes expire within FEED_BOX_TTL_SECS")
                        }
                    }
                }
                let failed = boxes.cache.drop_boxes(&dropped).await;
                boxes.report_failed(&failed);
                Ok(())
            }
            Change::PostEdited(_) | Change::UserEdited(_) => Ok(()),
        };
        if let Err(error) = result {
            tracing::error!(%error, "write saved but its fan-out could not be planned; affected feeds catch up within FEED_BOX_TTL_SECS");
        }
    }
}

enum Write {
    Append,
    Remove,
}

/// Writes one post's entry to its author's outbox and, unless the author is a celebrity, to the
/// inboxes of the author and every follower.
async fn fan_out(boxes: &Boxes, post: &Post, write: Write) -> Result<(), StoreError> {
    let started = Instant::now();
    let followers = boxes
        .store
        .follower_ids(post.user_id, boxes.celebrity_followers)
        .await?;
    let mut targets = vec![BoxKey::Outbox(post.user_id)];
    if followers.len() < boxes.celebrity_followers as usize {
        targets.push(BoxKey::Inbox(post.user_id));
        targets.extend(followers.into_iter().map(BoxKey::Inbox));
    }
    let entry = FeedEntry::of(post);
    let failed = match write {
        Write::Append => boxes.cache.append_to_boxes(&targets, entry).await,
        Write::Remove => boxes.cache.remove_from_boxes(&targets, entry).await,
    };
    boxes.metrics.feed_fanout_size.observe(targets.len() as f64);
    boxes
        .metrics
        .feed_fanout_lag
        .observe(started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        // A box that may have missed this post must not keep serving without it: drop it, and
        // if its node is still out of reach, its TTL bounds the damage.
        let unreachable = boxes.cache.drop_boxes(&failed).await;
        boxes
            .metrics
            .feed_fanout_repairs
            .inc_by(failed.len() as u64);
        boxes.report_failed(&unreachable);
    }
    Ok(())
}

fn first(mut reads: Vec<BoxLookup>) -> BoxLookup {
    if reads.is_empty() {
        BoxLookup::Failed
    } else {
        reads.swap_remove(0)
    }
}

/// Merges boxes into one page of `limit` ids, if they cover it. Each source is certain above its
/// horizon: the last entry it returned, when it returned as many as asked or holds less than its
/// whole source; nowhere, for a complete box read to its end. The page is served from the boxes
/// only if `limit + 1` merged entries (or the end of every source) lie above every horizon.
fn merge(sources: &[BoxRead], limit: usize) -> Option<CachedPage> {
    let count = limit + 1;
    let mut horizon: Option<FeedEntry> = None;
    for source in sources {
        let exhausted = source.entries.len() < count;
        if exhausted && source.complete {
            continue;
        }
        // Nothing returned by an incomplete box: nothing below the bound is known.
        let last = source.entries.last().copied()?;
        horizon = horizon.max(Some(last));
    }
    let merged: BTreeSet<FeedEntry> = sources
        .iter()
        .flat_map(|s| s.entries.iter().copied())
        .filter(|entry| horizon.is_none_or(|h| *entry >= h))
        .collect();
    let newest: Vec<PostId> = merged.iter().rev().take(count).map(|e| e.id).collect();
    if newest.len() < count && horizon.is_some() {
        return None;
    }
    let has_more = newest.len() > limit;
    Some(CachedPage {
        ids: newest.into_iter().take(limit).collect(),
        has_more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(micros: i64) -> FeedEntry {
        FeedEntry {
            created_at_micros: micros,
            id: PostId::from_trusted(micros),
        }
    }

    fn read(complete: bool, micros: &[i64]) -> BoxRead {
        BoxRead {
            complete,
            celebs: Vec::new(),
            entries: micros.iter().map(|&m| entry(m)).collect(),
        }
    }

    fn ids(page: &CachedPage) -> Vec<i64> {
        page.ids.iter().map(|id| id.get()).collect()
    }

    #[test]
    fn complete_boxes_read_to_their_end_make_the_last_page() {
        let page = merge(&[read(true, &[9, 5]), read(true, &[7])], 2).expect("covered");
        assert_eq!(ids(&page), [9, 7]);
        assert!(page.has_more);
        let last = merge(&[read(true, &[5]), read(true, &[])], 2).expect("covered");
        assert_eq!((ids(&last), last.has_more), (vec![5], false));
    }

    #[test]
    fn a_box_that_stops_short_bounds_what_the_merge_may_claim() {
        // The outbox returned all it was asked (3 of limit 2 + 1): older posts of that author
        // may exist below 6, so only entries at or above 6 are certain.
        let page = merge(&[read(true, &[9, 1]), read(false, &[8, 7, 6])], 2).expect("covered");
        assert_eq!(ids(&page), [9, 8]);
        assert!(page.has_more);
        // An incomplete inbox that ran out above the page: PostgreSQL must serve it.
        assert_eq!(merge(&[read(false, &[9])], 2), None);
        assert_eq!(merge(&[read(false, &[])], 2), None);
    }

    #[test]
    fn the_same_post_from_two_boxes_appears_once() {
        let page = merge(&[read(true, &[9, 5]), read(true, &[9, 5])], 5).expect("covered");
        assert_eq!(ids(&page), [9, 5]);
    }
}
