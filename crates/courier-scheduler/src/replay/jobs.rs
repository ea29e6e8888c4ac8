//! Bulk replay jobs as rows (`replays`): starting one within the tenant's limit, and reading one back.

use chrono::{DateTime, Utc};
use courier_core::{ReplayId, TraceParent, WebhookId};
use courier_store::Owner;
use sqlx::PgPool;

use crate::logs::DeliveryFilter;
use crate::{Result, corrupt};

/// Where a bulk replay job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    Queued,
    Running,
    Finished,
    /// Its chunks kept failing ([`super::MAX_FAILURES`] in a row); `error` says why. It does no more.
    Failed,
}

impl ReplayStatus {
    /// The statuses of a job that has not ended: the ones that take turns and count against the tenant's limit.
    pub const OPEN: [ReplayStatus; 2] = [ReplayStatus::Queued, ReplayStatus::Running];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplayStatus::Queued => "queued",
            ReplayStatus::Running => "running",
            ReplayStatus::Finished => "finished",
            ReplayStatus::Failed => "failed",
        }
    }

    /// Finished or failed: the job will not move again.
    pub fn ended(self) -> bool {
        !Self::OPEN.contains(&self)
    }

    pub(super) fn open_names() -> [&'static str; 2] {
        Self::OPEN.map(Self::as_str)
    }
}

impl std::str::FromStr for ReplayStatus {
    type Err = crate::UnknownStatus;
    fn from_str(s: &str) -> Result<Self, crate::UnknownStatus> {
        [ReplayStatus::Queued, ReplayStatus::Running, ReplayStatus::Finished, ReplayStatus::Failed]
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
    /// Deliveries of the tenant examined so far (matching or not).
    pub scanned: u64,
    /// Why the last chunk failed, while the job retries it, and why the job failed; `None` otherwise.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it finished or failed.
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
pub(super) struct StoredFilter {
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

    pub(super) fn into_filter(self) -> Result<DeliveryFilter> {
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
    scanned: i64,
    error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

fn job_from_row(row: JobRow) -> Result<ReplayJob> {
    Ok(ReplayJob {
        id: ReplayId::parse(&row.id).map_err(corrupt(format!("replay {}", row.id), "id"))?,
        status: row.status.parse().map_err(corrupt(format!("replay {}", row.id), "status"))?,
        replayed: row.replayed.max(0) as u64,
        scanned: row.scanned.max(0) as u64,
        error: row.error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
    })
}

const JOB_COLUMNS: &str = "id, status, replayed, scanned, error, created_at, updated_at, finished_at";

/// Queues a bulk replay of `filter` for `owner` ([`super::advance`] does the work), unless the tenant already has
/// `limit` open jobs (both environments counted). Each open job is a turn the replay loop gives the tenant, so the
/// limit is what one tenant can claim of the loop however many it starts. The tenant's row is locked for the
/// count, so concurrent requests cannot pass the limit together.
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
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM replays WHERE tenant_id = $1 AND status = ANY ($2)")
        .bind(owner.tenant.as_uuid())
        .bind(ReplayStatus::open_names())
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
