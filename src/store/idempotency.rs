//! Creates that run once per idempotency key: the key's row is claimed, the resource created and
//! the response recorded in one transaction, so PostgreSQL decides which of several repeats runs.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;

use super::{Query, Store, StoreError};
use crate::domain::{Fingerprint, IdempotencyKey, UserId};

/// Where an idempotency key is unique: two clients' keys never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyScope {
    /// Posts created as this user (the acting user).
    Posts(UserId),
    /// Sign-ups, which act as nobody yet.
    Users,
}

impl IdempotencyScope {
    fn as_text(self) -> String {
        match self {
            Self::Posts(user) => format!("posts:{user}"),
            Self::Users => "users".to_owned(),
        }
    }
}

/// A create the client may repeat: its key, the key's scope, and what the request asked for.
#[derive(Debug, Clone)]
pub struct Idempotent<'a> {
    pub scope: IdempotencyScope,
    pub key: &'a IdempotencyKey,
    pub fingerprint: Fingerprint,
    /// How long a key is remembered; an older one is taken over by the next request.
    pub ttl: Duration,
}

/// What a create under an idempotency key did.
#[derive(Debug, PartialEq)]
pub enum Once<T> {
    /// It ran: this is what it created.
    Created(T),
    /// The key was used before by the same request: this is what that one created.
    Replayed(T),
    /// The key was used before by a different request: nothing was done.
    KeyReused,
}

impl Store {
    /// Runs `create` in a transaction (its statements commit together or not at all) that, with
    /// a key, first claims `once`'s key and then records what it returned, or answers from the
    /// key's earlier use without running it.
    ///
    /// # Errors
    /// `create`'s; database errors; a recorded response that does not decode as `T`.
    pub(super) async fn create_once<T>(
        &self,
        once: Option<&Idempotent<'_>>,
        create: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<Once<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        let Some(once) = once else {
            let mut tx = self.pool.begin().await?;
            let value = create(&mut tx).await?;
            tx.commit().await?;
            return Ok(Once::Created(value));
        };
        let scope = once.scope.as_text();
        let key = once.key.as_str();
        let mut tx = self.pool.begin().await?;
        let claimed: Option<bool> = self
            .run_in(
                Query::ClaimIdempotencyKey,
                sqlx::query_scalar(include_str!("../../db/queries/claim_idempotency_key.sql"))
                    .bind(&scope)
                    .bind(key)
                    .bind(once.fingerprint.as_bytes())
                    .bind(once.ttl.as_secs_f64())
                    .fetch_optional(&mut *tx),
            )
            .await?;
        if claimed.is_none() {
            // Committed by an earlier request and not expired; the sweep leaves such rows alone.
            let (fingerprint, response): (Vec<u8>, Option<String>) = self
                .run_in(
                    Query::IdempotentResponse,
                    sqlx::query_as(include_str!("../../db/queries/idempotent_response.sql"))
                        .bind(&scope)
                        .bind(key)
                        .fetch_one(&mut *tx),
                )
                .await?;
            tx.rollback().await?;
            if Fingerprint::from_stored(&fingerprint) != Some(once.fingerprint) {
                return Ok(Once::KeyReused);
            }
            let response =
                response.ok_or_else(|| decode_error("a committed key has no response"))?;
            let value = serde_json::from_str(&response).map_err(decode_error)?;
            return Ok(Once::Replayed(value));
        }
        let value = create(&mut tx).await?;
        let response = serde_json::to_string(&value).map_err(decode_error)?;
        self.run_in(
            Query::RecordIdempotentResponse,
            sqlx::query(include_str!(
                "../../db/queries/record_idempotent_response.sql"
            ))
            .bind(&scope)
            .bind(key)
            .bind(response)
            .execute(&mut *tx),
        )
        .await?;
        tx.commit().await?;
        Ok(Once::Created(value))
    }

    /// Deletes at most `batch` idempotency keys older than `age`; returns how many went.
    ///
    /// # Errors
    /// Database errors only.
    #[tracing::instrument(skip(self))]
    pub async fn delete_expired_idempotency_keys(
        &self,
        age: Duration,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let deleted = self
            .run(
                Query::DeleteExpiredIdempotencyKeys,
                move |pool| async move {
                    sqlx::query(include_str!(
                        "../../db/queries/delete_expired_idempotency_keys.sql"
                    ))
                    .bind(age.as_secs_f64())
                    .bind(i64::from(batch))
                    .execute(&pool)
                    .await
                },
            )
            .await?;
        Ok(deleted.rows_affected())
    }
}

fn decode_error(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(error.into()))
}
