//! The schema's version: which of `migrations/` the database has applied (sqlx keeps that in `_sqlx_migrations`).

use sqlx::PgExecutor;

use crate::{MIGRATOR, Result};

/// The newest migration this build carries.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration the database applied successfully (0 for none).
pub async fn applied_version(db: impl PgExecutor<'_>) -> Result<i64> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(db).await?;
    Ok(applied.unwrap_or(0))
}
