//! refinery's migration runner on a sqlx connection: migrations go through the same driver, URL
//! parsing and TLS (`sslmode`, `sslrootcert`) as every other statement of the service.

use async_trait::async_trait;
use refinery::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{Connection as _, Executor as _, PgConnection, Row as _};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A PostgreSQL connection that refinery can migrate.
pub(super) struct Migrator(pub(super) PgConnection);

#[async_trait]
impl AsyncTransaction for Migrator {
    type Error = sqlx::Error;

    async fn execute(&mut self, queries: &[&str]) -> Result<usize, Self::Error> {
        let mut transaction = self.0.begin().await?;
        for query in queries {
            // Unprepared: a migration file may hold several statements.
            transaction.execute(*query).await?;
        }
        transaction.commit().await?;
        Ok(queries.len())
    }
}

#[async_trait]
impl AsyncQuery<Vec<Migration>> for Migrator {
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.0.fetch_all(query).await?;
        rows.iter()
            .map(|row| {
                let applied_on: String = row.try_get(2)?;
                let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                let checksum: String = row.try_get(3)?;
                let checksum = checksum
                    .parse::<u64>()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok(Migration::applied(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    applied_on,
                    checksum,
                ))
            })
            .collect()
    }
}

impl AsyncMigrate for Migrator {}
