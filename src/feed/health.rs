//! Readiness in types: what each backend answered, and what that makes the service.

use std::time::Duration;

use crate::cache::CacheHealth;

/// How PostgreSQL answered its probe.
#[derive(Debug)]
pub enum PostgresHealth {
    /// Answered after this round trip.
    Up(Duration),
    /// Did not answer in time, or failed.
    Down(&'static str),
}

/// What the Redis tier amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisStatus {
    /// Every master answered.
    Up,
    /// Some masters answered, some did not: their keys are served from PostgreSQL.
    Degraded,
    /// No master answered, or there is no connection.
    Down,
    /// `CACHE=off`.
    Disabled,
}

/// What the service amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overall {
    /// Everything answers.
    Ok,
    /// PostgreSQL answers, the cache is impaired: every read is still served.
    Degraded,
    /// PostgreSQL does not answer: the service is not ready.
    Down,
}

/// The answers of both backends.
#[derive(Debug)]
pub struct Health {
    pub postgres: PostgresHealth,
    pub redis: CacheHealth,
}

impl Health {
    /// The Redis tier's status, from its masters' answers.
    pub fn redis_status(&self) -> RedisStatus {
        match &self.redis {
            CacheHealth::Disabled => RedisStatus::Disabled,
            CacheHealth::Unreachable => RedisStatus::Down,
            CacheHealth::Masters(masters) => {
                let up = masters.iter().filter(|m| m.outcome.is_ok()).count();
                match up {
                    0 => RedisStatus::Down,
                    n if n == masters.len() => RedisStatus::Up,
                    _ => RedisStatus::Degraded,
                }
            }
        }
    }

    /// Ready unless PostgreSQL is down: Redis only speeds reads up.
    pub fn overall(&self) -> Overall {
        match (&self.postgres, self.redis_status()) {
            (PostgresHealth::Down(_), _) => Overall::Down,
            (_, RedisStatus::Up | RedisStatus::Disabled) => Overall::Ok,
            _ => Overall::Degraded,
        }
    }
}
