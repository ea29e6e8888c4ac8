//! Retention: events, their deliveries and attempts go once they are older than the retention period
//! (per-tenant override in `tenants.retention_days`), in bounded batches that never block delivery.

use chrono::{DateTime, Utc};
use courier_core::TenantId;
use sqlx::PgPool;

use crate::Result;

/// Rows one retention statement deletes at most.
pub const BATCH: i64 = 1000;

/// Deletes one batch of expired events (deliveries and attempts go with them by cascade); returns how many.
/// An event with a delivery still pending or in flight is kept whatever its age: nothing accepted is lost
/// before it is finished.
pub async fn purge_expired_batch(pool: &PgPool, default_days: u32) -> Result<u64> {
    let done = sqlx::query(
        "WITH doomed AS (
            SELECT e.tenant_id, e.environment, e.id FROM events e JOIN tenants t ON t.id = e.tenant_id
            WHERE e.received_at < now() - make_interval(days => COALESCE(t.retention_days, $1))
              AND NOT EXISTS (SELECT 1 FROM deliveries d
                              WHERE d.tenant_id = e.tenant_id AND d.environment = e.environment
                                AND d.event_id = e.id AND d.due_at IS NOT NULL)
            LIMIT $2
         )
         DELETE FROM events e USING doomed
          WHERE e.tenant_id = doomed.tenant_id AND e.environment = doomed.environment AND e.id = doomed.id",
    )
    .bind(default_days as i32)
    .bind(BATCH)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Erases a tenant's events received before `before` (all of them by default), with their deliveries and
/// attempts, in bounded batches. For erasure requests: live deliveries go too.
pub async fn purge_tenant(pool: &PgPool, tenant: TenantId, before: Option<DateTime<Utc>>) -> Result<u64> {
    let before = before.unwrap_or_else(Utc::now);
    let mut total = 0;
    loop {
        let done = sqlx::query(
            "WITH doomed AS (SELECT environment, id FROM events WHERE tenant_id = $1 AND received_at < $2 LIMIT $3)
             DELETE FROM events e USING doomed
              WHERE e.tenant_id = $1 AND e.environment = doomed.environment AND e.id = doomed.id",
        )
        .bind(tenant.as_uuid())
        .bind(before)
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += done;
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}
