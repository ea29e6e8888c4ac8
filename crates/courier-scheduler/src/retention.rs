//! Retention by row: the events of tenants whose retention is shorter than the longest, the legacy and DEFAULT
//! partitions' expired events, and erasure requests, each with its deliveries and attempts, in bounded batches that
//! never block delivery (the deliveries and attempts are deleted by `crate::queue::erase`, which also holds the
//! lifetime cap, re-exported here). Everything else leaves whole days at a time ([`crate::queue::history`]).

use chrono::{DateTime, Utc};
use courier_core::{EventId, TenantId};
use courier_store::{Owner, events};
use sqlx::{PgConnection, PgPool};

pub use crate::queue::erase::expire_batch;
use crate::{Clock, Result, corrupt};

/// Rows one retention statement deletes at most.
pub const BATCH: i64 = 1000;

/// The end of every candidate query: no live delivery needs the event (`$3`: the live statuses), at most `$2`
/// of them, their keys locked until the delete commits (others' locks skipped).
const UNFINISHED_NOT_NEEDED: &str = "AND NOT EXISTS (SELECT 1 FROM deliveries_live d
                 WHERE d.tenant_id = k.tenant_id AND d.environment = k.environment
                   AND d.event_id = k.id AND d.status = ANY ($3))
     LIMIT $2
     FOR UPDATE OF k SKIP LOCKED";

/// Deletes one batch of expired events that no day drop will take, with their deliveries and attempts; returns
/// how many. An event goes here when its tenant keeps history shorter than the longest retention (days are
/// dropped only past the longest), when it is in the partition the upgrade to partitions attached whole, or when
/// it is in the DEFAULT partition, which is never dropped: a day's drop moved it there for a live delivery
/// ([`crate::history`]), or its day had no partition when it came. An event with a delivery still waiting,
/// pending or in flight is kept whatever its age: nothing accepted is lost before it is finished (and the lifetime
/// cap, [`expire_batch`], finishes every delivery within its tenant's retention).
///
/// Which events may go is the queue's knowledge (their deliveries), so it is chosen here; deleting them is the
/// store's, which owns `events`. The chosen keys are locked until the delete commits, and a replay reads its
/// event and locks its key, so a replay racing this either finishes first (and its live delivery keeps the event)
/// or finds the event gone. Ages are on `clock`.
pub async fn purge_expired_batch(pool: &PgPool, clock: &Clock, default_days: u32) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let mut doomed = Vec::new();
    // Each statement is bounded by an index range, never a scan of every key: the first walks each short-retention
    // tenant's events by (tenant, environment, received_at) in the days older than its cut (migration 0026), the second the legacy partition's keys older than the shortest
    // retention, the third the DEFAULT partition's events older than it (migration 0018).
    for sql in [
        "WITH longest AS (SELECT greatest($1, max(retention_days)) AS days FROM tenants)
         SELECT k.tenant_id, k.environment, k.id
           FROM tenants t, longest, events e, event_keys k
          WHERE COALESCE(t.retention_days, $1) < longest.days AND e.tenant_id = t.id
            AND e.environment IN ('live', 'test')
            AND e.received_at < now() + $4 - make_interval(days => COALESCE(t.retention_days, $1))
            AND k.tenant_id = e.tenant_id AND k.environment = e.environment AND k.id = e.id
            AND k.received_at = e.received_at
         ",
        "WITH shortest AS (SELECT least($1, min(retention_days)) AS days FROM tenants)
         SELECT k.tenant_id, k.environment, k.id
           FROM shortest, event_keys k JOIN tenants t ON t.id = k.tenant_id
          WHERE k.received_at < (SELECT upper FROM courier_partitions WHERE partition = 'events_legacy')
            AND k.received_at < now() + $4 - make_interval(days => shortest.days)
            AND k.received_at < now() + $4 - make_interval(days => COALESCE(t.retention_days, $1))
         ",
        "WITH shortest AS (SELECT least($1, min(retention_days)) AS days FROM tenants)
         SELECT k.tenant_id, k.environment, k.id
           FROM shortest, events_default e JOIN tenants t ON t.id = e.tenant_id
           JOIN event_keys k ON k.tenant_id = e.tenant_id AND k.environment = e.environment AND k.id = e.id
          WHERE e.received_at < now() + $4 - make_interval(days => shortest.days)
            AND e.received_at < now() + $4 - make_interval(days => COALESCE(t.retention_days, $1))
         ",
    ] {
        let sql = format!("{sql} {UNFINISHED_NOT_NEEDED}");
        let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(default_days as i32)
            .bind(BATCH - doomed.len() as i64)
            .bind(crate::ordering::LIVE)
            .bind(clock.skew())
            .fetch_all(&mut *tx)
            .await?;
        doomed.extend(rows);
    }
    doomed.sort();
    doomed.dedup();
    let keys = doomed.into_iter().map(key).collect::<Result<Vec<_>>>()?;
    let deleted = delete_events(&mut tx, &keys).await?;
    tx.commit().await?;
    Ok(deleted.events)
}

