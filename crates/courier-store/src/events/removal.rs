//! Events leaving: erasure and retention (keys forgotten, day partitions dropped).

use chrono::{DateTime, Utc};
use courier_core::{EventId, TenantId};
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner, Result};

/// Deletes these events (by tenant, environment and id) and their keys, so their ids may be used again. Their
/// deliveries and attempts are the scheduler's to delete first. The caller decided they may go (retention,
/// erasure) and holds their keys locked (`courier_scheduler::retention`, [`lock_of_tenant`]).
pub async fn delete(conn: &mut PgConnection, keys: &[(Owner, EventId)]) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let tenants: Vec<uuid::Uuid> = keys.iter().map(|(owner, _)| owner.tenant.as_uuid()).collect();
    let environments: Vec<&str> = keys.iter().map(|(owner, _)| owner.environment.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
    let done = sqlx::query(
        "WITH k AS (
            DELETE FROM event_keys k USING unnest($1::uuid[], $2::text[], $3::text[]) AS x(tenant_id, environment, id)
             WHERE k.tenant_id = x.tenant_id AND k.environment = x.environment AND k.id = x.id
            RETURNING k.tenant_id, k.environment, k.id, k.received_at)
         DELETE FROM events e USING k
          WHERE e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id
            AND e.received_at = k.received_at",
    )
    .bind(&tenants)
    .bind(&environments)
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Locks and returns up to `limit` of a tenant's events received before `before`, whatever the state of their
/// deliveries: for erasure requests.
pub async fn lock_of_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Owner, EventId)>> {
    let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        // By the tenant's events (`events_received`), then each one's key (migration 0026).
        "SELECT k.tenant_id, k.environment, k.id FROM events e, event_keys k
          WHERE e.tenant_id = $1 AND e.environment IN ('live', 'test') AND e.received_at < $2
            AND k.tenant_id = e.tenant_id AND k.environment = e.environment AND k.id = e.id
            AND k.received_at = e.received_at
         LIMIT $3 FOR UPDATE OF k",
    )
    .bind(tenant.as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(key_from_row).collect()
}

fn key_from_row((tenant, environment, id): (uuid::Uuid, String, String)) -> Result<(Owner, EventId)> {
    let row = format!("event {id}");
    let environment = environment.parse().map_err(Error::corrupt(&row, "environment"))?;
    let id = EventId::parse(&id).map_err(Error::corrupt(&row, "id"))?;
    Ok((Owner { tenant: TenantId::from_uuid(tenant), environment }, id))
}

/// Forgets up to `limit` keys of events received in `[lower, upper)` (from the beginning when `lower` is `None`),
/// whose day was dropped (`courier_scheduler::history`), so their ids may be used again; returns how many. The keys
/// of events a drop kept ([`drop_partition`]) stay: those events are in the DEFAULT partition, which a dropped day's
/// range maps to, so only it is looked at (a few rows, by its key).
pub async fn forget_keys(
    db: impl PgExecutor<'_>,
    lower: Option<DateTime<Utc>>,
    upper: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM event_keys WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM event_keys k
             WHERE received_at < $2 AND received_at >= COALESCE($1, '-infinity'::timestamptz)
               AND NOT EXISTS (SELECT 1 FROM events_default e
                                WHERE e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id
                                  AND e.received_at = k.received_at)
             LIMIT $3))",
    )
    .bind(lower)
    .bind(upper)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Drops one day's partition of `events` (`events_<suffix>`) but for the events in `keep`, which a live delivery
/// still needs: those move to the DEFAULT partition (the day's range maps there once its partition is detached),
/// with their keys, until they are deleted like any event ([`delete`]). Returns how many moved. [`forget_keys`]
/// forgets the keys of the rest afterwards.
pub async fn drop_partition(
    conn: &mut PgConnection,
    suffix: &PartitionSuffix,
    keep: &[(Owner, EventId)],
) -> Result<u64> {
    let table = suffix.table("events");
    let mut kept = 0;
    if !keep.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE events DETACH PARTITION {table}")))
            .execute(&mut *conn)
            .await?;
        let tenants: Vec<uuid::Uuid> = keep.iter().map(|(owner, _)| owner.tenant.as_uuid()).collect();
        let environments: Vec<&str> = keep.iter().map(|(owner, _)| owner.environment.as_str()).collect();
        let ids: Vec<&str> = keep.iter().map(|(_, id)| id.as_str()).collect();
        let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO events
             SELECT e.* FROM {table} e JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, environment, id)
                 ON e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id"
        )))
        .bind(&tenants)
        .bind(&environments)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        kept = moved.rows_affected();
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(conn).await?;
    Ok(kept)
}

/// The day part of a history partition's name: `YYYYMMDD` or `legacy` (the tables as they were before
/// partitioning). Only these are ever dropped; `default` is not one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSuffix(String);

impl PartitionSuffix {
    pub fn parse(s: &str) -> Option<Self> {
        let is_day = s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
        (is_day || s == "legacy").then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition of `table` for this day, quoted for SQL (the suffix is digits or `legacy`, so nothing needs
    /// escaping).
    pub fn table(&self, table: &str) -> String {
        format!("\"{table}_{}\"", self.0)
    }
}
