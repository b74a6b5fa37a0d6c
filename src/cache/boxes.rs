//! Home-feed boxes on the Redis tier: inboxes filled by fan-out on write, outboxes of authors read
//! by their followers, each a sorted set beside a meta hash and a rebuild token in one slot. Every
//! operation is a small Lua script on the box's node, sent one pipeline per node for many boxes.

use redis::{FromRedisValue, Value};

use super::keys::{BoxKey, FeedEntry};
use super::redis::RedisCache;
use super::types::{BoxLookup, BoxRead, RebuildToken};
use crate::domain::UserId;

/// Reads a box: `nil` when it does not exist (no meta), else `{complete, celebs, members}` with at
/// most ARGV[2] members strictly older than ARGV[1] (a `(member` bound, or `+` for the newest).
/// KEYS: set, meta.
const READ_LUA: &str = r"
local meta = redis.call('HMGET', KEYS[2], 'complete', 'celebs')
if not meta[1] then return false end
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], '-', 'BYLEX', 'REV', 'LIMIT', 0, tonumber(ARGV[2]))
return {meta[1], meta[2] or '', members}
";

/// Appends an entry to a box that exists, trimming it to ARGV[2] entries (the oldest go, and the
/// box is then no longer complete). A box that does not exist is not created (it is rebuilt from
/// PostgreSQL on demand), but a rebuild in progress is poisoned: it read PostgreSQL before this
/// post, so what it would store lacks it. KEYS: set, meta, building. ARGV: member, cap.
const APPEND_LUA: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
  local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
  if over > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
    redis.call('HSET', KEYS[2], 'complete', '0')
  end
  return 1
end
redis.call('DEL', KEYS[3])
return 0
";

/// Removes an entry (a deleted post) and poisons a rebuild in progress. KEYS: set, meta, building.
/// ARGV: member.
const REMOVE_LUA: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
";

