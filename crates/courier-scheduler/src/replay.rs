//! Replay: a new delivery of the same event to the same webhook, with a fresh attempt budget and `replay_of` set.

use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, ReplayId, TenantId, TraceParent, WebhookId};
use courier_store::Owner;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::logs::{COLUMNS, Delivery, DeliveryFilter, Visibility, push_conditions};
use crate::{DeliveryStatus, Result, corrupt, wake};

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
const EVENT_HELD: &str = " AND EXISTS (SELECT 1 FROM event_keys k JOIN events e
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
    let mut q = QueryBuilder::new(
        "WITH r AS (
            INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                    max_attempts, next_attempt_at, replay_of, trace_parent)
            SELECT courier_id('dlv_'), d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                   ",
    );
    q.push_bind(DeliveryStatus::Pending.as_str()).push(", w.max_attempts, now(), d.id, ");
    q.push_bind(trace.map(|t| t.to_string()));
    q.push(" FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ");
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

/// Appends what makes a delivery a bulk-replay candidate: it matches, its webhook is active, it was created before
/// `created_before` (so a run never replays its own replays), it is not itself a replay still queued, and it was
/// never replayed before (replay its replay instead). Rerunning an interrupted run therefore never doubles anything.
fn push_candidates(
    q: &mut QueryBuilder<Postgres>,
    visibility: Visibility,
    filter: &DeliveryFilter,
    created_before: DateTime<Utc>,
) {
    q.push(
        " FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE w.active
           AND NOT (d.replay_of IS NOT NULL AND d.status = ANY (",
    );
    q.push_bind([DeliveryStatus::Pending.as_str(), DeliveryStatus::Delivering.as_str()]);
    q.push(
        "))
           AND NOT EXISTS (SELECT 1 FROM deliveries r WHERE r.replay_of = d.id)
           AND d.created_at < ",
    );
    q.push_bind(created_before);
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
    let mut q = QueryBuilder::new(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 max_attempts, next_attempt_at, replay_of, trace_parent)
         SELECT courier_id('dlv_'), d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                ",
    );
    q.push_bind(DeliveryStatus::Pending.as_str()).push(", w.max_attempts, now(), d.id, ");
    q.push_bind(trace.map(str::to_owned));
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

/// How many deliveries a bulk replay with `filter` would queue now.
pub async fn count_bulk(pool: &PgPool, visibility: Visibility, filter: &DeliveryFilter) -> Result<u64> {
    let mut q = QueryBuilder::new("SELECT count(*)");
    push_candidates(&mut q, visibility, filter, Utc::now());
    let n: i64 = q.build_query_scalar().fetch_one(pool).await?;
    Ok(n as u64)
}

/// Replays every candidate (see `push_candidates`) in transactions of [`CHUNK`], walking the ids in order, in
/// the caller's time (the CLI, with a progress bar). `progress` is told the running total after each chunk; `trace`
/// is as for [`replay_one`]. The API queues a [`ReplayJob`] instead.
pub async fn replay_bulk(
    pool: &PgPool,
    visibility: Visibility,
    filter: &DeliveryFilter,
    dry_run: bool,
    trace: Option<TraceParent>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    if dry_run {
        return count_bulk(pool, visibility, filter).await;
    }
    let started = Utc::now();
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

/// Where a bulk replay job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    Queued,
    Running,
    Finished,
}

impl ReplayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayStatus::Queued => "queued",
            ReplayStatus::Running => "running",
            ReplayStatus::Finished => "finished",
        }
    }
}

impl std::str::FromStr for ReplayStatus {
    type Err = crate::UnknownStatus;
    fn from_str(s: &str) -> Result<Self, crate::UnknownStatus> {
        [ReplayStatus::Queued, ReplayStatus::Running, ReplayStatus::Finished]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| crate::UnknownStatus(s.to_owned()))
    }
}

/// A bulk replay running in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayJob {
    pub id: ReplayId,
    pub status: ReplayStatus,
    /// Deliveries queued so far.
    pub replayed: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What asking for a bulk replay did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    Queued(ReplayJob),
    /// The tenant already has this many jobs open, its limit: none was queued.
    AtLimit(u32),
}

