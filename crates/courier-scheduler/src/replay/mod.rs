//! Replay: a new delivery of the same event to the same webhook, with a fresh attempt budget and `replay_of` set.
//! One delivery here, and a bulk replay in the foreground (the CLI); the API's bulk replays are jobs (`jobs`) that
//! the replay loop moves a bounded chunk at a time (`advance`).

mod advance;
mod jobs;

use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, TraceParent};
use courier_store::Owner;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

pub use advance::{Advanced, CHUNK_TIMEOUT, MAX_FAILURES, WINDOW, advance};
pub use jobs::{ReplayJob, ReplayStatus, Started, job, start_bulk};

use crate::logs::{COLUMNS, Delivery, DeliveryFilter, Visibility, push_conditions};
use crate::queue::enqueue::{ReplaySettings, push_replays};
use crate::{DeliveryStatus, Result, wake};

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

/// The condition that a replayed delivery's event still exists, holding it until the replay commits: its key is
/// locked (`FOR KEY SHARE`), which retention by row waits for, and the event is read, so its day partition is held
/// against a drop (`courier_scheduler::history` locks the day first). Either retention then sees the live delivery
/// the replay queued and keeps the event, or the replay waits and finds no event to replay. (The foreign key to
/// `events` did this before history was partitioned.)
pub(super) const EVENT_HELD: &str = " AND EXISTS (SELECT 1 FROM event_keys k JOIN events e
       ON e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id AND e.received_at = k.received_at
     WHERE k.tenant_id = d.tenant_id AND k.environment = d.environment AND k.id = d.event_id FOR KEY SHARE OF k)";

/// Replays one delivery; `trace` is the replaying request's trace context, which its attempts will link to.
pub async fn replay_one(pool: &PgPool, owner: Owner, id: &DeliveryId, trace: Option<TraceParent>) -> Result<Replayed> {
    let mut tx = pool.begin().await?;
    let active: Option<bool> = sqlx::query_scalar(
        "SELECT w.active
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
    let mut q = QueryBuilder::new("WITH r AS (");
    push_replays(&mut q, ReplaySettings::FromWebhookW, trace.map(|t| t.to_string()));
    q.push("FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ");
    q.push_bind(id.as_str().to_owned());
    q.push(EVENT_HELD);
    q.push(format!(" RETURNING *) SELECT {COLUMNS} FROM r AS d"));
    // No row: retention took the event (its key) since the lookup above.
    let Some(row) = q.build_query_as::<crate::logs::Row>().fetch_optional(&mut *tx).await? else {
        return Ok(Replayed::NotFound);
    };
    wake::notify(&mut *tx).await?;
    tx.commit().await?;
    Ok(Replayed::Queued(Box::new(crate::logs::from_row(row)?)))
}

/// Appends what makes delivery `d` of webhook `w` worth replaying at all: its webhook is active, it is not itself a
/// replay still queued, and it was never replayed before (replay its replay instead). Rerunning an interrupted run
/// therefore never doubles anything.
pub(super) fn push_replayable(q: &mut QueryBuilder<Postgres>) {
    q.push(" w.active AND NOT (d.replay_of IS NOT NULL AND d.status = ANY (");
    q.push_bind([DeliveryStatus::Pending, DeliveryStatus::Delivering]);
    q.push(")) AND NOT EXISTS (SELECT 1 FROM deliveries r WHERE r.replay_of = d.id)");
}

/// Appends what makes a delivery a bulk-replay candidate: it matches, it is replayable (`push_replayable`), and it
/// was created before `created_before`, so a run never replays its own replays.
fn push_candidates(
    q: &mut QueryBuilder<Postgres>,
    visibility: Visibility,
    filter: &DeliveryFilter,
    created_before: DateTime<Utc>,
) {
    q.push(" FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE");
    push_replayable(q);
    q.push(" AND d.created_at < ").push_bind(created_before);
    push_conditions(q, visibility, filter);
}

/// Replays the next [`CHUNK`] candidates after `after` (in id order) in `conn`'s transaction; returns the ids of the
/// deliveries it replayed.
async fn replay_chunk(
    conn: &mut PgConnection,
    visibility: Visibility,
    filter: &DeliveryFilter,
    created_before: DateTime<Utc>,
    after: Option<&str>,
    trace: Option<&str>,
) -> Result<Vec<String>> {
    let mut q = QueryBuilder::new("");
    push_replays(&mut q, ReplaySettings::FromWebhookW, trace.map(str::to_owned));
    push_candidates(&mut q, visibility, filter, created_before);
    if let Some(after) = after {
        q.push(" AND d.id > ").push_bind(after.to_owned());
    }
    q.push(EVENT_HELD);
    q.push(" ORDER BY d.id LIMIT ").push_bind(i64::from(CHUNK)).push(" RETURNING replay_of");
    let replayed: Vec<String> = q.build_query_scalar().fetch_all(&mut *conn).await?;
    if !replayed.is_empty() {
        wake::notify(&mut *conn).await?;
    }
    Ok(replayed)
}

/// How many of a tenant's deliveries a bulk replay with `filter` would queue now.
pub async fn count_bulk(pool: &PgPool, owner: Owner, filter: &DeliveryFilter) -> Result<u64> {
    count_visible(pool, Visibility::Owner(owner), filter).await
}

async fn count_visible(pool: &PgPool, visibility: Visibility, filter: &DeliveryFilter) -> Result<u64> {
    let mut q = QueryBuilder::new("SELECT count(*)");
    push_candidates(&mut q, visibility, filter, crate::clock::database_now(pool).await?);
    let n: i64 = q.build_query_scalar().fetch_one(pool).await?;
    Ok(n as u64)
}

/// Replays every candidate (see `push_candidates`) in transactions of [`CHUNK`], walking the ids in order, in
/// the caller's time (the CLI, with a progress bar). `progress` is told the running total after each chunk; `trace`
/// is as for [`replay_one`]. The API queues a [`ReplayJob`] instead, whose chunks also bound what they scan: an
/// operator in the foreground sees a slow chunk and can stop it, a job in the background must never hold a turn.
pub(crate) async fn replay_bulk(
    pool: &PgPool,
    visibility: Visibility,
    filter: &DeliveryFilter,
    dry_run: bool,
    trace: Option<TraceParent>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    if dry_run {
        return count_visible(pool, visibility, filter).await;
    }
    let started = crate::clock::database_now(pool).await?;
    let trace = trace.map(|t| t.to_string());
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let mut tx = pool.begin().await?;
        let replayed = replay_chunk(&mut tx, visibility, filter, started, after.as_deref(), trace.as_deref()).await?;
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
