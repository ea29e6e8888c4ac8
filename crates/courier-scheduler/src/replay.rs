//! Replay: a new delivery of the same event to the same webhook, with a fresh attempt budget and `replay_of` set.

use chrono::Utc;
use courier_core::{DeliveryId, TraceParent};
use courier_store::Owner;
use sqlx::{PgPool, QueryBuilder};

use crate::logs::{COLUMNS, Delivery, DeliveryFilter, Visibility, push_conditions};
use crate::{Result, wake};

/// How many deliveries one bulk-replay transaction creates.
pub const CHUNK: u32 = 500;

/// What replaying one delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Replayed {
    Queued(Box<Delivery>),
    NotFound,
    /// The webhook is disabled or deleted: a replay would be cancelled at once, so none is made.
    WebhookInactive,
}

/// Replays one delivery; `trace` is the replaying request's trace context, which its attempts will link to.
pub async fn replay_one(pool: &PgPool, owner: Owner, id: &DeliveryId, trace: Option<TraceParent>) -> Result<Replayed> {
    let mut tx = pool.begin().await?;
    let active: Option<bool> = sqlx::query_scalar(
        "SELECT w.status = 'enabled' AND w.deleted_at IS NULL
         FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.id = $1 AND d.tenant_id = $2 AND d.environment = $3",
    )
    .bind(id.as_str())
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    match active {
        None => return Ok(Replayed::NotFound),
        Some(false) => return Ok(Replayed::WebhookInactive),
        Some(true) => {}
    }
    let mut q = QueryBuilder::new(
        "WITH r AS (
            INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                    max_attempts, next_attempt_at, replay_of, trace_parent)
            SELECT courier_id('dlv_'), d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                   'pending', w.max_attempts, now(), d.id, ",
    );
    q.push_bind(trace.map(|t| t.to_string()));
    q.push(" FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ");
    q.push_bind(id.as_str().to_owned());
    q.push(format!(" RETURNING *) SELECT {COLUMNS} FROM r AS d"));
    let row: crate::logs::Row = q.build_query_as().fetch_one(&mut *tx).await?;
    wake::notify(&mut *tx).await?;
    tx.commit().await?;
    Ok(Replayed::Queued(Box::new(crate::logs::from_row(row)?)))
}

/// Replays every matching delivery whose webhook is active, in transactions of [`CHUNK`], walking the ids in order.
/// Only deliveries created before the call are considered, so the replays it makes are never replayed again by the
/// same run; a delivery whose earlier replay is still queued is skipped, so rerunning an interrupted run is safe.
/// `progress` is told the running total after each chunk; `trace` is as for [`replay_one`].
pub async fn replay_bulk(
    pool: &PgPool,
    visibility: Visibility,
    filter: &DeliveryFilter,
    dry_run: bool,
    trace: Option<TraceParent>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let started = Utc::now();
    if dry_run {
        let mut q = QueryBuilder::new(
            "SELECT count(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE w.status = 'enabled' AND w.deleted_at IS NULL AND NOT EXISTS (
                SELECT 1 FROM deliveries r WHERE r.replay_of = d.id AND r.status IN ('pending', 'delivering'))",
        );
        push_conditions(&mut q, visibility, filter);
        let n: i64 = q.build_query_scalar().fetch_one(pool).await?;
        return Ok(n as u64);
    }
    let trace = trace.map(|t| t.to_string());
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let mut tx = pool.begin().await?;
        let mut q = QueryBuilder::new(
            "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                     max_attempts, next_attempt_at, replay_of, trace_parent)
             SELECT courier_id('dlv_'), d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                    'pending', w.max_attempts, now(), d.id, ",
        );
        q.push_bind(trace.clone());
        q.push(
            " FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE w.status = 'enabled' AND w.deleted_at IS NULL
               -- A delivery whose replay is still queued is not queued again, so an interrupted run can be rerun.
               AND NOT EXISTS (SELECT 1 FROM deliveries r
                               WHERE r.replay_of = d.id AND r.status IN ('pending', 'delivering'))
               AND d.created_at < ",
        );
        q.push_bind(started);
        push_conditions(&mut q, visibility, filter);
        if let Some(after) = &after {
            q.push(" AND d.id > ").push_bind(after.clone());
        }
        q.push(" ORDER BY d.id LIMIT ").push_bind(i64::from(CHUNK)).push(" RETURNING replay_of");
        let replayed: Vec<String> = q.build_query_scalar().fetch_all(&mut *tx).await?;
        if !replayed.is_empty() {
            wake::notify(&mut *tx).await?;
        }
        tx.commit().await?;
        let full_chunk = replayed.len() as u64 == u64::from(CHUNK);
        total += replayed.len() as u64;
        progress(total);
        match replayed.into_iter().max() {
            Some(last) if full_chunk => after = Some(last),
            _ => return Ok(total),
        }
    }
}
