//! Every Redis key string is built here.
//!
//! Layout (prefix `hf` by default):
//! - `hf:post:<id>`, `hf:user:<id>`: one object per key, no hash tag, so objects spread over all
//!   shards on purpose and a page's posts are fetched from several nodes at once.
//! - `hf:{user:<id>}:pages`: a hash holding every cached page of one user's posts, field
//!   `<limit>:<offset>`. One `DEL` drops them all, whatever their number.
//! - `hf:{user:<id>}:gen`: the user's page generation, bumped on every write, so a page read from
//!   PostgreSQL before a write cannot be cached after it. The `{user:<id>}` hash tag keeps it in the
//!   same slot as the pages hash: one atomic pipeline or script touches both.

use crate::domain::{PageRequest, PostId, UserId};

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// Builds the keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, which must not contain `{` or `}` (the configuration checks it).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The cached JSON of one post.
    pub fn post(&self, id: PostId) -> String {
        format!("{}:post:{id}", self.prefix)
    }

    /// The cached JSON of one user.
    pub fn user(&self, id: UserId) -> String {
        format!("{}:user:{id}", self.prefix)
    }

    /// The hash of a user's cached pages of post ids.
    pub fn user_pages(&self, id: UserId) -> String {
        format!("{}:{{user:{id}}}:pages", self.prefix)
    }

    /// The generation counter of a user's pages.
    pub fn user_generation(&self, id: UserId) -> String {
        format!("{}:{{user:{id}}}:gen", self.prefix)
    }

    /// The field of one page inside [`Keys::user_pages`].
    pub fn page_field(page: PageRequest) -> String {
        format!("{}:{}", page.limit(), page.offset())
    }

    /// The pattern matching every key of this deployment, for `SCAN` in maintenance tools.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
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
}
