//! Tenants: created and listed by operators only.

use chrono::{DateTime, Utc};
use courier_core::TenantId;
use sqlx::PgExecutor;

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub retention_days: Option<i32>,
    pub created_at: DateTime<Utc>,
}

type Row = (uuid::Uuid, String, Option<i32>, DateTime<Utc>);

fn from_row((id, name, retention_days, created_at): Row) -> Tenant {
    Tenant { id: TenantId::from_uuid(id), name, retention_days, created_at }
}

pub async fn create(db: impl PgExecutor<'_>, name: &str) -> Result<Tenant> {
    let row: Row =
        sqlx::query_as("INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, retention_days, created_at")
            .bind(TenantId::generate().as_uuid())
            .bind(name)
            .fetch_one(db)
            .await?;
    Ok(from_row(row))
}

pub async fn get(db: impl PgExecutor<'_>, id: TenantId) -> Result<Option<Tenant>> {
    let row: Option<Row> = sqlx::query_as("SELECT id, name, retention_days, created_at FROM tenants WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(db)
        .await?;
    Ok(row.map(from_row))
}

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Tenant>> {
    let rows: Vec<Row> =
        sqlx::query_as("SELECT id, name, retention_days, created_at FROM tenants ORDER BY created_at, id")
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(from_row).collect())
}