/// A job's filter as stored.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StoredFilter {
    status: Option<String>,
    webhook_id: Option<String>,
    event_types: Vec<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl StoredFilter {
    fn from_filter(f: &DeliveryFilter) -> Self {
        Self {
            status: f.status.map(|s| s.as_str().to_owned()),
            webhook_id: f.webhook_id.as_ref().map(|w| w.as_str().to_owned()),
            event_types: f.event_types.iter().map(|t| t.as_str().to_owned()).collect(),
            since: f.since,
            until: f.until,
        }
    }

    fn into_filter(self) -> Result<DeliveryFilter> {
        let row = "a replay's filter";
        Ok(DeliveryFilter {
            status: self.status.map(|s| s.parse()).transpose().map_err(corrupt(row, "status"))?,
            webhook_id: self.webhook_id.map(|w| WebhookId::parse(&w)).transpose().map_err(corrupt(row, "webhook"))?,
            event_types: self
                .event_types
                .iter()
                .map(|t| t.parse().map_err(corrupt(row, "event type")))
                .collect::<Result<_>>()?,
            call_id: None,
            since: self.since,
            until: self.until,
        })
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    status: String,
    replayed: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

fn job_from_row(row: JobRow) -> Result<ReplayJob> {
    Ok(ReplayJob {
        id: ReplayId::parse(&row.id).map_err(corrupt(format!("replay {}", row.id), "id"))?,
        status: row.status.parse().map_err(corrupt(format!("replay {}", row.id), "status"))?,
        replayed: row.replayed.max(0) as u64,
        created_at: row.created_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
    })
}

const JOB_COLUMNS: &str = "id, status, replayed, created_at, updated_at, finished_at";

/// Queues a bulk replay of `filter` for `owner` ([`advance`] does the work), unless the tenant already has `limit`
/// open jobs (both environments counted). Each open job is a turn the replay loop gives the tenant, so the limit is
/// what one tenant can claim of the loop however many it starts. The tenant's row is locked for the count, so
/// concurrent requests cannot pass the limit together.
pub async fn start_bulk(
    pool: &PgPool,
    owner: Owner,
    filter: &DeliveryFilter,
    trace: Option<TraceParent>,
    limit: u32,
) -> Result<Started> {
    let stored = serde_json::to_value(StoredFilter::from_filter(filter)).map_err(corrupt("a new replay", "filter"))?;
    let mut tx = pool.begin().await?;
    // Its own statement, so the count below sees what the previous holder committed. `NO KEY UPDATE` serialises
    // starts without waiting on (or holding up) the foreign-key checks of the tenant's ingest.
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
        .bind(owner.tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM replays WHERE tenant_id = $1 AND status <> $2")
        .bind(owner.tenant.as_uuid())
        .bind(ReplayStatus::Finished.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if open >= i64::from(limit) {
        return Ok(Started::AtLimit(limit));
    }
    let row: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO replays (id, tenant_id, environment, filter, created_before, trace_parent)
         VALUES ($1, $2, $3, $4, now(), $5) RETURNING {JOB_COLUMNS}"
    )))
    .bind(ReplayId::generate().as_str())
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(stored)
    .bind(trace.map(|t| t.to_string()))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Started::Queued(job_from_row(row)?))
}

/// One of `owner`'s replay jobs.
pub async fn job(pool: &PgPool, owner: Owner, id: &ReplayId) -> Result<Option<ReplayJob>> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM replays WHERE id = $1 AND tenant_id = $2 AND environment = $3"
    )))
    .bind(id.as_str())
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .fetch_optional(pool)
    .await?;
    row.map(job_from_row).transpose()
}

/// Advances the open job that waited longest by one chunk, in one transaction (the job row is locked, so several
/// processes share the jobs without doubling a chunk). Returns false when no job is open.
pub async fn advance(pool: &PgPool) -> Result<bool> {
    #[derive(sqlx::FromRow)]
    struct Open {
        id: String,
        tenant_id: uuid::Uuid,
        environment: String,
        filter: serde_json::Value,
        created_before: DateTime<Utc>,
        after_id: Option<String>,
        trace_parent: Option<String>,
    }
    let mut tx = pool.begin().await?;
    let open: Option<Open> = sqlx::query_as(
        "SELECT id, tenant_id, environment, filter, created_before, after_id, trace_parent FROM replays
         WHERE status <> $1 ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(ReplayStatus::Finished.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(open) = open else {
        return Ok(false);
    };
    let row = format!("replay {}", open.id);
    let environment = open.environment.parse().map_err(corrupt(&row, "environment"))?;
    let owner = Owner { tenant: TenantId::from_uuid(open.tenant_id), environment };
    let stored: StoredFilter = serde_json::from_value(open.filter).map_err(corrupt(&row, "filter"))?;
    let filter = stored.into_filter()?;
    let replayed = replay_chunk(
        &mut tx,
        Visibility::Owner(owner),
        &filter,
        open.created_before,
        open.after_id.as_deref(),
        open.trace_parent.as_deref(),
    )
    .await?;
    let done = replayed.len() < CHUNK as usize;
    sqlx::query(
        "UPDATE replays SET replayed = replayed + $2, after_id = COALESCE($3, after_id), updated_at = now(),
                status = CASE WHEN $4 THEN $5 ELSE $6 END,
                finished_at = CASE WHEN $4 THEN now() END
         WHERE id = $1",
    )
    .bind(&open.id)
    .bind(replayed.len() as i64)
    .bind(replayed.iter().max())
    .bind(done)
    .bind(ReplayStatus::Finished.as_str())
    .bind(ReplayStatus::Running.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