/// Stores a rebuilt box if the rebuild still holds its token (nothing poisoned it). The TTL is
/// set here and never extended. KEYS: set, meta, building. ARGV: token, ttl, complete, celebs,
/// members...
const STORE_LUA: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for i = 5, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[i]) end
redis.call('HSET', KEYS[2], 'complete', ARGV[3], 'celebs', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if #ARGV >= 5 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// Claims the rebuild of a box that does not exist: a reader that missed just before another
/// rebuild stored it has nothing to do. KEYS: set, meta, building. ARGV: token, ms.
const BEGIN_LUA: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// How long a rebuild may hold its token before another one may start.
const REBUILD_TOKEN_MS: u64 = 10_000;

impl RedisCache {
    pub(super) async fn read_boxes(
        &self,
        boxes: &[BoxKey],
        after: Option<FeedEntry>,
        count: usize,
    ) -> Vec<BoxLookup> {
        let keys: Vec<[String; 3]> = boxes.iter().map(|&b| self.keys.feed_box(b)).collect();
        let firsts: Vec<String> = keys.iter().map(|k| k[0].clone()).collect();
        self.record_slots(&firsts);
        let bound = after.map_or_else(|| "+".to_owned(), |e| format!("({}", e.member()));
        let replies = self
            .cluster
            .query_many(&firsts, |i| {
                let mut eval = redis::cmd("EVAL");
                eval.arg(READ_LUA)
                    .arg(2)
                    .arg(&keys[i][0])
                    .arg(&keys[i][1])
                    .arg(&bound)
                    .arg(count);
                eval
            })
            .await;
        replies.into_iter().map(parse_read).collect()
    }

    /// Appends `entry` to every box; returns the boxes whose node did not answer.
    pub(super) async fn append(&self, boxes: &[BoxKey], entry: FeedEntry) -> Vec<BoxKey> {
        let member = entry.member();
        let cap = self.box_cap;
        self.each_box(boxes, |keys| {
            let mut eval = redis::cmd("EVAL");
            eval.arg(APPEND_LUA)
                .arg(3)
                .arg(&keys[..])
                .arg(&member)
                .arg(cap);
            eval
        })
        .await
    }

    /// Removes `entry` from every box; returns the boxes whose node did not answer.
    pub(super) async fn remove(&self, boxes: &[BoxKey], entry: FeedEntry) -> Vec<BoxKey> {
        let member = entry.member();
        self.each_box(boxes, |keys| {
            let mut eval = redis::cmd("EVAL");
            eval.arg(REMOVE_LUA).arg(3).arg(&keys[..]).arg(&member);
            eval
        })
        .await
    }

    /// Deletes boxes with their meta and rebuild token; returns those whose node did not answer.
    pub(super) async fn drop_boxes(&self, boxes: &[BoxKey]) -> Vec<BoxKey> {
        self.each_box(boxes, |keys| {
            let mut del = redis::cmd("DEL");
            del.arg(&keys[..]);
            del
        })
        .await
    }

    pub(super) async fn begin_rebuild(&self, key: BoxKey) -> Option<RebuildToken> {
        let keys = self.keys.feed_box(key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut eval = redis::cmd("EVAL");
        eval.arg(BEGIN_LUA)
            .arg(3)
            .arg(&keys[..])
            .arg(&token)
            .arg(REBUILD_TOKEN_MS);
        let replies = self.cluster.query_many(&keys[..1], |_| eval.clone()).await;
        match replies.first() {
            Some(Ok(Value::Int(1))) => Some(RebuildToken(token)),
            _ => None,
        }
    }

    pub(super) async fn store_box(
        &self,
        key: BoxKey,
        token: &RebuildToken,
        entries: &[FeedEntry],
        complete: bool,
        celebs: &[UserId],
    ) -> bool {
        let keys = self.keys.feed_box(key);
        let celebs: Vec<String> = celebs.iter().map(ToString::to_string).collect();
        let mut eval = redis::cmd("EVAL");
        eval.arg(STORE_LUA)
            .arg(3)
            .arg(&keys[..])
            .arg(&token.0)
            .arg(self.box_ttl_secs)
            .arg(if complete { "1" } else { "0" })
            .arg(celebs.join(","));
        for entry in entries {
            eval.arg(entry.member());
        }
        let replies = self.cluster.query_many(&keys[..1], |_| eval.clone()).await;
        matches!(replies.first(), Some(Ok(Value::Int(1))))
    }

    /// Sends one command per box, one pipeline per node; the boxes whose node failed.
    async fn each_box(
        &self,
        boxes: &[BoxKey],
        command: impl Fn(&[String; 3]) -> redis::Cmd + Sync,
    ) -> Vec<BoxKey> {
        let keys: Vec<[String; 3]> = boxes.iter().map(|&b| self.keys.feed_box(b)).collect();
        let firsts: Vec<String> = keys.iter().map(|k| k[0].clone()).collect();
        let replies = self
            .cluster
            .query_many(&firsts, |i| command(&keys[i]))
            .await;
        boxes
            .iter()
            .zip(replies)
            .filter(|(_, reply)| !matches!(reply, Ok(v) if !matches!(v, Value::ServerError(_))))
            .map(|(&b, _)| b)
            .collect()
    }
}

fn parse_read(reply: Result<Value, ()>) -> BoxLookup {
    let value = match reply {
        Err(()) | Ok(Value::ServerError(_)) => return BoxLookup::Failed,
        Ok(Value::Nil) => return BoxLookup::Missing,
        Ok(value) => value,
    };
    let Ok((complete, celebs, members)) = <(String, String, Vec<String>)>::from_redis_value(value)
    else {
        return BoxLookup::Failed;
    };
    let celebs = celebs
        .split(',')
        .filter_map(|id| id.parse::<i64>().ok().filter(|&id| id > 0))
        .map(UserId::from_trusted)
        .collect();
    let entries = members.iter().filter_map(|m| FeedEntry::parse(m)).collect();
    BoxLookup::Found(BoxRead {
        complete: complete == "1",
        celebs,
        entries,
    })
}
