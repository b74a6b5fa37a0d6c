//! API keys: the bearer tokens writes are authenticated with.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What every key starts with, so a leaked key is recognisable (secret scanners, logs, a paste).
pub const API_KEY_PREFIX: &str = "hf_";
/// Random bytes in a key: 256 bits, far past guessing, which is why a fast hash stores it safely.
const KEY_BYTES: usize = 32;
/// Characters of a key: the prefix and the bytes in base64url without padding.
const KEY_CHARS: usize = API_KEY_PREFIX.len() + (KEY_BYTES * 4).div_ceil(3);
/// Characters of a key kept in clear to tell keys apart: the prefix and 8 more (48 of 256 bits).
const SHOWN_CHARS: usize = API_KEY_PREFIX.len() + 8;

/// An API key in clear: shown once to its owner, then only its [`KeyHash`] is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new key: `hf_` and 32 bytes from the operating system's CSPRNG, base64url.
    pub fn generate() -> Self {
        let mut bytes = [0_u8; KEY_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the OS random source does not fail once the system has booted");
        Self(format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts text shaped like a key this service issues (it may still be unknown); `None`
    /// otherwise, so junk never reaches the database.
    pub fn parse(raw: &str) -> Option<Self> {
        let random = raw.strip_prefix(API_KEY_PREFIX)?;
        let shaped = raw.len() == KEY_CHARS
            && random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        shaped.then(|| Self(raw.to_owned()))
    }

    /// What is stored and looked up instead of the key.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The first characters (`hf_` and 8 more): not secret, enough to tell a user's keys apart.
    pub fn prefix(&self) -> &str {
        &self.0[..SHOWN_CHARS]
    }

    /// The key itself, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Only the prefix: a key printed by mistake (a `{:?}` in a log line) gives nothing away.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.prefix())
    }
}

/// The SHA-256 of a secret: how API keys are stored and how secrets are compared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of any secret text (an API key, the admin key, a presented bearer token).
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Compares in constant time: how long it takes says nothing about how much matched.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The 32 bytes, as stored in `api_keys.key_hash`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_has_the_documented_shape_and_parses() {
        let key = ApiKey::generate();
        assert_eq!(key.expose().len(), 46, "hf_ + 43 base64url characters");
        assert!(key.expose().starts_with("hf_"));
        assert_eq!(ApiKey::parse(key.expose()), Some(key.clone()));
        assert_eq!(key.prefix().len(), 11);
        assert_ne!(ApiKey::generate(), key, "keys are random");
    }

    #[test]
    fn text_not_shaped_like_a_key_is_refused() {
        let good = ApiKey::generate();
        let cases = [
            ("empty", String::new()),
            ("no prefix", good.expose()[3..].to_owned()),
            ("other prefix", format!("xx_{}", &good.expose()[3..])),
            ("one character short", good.expose()[..45].to_owned()),
            ("one character long", format!("{}A", good.expose())),
            ("not base64url", format!("hf_{}", "+".repeat(43))),
            ("padding", format!("{}=", &good.expose()[..45])),
        ];
        for (what, raw) in cases {
            assert_eq!(ApiKey::parse(&raw), None, "{what}: {raw:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_whole_key() {
        let key = ApiKey::generate();
        let shown = format!("{key:?} {:?}", key.hash());
        assert!(!shown.contains(key.expose()), "{shown}");
        assert!(shown.contains(key.prefix()));
    }

    #[test]
    fn hashes_match_only_the_same_secret() {
        let key = ApiKey::generate();
        assert!(key.hash().matches(&KeyHash::of(key.expose())));
        assert!(!key.hash().matches(&ApiKey::generate().hash()));
    }
}
