//! Idempotent creates: the client's `Idempotency-Key` and what identifies the request it names.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::InvalidInput;

/// Longest `Idempotency-Key` accepted.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;
/// How long a key is remembered: a repeat within it is answered from the first response, a repeat
/// after it runs as a new request.
pub const IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A client's name for one create, so that repeating the request cannot create twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1 to 255 printable ASCII characters (space to `~`), e.g. a UUID.
    ///
    /// # Errors
    /// `invalid_idempotency_key`.
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidInput> {
        let printable = raw.iter().all(|b| (b' '..=b'~').contains(b));
        if raw.is_empty() || raw.len() > IDEMPOTENCY_KEY_MAX_LEN || !printable {
            return Err(InvalidInput::new(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} printable ASCII characters (a UUID will do)"
                ),
            ));
        }
        let key = std::str::from_utf8(raw).expect("printable ASCII is UTF-8");
        Ok(Self(key.to_owned()))
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 of what a create asks for: a repeat under the same key must ask for the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The hash of `fields`, each length-prefixed so that no two lists of fields share one.
    pub fn of(fields: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for field in fields {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        Self(hasher.finalize().into())
    }

    /// Rebuilds a stored fingerprint; `None` if it is not 32 bytes.
    pub fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The 32 bytes, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_printable_ascii_or_too_long_are_refused() {
        let cases: [(&str, &[u8]); 5] = [
            ("empty", b""),
            ("256 characters", &[b'k'; 256]),
            ("a tab", b"a\tb"),
            ("a newline", b"a\nb"),
            ("non-ASCII", "clé".as_bytes()),
        ];
        for (what, raw) in cases {
            let error = IdempotencyKey::parse(raw).expect_err(what);
            assert_eq!(error.code, "invalid_idempotency_key", "{what}");
        }
        for good in [
            &b"550e8400-e29b-41d4-a716-446655440000"[..],
            &[b'~'; 255],
            b"a b",
        ] {
            assert!(IdempotencyKey::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn fingerprints_tell_field_boundaries_apart() {
        assert_ne!(
            Fingerprint::of(&[b"ab", b"c"]),
            Fingerprint::of(&[b"a", b"bc"])
        );
        assert_eq!(
            Fingerprint::of(&[b"ab", b"c"]),
            Fingerprint::of(&[b"ab", b"c"])
        );
    }
}