/// What an erasure deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub events: u64,
    /// Their deliveries, replays included, and the tenant's deliveries whose event was already gone.
    pub deliveries: u64,
}

/// Erases a tenant's events received before `before` (all of them by default) and its deliveries of events
/// received before it (whatever became of the events), with their attempts, in bounded batches. For erasure requests: live deliveries go too.
pub async fn purge_tenant(pool: &PgPool, tenant: TenantId, before: Option<DateTime<Utc>>) -> Result<Erased> {
    let before = match before {
        Some(before) => before,
        None => crate::clock::database_now(pool).await?,
    };
    let mut total = Erased::default();
    loop {
        let mut tx = pool.begin().await?;
        let keys = events::lock_of_tenant(&mut tx, tenant, before, BATCH).await?;
        let done = delete_events(&mut tx, &keys).await?;
        tx.commit().await?;
        total.events += done.events;
        total.deliveries += done.deliveries;
        if keys.len() < BATCH as usize {
            break;
        }
    }
    // A delivery made before migration 0023 outlives its event when the event's day was dropped before the
    // delivery's (such a replay, or a fan-out just past midnight, sat in a later day), so no key leads to it any
    // more: found by the tenant instead.
    loop {
        let done = delete_deliveries_of(pool, tenant, before).await?;
        total.deliveries += done;
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Deletes up to [`BATCH`] of the tenant's deliveries of events received before `before`, whatever became of the
/// events, with their
/// attempts; returns how many deliveries.
async fn delete_deliveries_of(pool: &PgPool, tenant: TenantId, before: DateTime<Utc>) -> Result<u64> {
    crate::queue::erase::deliveries_of_tenant(pool, tenant, before, BATCH).await
}

/// Deletes these events' attempts, deliveries (replays included), then the events themselves. There are no
/// foreign keys among the partitioned tables to cascade (see migration 0015), so the order is spelled out here.
async fn delete_events(conn: &mut PgConnection, keys: &[(Owner, EventId)]) -> Result<Erased> {
    if keys.is_empty() {
        return Ok(Erased::default());
    }
    let deliveries = crate::queue::erase::deliveries_of_events(&mut *conn, keys).await?;
    let events = events::delete(conn, keys).await?;
    Ok(Erased { events, deliveries })
}

/// An event's key as a row gives it.
pub(crate) fn key((tenant, environment, id): (uuid::Uuid, String, String)) -> Result<(Owner, EventId)> {
    let row = format!("event {id}");
    let environment = environment.parse().map_err(corrupt(&row, "environment"))?;
    let id = EventId::parse(&id).map_err(corrupt(&row, "id"))?;
    Ok((Owner { tenant: TenantId::from_uuid(tenant), environment }, id))
}
