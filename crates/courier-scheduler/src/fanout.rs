//! Fan-out: one pending delivery per enabled webhook whose filter matches, inside the caller's transaction.

use std::collections::HashMap;

use courier_core::{EventId, EventType, TraceParent};
use courier_store::Owner;
use sqlx::{PgConnection, PgExecutor};

use crate::{DeliveryStatus, Result};

/// What fan-out needs to know of one event.
#[derive(Debug, Clone, Copy)]
pub struct FanoutEvent<'a> {
    pub id: &'a EventId,
    pub event_type: EventType,
    pub call_id: &'a str,
    /// The trace context of the request that brought the event, for its deliveries' attempts to link to.
    pub trace: Option<TraceParent>,
}

/// Enqueues the deliveries of many events in one statement; returns the count per event, in order. Runs in the
/// caller's transaction so that an event is never stored without its deliveries, nor the other way round. It does
/// not wake the workers: after committing, the caller does ([`crate::wake::Notifier`]); a `NOTIFY` in this
/// transaction would serialise every ingest commit.
pub async fn enqueue(conn: &mut PgConnection, owner: Owner, events: &[FanoutEvent<'_>]) -> Result<Vec<u64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let calls: Vec<&str> = events.iter().map(|e| e.call_id).collect();
    let traces: Vec<Option<String>> = events.iter().map(|e| e.trace.map(|t| t.to_string())).collect();
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "WITH e AS (SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS e(id, event_type, call_id, trace_parent)),
         inserted AS (
            INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status, max_attempts,
                                    next_attempt_at, trace_parent)
            SELECT courier_id('dlv_'), w.tenant_id, w.environment, e.id, w.id, e.event_type, e.call_id, $7, w.max_attempts, now(), e.trace_parent
            FROM e JOIN webhooks w
              ON w.tenant_id = $1 AND w.environment = $2 AND w.active
             AND (w.event_types IS NULL OR e.event_type = ANY (w.event_types))
            ORDER BY e.id, w.id
            RETURNING event_id
         )
         SELECT event_id, count(*) FROM inserted GROUP BY event_id",
    )
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&ids)
    .bind(&types)
    .bind(&calls)
    .bind(&traces)
    .bind(DeliveryStatus::Pending.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok(events
        .iter()
        .map(|e| counts.iter().find(|(id, _)| id == e.id.as_str()).map(|(_, n)| *n as u64).unwrap_or(0))
        .collect())
}

/// How many deliveries each of these events fanned out to when it was first accepted (replays excluded): the
/// answer an idempotent repeat gets. Events without deliveries are absent from the map.
pub async fn counts(db: impl PgExecutor<'_>, owner: Owner, events: &[&EventId]) -> Result<HashMap<String, u64>> {
    let ids: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id, count(*) FROM deliveries
         WHERE tenant_id = $1 AND environment = $2 AND event_id = ANY ($3) AND replay_of IS NULL GROUP BY event_id",
    )
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, n as u64)).collect())
}
