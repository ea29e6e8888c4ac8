//! Retention: events, their deliveries and attempts go once they are older than the retention period
//! (per-tenant override in `tenants.retention_days`), in bounded batches that never block delivery.

use chrono::{DateTime, Utc};
use courier_core::{EventId, TenantId};
use courier_store::{Owner, events};
use sqlx::PgPool;

use crate::{Result, corrupt};

/// Rows one retention statement deletes at most.
pub const BATCH: i64 = 1000;

/// Deletes one batch of expired events (deliveries and attempts go with them by cascade); returns how many.
/// An event with a delivery still pending or in flight is kept whatever its age: nothing accepted is lost
/// before it is finished.
///
/// Which events may go is the queue's knowledge (their deliveries), so it is chosen here; deleting them is the
/// store's, which owns `events`. The chosen rows are locked until the delete commits, so a replay racing it fails
/// its foreign key instead of queueing a delivery that would vanish with its event.
pub async fn purge_expired_batch(pool: &PgPool, default_days: u32) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let doomed: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT e.tenant_id, e.environment, e.id FROM events e JOIN tenants t ON t.id = e.tenant_id
         WHERE e.received_at < now() - make_interval(days => COALESCE(t.retention_days, $1))
           AND NOT EXISTS (SELECT 1 FROM deliveries d
                           WHERE d.tenant_id = e.tenant_id AND d.environment = e.environment
                             AND d.event_id = e.id AND d.status = ANY ($3))
         LIMIT $2
         FOR UPDATE OF e SKIP LOCKED",
    )
    .bind(default_days as i32)
    .bind(BATCH)
    .bind(crate::ordering::LIVE)
    .fetch_all(&mut *tx)
    .await?;
    let keys = doomed
        .into_iter()
        .map(|(tenant, environment, id)| {
            let row = format!("event {id}");
            let environment = environment.parse().map_err(corrupt(&row, "environment"))?;
            let id = EventId::parse(&id).map_err(corrupt(&row, "id"))?;
            Ok((Owner { tenant: TenantId::from_uuid(tenant), environment }, id))
        })
        .collect::<Result<Vec<_>>>()?;
    let deleted = events::delete(&mut tx, &keys).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// Erases a tenant's events received before `before` (all of them by default), with their deliveries and
/// attempts, in bounded batches. For erasure requests: live deliveries go too.
pub async fn purge_tenant(pool: &PgPool, tenant: TenantId, before: Option<DateTime<Utc>>) -> Result<u64> {
    let before = before.unwrap_or_else(Utc::now);
    let mut total = 0;
    loop {
        let done = events::purge_tenant_batch(pool, tenant, before, BATCH).await?;
        total += done;
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}
