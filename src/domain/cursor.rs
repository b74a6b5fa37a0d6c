//! Keyset cursors: an opaque token for "the posts after this one" in a newest-first listing.
//!
//! Layout, before base64url (no padding): a version byte, the last post's `created_at` in
//! microseconds and its id (both big-endian `i64`), then a CRC-16/XMODEM of those 17 bytes. The
//! checksum turns a truncated, mistyped or edited cursor into a 400 instead of a page from some
//! other position. It is not a secret: the cursor holds only what the page itself shows.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::{InvalidInput, Post};

/// Format version of the token.
const VERSION: u8 = 1;
/// Payload bytes before the checksum.
const PAYLOAD: usize = 1 + 8 + 8;

/// A position in a newest-first listing: strictly older than `(created_at, id)`. In a listing of
/// posts the id is a post's; in a follow list, the user's and the time of the follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    created_at: DateTime<Utc>,
    id: i64,
}

impl Cursor {
    /// The position right after the entry `(created_at, id)`.
    pub fn new(created_at: DateTime<Utc>, id: i64) -> Self {
        Self { created_at, id }
    }

    /// The position right after `post`.
    pub fn after(post: &Post) -> Self {
        Self::new(post.created_at, post.id.get())
    }

    /// `created_at` of the last post already seen.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// Id of the last entry already seen.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The opaque token.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(PAYLOAD + 2);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(&self.id.to_be_bytes());
        let checksum = crc16::State::<crc16::XMODEM>::calculate(&bytes);
        bytes.extend_from_slice(&checksum.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a token made by [`Cursor::encode`].
    ///
    /// # Errors
    /// `invalid_cursor` for anything else: not base64url, the wrong length or version, a checksum
    /// that does not match, or a position no post can have.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let invalid = || {
            InvalidInput::new(
                "invalid_cursor",
                "cursor is not one this API returned; pass next_cursor from a page unchanged",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        if bytes.len() != PAYLOAD + 2 || bytes[0] != VERSION {
            return Err(invalid());
        }
        let (payload, checksum) = bytes.split_at(PAYLOAD);
        let expected = crc16::State::<crc16::XMODEM>::calculate(payload).to_be_bytes();
        if checksum != expected {
            return Err(invalid());
        }
        let word = |at: usize| {
            i64::from_be_bytes(
                payload[at..at + 8]
                    .try_into()
                    .expect("8 bytes by construction"),
            )
        };
        let created_at = DateTime::from_timestamp_micros(word(1)).ok_or_else(invalid)?;
        let id = word(9);
        if id <= 0 {
            return Err(invalid());
        }
        Ok(Self { created_at, id })
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(micros: i64, id: i64) -> Cursor {
        Cursor {
            created_at: DateTime::from_timestamp_micros(micros).expect("in range"),
            id,
        }
    }

    #[test]
    fn a_cursor_survives_its_own_encoding() {
        for c in [
            cursor(0, 1),
            cursor(1_764_633_600_123_456, 2_000_000),
            cursor(-5, i64::MAX),
        ] {
            assert_eq!(Cursor::parse(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn garbage_truncated_or_edited_cursors_are_refused() {
        let good = cursor(1_764_633_600_123_456, 42).encode();
        let truncated = &good[..good.len() - 1];
        let mut edited: Vec<char> = good.chars().collect();
        edited[5] = if edited[5] == 'A' { 'B' } else { 'A' };
        let edited: String = edited.into_iter().collect();
        for bad in [
            "",
            "!!!",
            "abc",
            truncated,
            edited.as_str(),
            &format!("{good}A"),
        ] {
            let error = Cursor::parse(bad).expect_err(bad);
            assert_eq!(error.code, "invalid_cursor", "{bad:?}");
        }
    }

    #[test]
    fn every_single_character_edit_is_caught() {
        let good = cursor(1_764_633_600_123_456, 42).encode();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for at in 0..good.len() {
            for replacement in alphabet.chars() {
                let mut edited: Vec<char> = good.chars().collect();
                if edited[at] == replacement {
                    continue;
                }
                edited[at] = replacement;
                let edited: String = edited.into_iter().collect();
                assert!(Cursor::parse(&edited).is_err(), "{edited} parsed");
            }
        }
    }
}
