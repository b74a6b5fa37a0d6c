//! Why a cache call did not produce a value: every kind is a miss to the caller, counted by its
//! `kind` in `cache_errors_total`.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Why a cache call did not produce a value. The caller treats every kind as a miss.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No connection to the cluster exists right now (it is being re-established).
    #[error("no connection to the Redis Cluster")]
    Unavailable,
    /// The node's circuit breaker is open: the call was not sent.
    #[error("the Redis node's circuit breaker is open")]
    CircuitOpen,
    /// The call exceeded its time budget.
    #[error("Redis call exceeded its time budget")]
    Timeout,
    /// Redis or the client reported an error.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A cached value could not be decoded (written by another version?).
    #[error("undecodable cached value: {0}")]
    Decode(String),
    /// The certificate authority of `REDIS_CA_CERT` could not be read (at connect only).
    #[error("REDIS_CA_CERT cannot be read")]
    CaCertificate(#[source] std::io::Error),
}

impl CacheError {
    /// Whether the node did not answer at all (timed out, or its connection failed), as opposed
    /// to answering with an error: what a node's circuit breaker counts.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind(), "timeout" | "io")
    }

    /// Every value [`CacheError::kind`] can return, whose series exist at 0 from connect on.
    pub const KINDS: [&'static str; 9] = [
        "unavailable",
        "breaker_open",
        "timeout",
        "decode",
        "moved",
        "cluster_down",
        "try_again",
        "io",
        "other",
    ];

    /// The `kind` label of `cache_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::CircuitOpen => "breaker_open",
            Self::Timeout => "timeout",
            Self::Decode(_) => "decode",
            Self::CaCertificate(_) => "other",
            Self::Redis(e) if e.is_timeout() => "timeout",
            Self::Redis(e) => match e.kind() {
                ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) => "moved",
                ErrorKind::Server(ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown) => {
                    "cluster_down"
                }
                ErrorKind::Server(ServerErrorKind::TryAgain) => "try_again",
                ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => "io",
                _ => "other",
            },
        }
    }
}
