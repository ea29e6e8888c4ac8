//! Deliveries that end without being delivered by a worker: at their tenant's retention cap (failed, announced like
//! any exhausted delivery), and erased with their events or their tenant (deleted, with their attempts).

use chrono::{DateTime, Utc};
use courier_core::{ErrorKind, EventId, TenantId};
use courier_store::Owner;
use sqlx::{PgConnection, PgPool};

use crate::{Clock, DeliveryStatus, Result};

/// Ends up to [`BATCH`](crate::retention::BATCH) live deliveries older than their tenant's retention, as failed with
/// [`ErrorKind::OutlivedRetention`] and no attempt; returns how many. A delivery's lifetime is capped at the
/// retention, so no receiver asking for more time (`Retry-After`), nor an ordered chain behind it, keeps history
/// past it: its day goes anyway ([`super::history`]), and what it held goes by row once it ends. Each ended one is
/// counted, announced (`delivery.exhausted`) and lets its chain's next delivery go, in the same transaction, like
/// any delivery that failed for good.
///
/// Only deliveries no worker holds: waiting, pending, or delivering with their lease run out. One in flight is left
/// to its worker, whose record is fenced on it; its retry is ended on a later pass. Ages are on `clock`.
pub async fn expire_batch(pool: &PgPool, clock: &Clock, default_days: u32) -> Result<u64> {
    let mut tx = pool.begin().await?;
    // The age is the delivery's own (`created_at`): a replay of an older event gets the whole retention, as any
    // delivery does. An id carries its event's time (migration 0023), never later than the delivery's creation
    // (before that migration, its own, at most a transaction later), so the age bound plus an hour is an id bound:
    // the queue's key is walked from the oldest up to the shortest retention's bound, and each row's own age is
    // checked against its tenant's retention.
    let expired: Vec<(String, String)> = sqlx::query_as(
        "WITH expired AS (
            SELECT d.id, d.status FROM deliveries_live d JOIN tenants t ON t.id = d.tenant_id
             WHERE d.id < courier_id_floor('dlv_', now() + $2 + interval '1 hour'
                              - make_interval(days => (SELECT least($1, min(retention_days)) FROM tenants)))
               AND d.created_at < now() + $2 - make_interval(days => COALESCE(t.retention_days, $1))
               AND (d.status <> $3 OR d.due_at <= now() + $2)
             ORDER BY d.id LIMIT $4
             FOR UPDATE OF d SKIP LOCKED)
         UPDATE deliveries d
            SET status = $5, next_attempt_at = NULL, lease_expires_at = NULL, last_status_code = NULL,
                last_error = $6, updated_at = now()
           FROM expired x
          WHERE d.id = x.id AND d.status = x.status AND d.status = ANY ($7)
         RETURNING d.id, d.webhook_id",
    )
    .bind(default_days as i32)
    .bind(clock.skew())
    .bind(DeliveryStatus::Delivering)
    .bind(crate::retention::BATCH)
    .bind(DeliveryStatus::Failed)
    .bind(ErrorKind::OutlivedRetention.as_str())
    .bind(crate::ordering::LIVE)
    .fetch_all(&mut *tx)
    .await?;
    // The last response is in the attempts; the delivery's last outcome is now the cap, which the log shows.
    let ended: Vec<&str> = expired.iter().map(|(id, _)| id.as_str()).collect();
    let counted: Vec<(String, DeliveryStatus)> =
        expired.iter().map(|(_, webhook)| (webhook.clone(), DeliveryStatus::Failed)).collect();
    crate::hourly::add(&mut tx, &counted).await?;
    let due = crate::ordering::promote_next(&mut tx, clock, &ended).await?
        + crate::operational::deliveries_exhausted(&mut tx, &ended).await?;
    if due > 0 {
        crate::wake::notify(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(expired.len() as u64)
}

/// Deletes up to `batch` of the tenant's deliveries of events received before `before` (for ids made before
/// migration 0023: made before it), whatever became of the events, with their attempts; returns how many.
pub async fn deliveries_of_tenant(pool: &PgPool, tenant: TenantId, before: DateTime<Utc>, batch: i64) -> Result<u64> {
    // Handed over and not written yet: nothing of the tenant's may come back from the journal. First, and in a
    // statement of its own: it waits for a record writing from one of these rows, whose delivery the next
    // statement's snapshot then sees.
    sqlx::query("DELETE FROM delivery_handovers WHERE tenant_id = $1 AND created_at < $2")
        .bind(tenant.as_uuid())
        .bind(before)
        .execute(pool)
        .await?;
    // Ids carry their event's time, so `before` is an id bound, which prunes the log to the days before it.
    let deleted: i64 = sqlx::query_scalar(
        "WITH doomed AS (
            SELECT id, status FROM deliveries WHERE tenant_id = $1 AND id < courier_id_floor('dlv_', $2) LIMIT $3),
         d AS (
            DELETE FROM deliveries d USING doomed x WHERE d.id = x.id AND d.status = x.status RETURNING d.id),
         a AS (DELETE FROM delivery_attempts a USING d WHERE a.delivery_id = d.id)
         SELECT count(*) FROM d",
    )
    .bind(tenant.as_uuid())
    .bind(before)
    .bind(batch)
    .fetch_one(pool)
    .await?;
    Ok(deleted as u64)
}

/// Deletes the deliveries of these events (replays included) with their attempts; returns how many deliveries.
/// There are no foreign keys among the partitioned tables to cascade (see migration 0015), so the order is spelled
/// out: attempts with their deliveries here, the events after, by the caller.
pub async fn deliveries_of_events(conn: &mut PgConnection, keys: &[(Owner, EventId)]) -> Result<u64> {
    let tenants: Vec<uuid::Uuid> = keys.iter().map(|(owner, _)| owner.tenant.as_uuid()).collect();
    let environments: Vec<&str> = keys.iter().map(|(owner, _)| owner.environment.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
    // The journal rows of deliveries of these events not written yet go first, in a statement of their own, as in
    // `deliveries_of_tenant`. A journal row holds one ingest transaction's fan-out, so it holds events of one age.
    sqlx::query(
        "DELETE FROM delivery_handovers h
          WHERE EXISTS (SELECT 1 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS x(tenant_id, environment, id)
                         WHERE h.tenant_id = x.tenant_id AND h.environment = x.environment AND x.id = ANY (h.event_ids))",
    )
    .bind(&tenants)
    .bind(&environments)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    let deleted: i64 = sqlx::query_scalar(
        "WITH d AS (
            DELETE FROM deliveries d USING unnest($1::uuid[], $2::text[], $3::text[]) AS x(tenant_id, environment, id)
             WHERE d.tenant_id = x.tenant_id AND d.environment = x.environment AND d.event_id = x.id
            RETURNING d.id),
         a AS (DELETE FROM delivery_attempts a USING d WHERE a.delivery_id = d.id)
         SELECT count(*) FROM d",
    )
    .bind(&tenants)
    .bind(&environments)
    .bind(&ids)
    .fetch_one(conn)
    .await?;
    Ok(deleted as u64)
}
