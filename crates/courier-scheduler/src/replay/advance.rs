//! Moving bulk replay jobs: one bounded chunk of one job per call, tenants taking turns, failures counted.
//!
//! A chunk reads at most [`WINDOW`] of the tenant's deliveries after the job's cursor (by the tenant's index, in
//! id order) and replays at most [`super::CHUNK`] of the matching ones, so it costs about the same whether its
//! filter matches everything or nothing in ten million rows, and every chunk moves the cursor. A chunk that fails
//! is rolled back and counted on its job, which also passes the turn on; after [`MAX_FAILURES`] in a row the job
//! is `failed`, with a reason the tenant can read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::TenantId;
use courier_store::Owner;
use sqlx::{PgConnection, PgPool, QueryBuilder};

use super::jobs::{ReplayStatus, StoredFilter};
use super::{CHUNK, EVENT_HELD, push_replayable};
use crate::logs::{DeliveryFilter, Visibility, push_conditions, push_row_filters};
use crate::queue::enqueue::{ReplaySettings, push_replays};
use crate::{Error, Result, corrupt, wake};

/// The most deliveries one chunk examines. An index range scan of this many rows takes milliseconds, so a chunk
/// never comes near a statement timeout however sparse its filter; a filter matching nothing in ten million rows
/// takes 2,000 chunks, each a turn other tenants' jobs interleave with.
pub const WINDOW: i64 = 5_000;

/// Chunks that fail in a row before their job is given up (`failed`).
pub const MAX_FAILURES: i32 = 5;

/// The longest a chunk may run (its transaction's `statement_timeout`). Chunks are bounded and take milliseconds;
/// this only keeps a chunk that goes wrong anyway (a bad plan, a lock it waits on) from holding the loop for long:
/// it is cancelled and counted as a failure.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// What one call of [`advance`] did. Jobs are named by their id as stored.
#[derive(Debug)]
pub enum Advanced {
    /// No job is open.
    Idle,
    /// A job moved by one chunk.
    Moved { job: String, replayed: u64, scanned: u64, finished: bool },
    /// A job's chunk failed and was rolled back; the failure is on the job (`gave_up`: it is now `failed`). The
    /// error is the caller's to log, with its causes.
    Failed { job: String, error: Error, gave_up: bool },
}

impl Advanced {
    pub fn is_idle(&self) -> bool {
        matches!(self, Advanced::Idle)
    }
}

/// An open job, as the chunk needs it.
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

/// Where one chunk got to.
#[derive(sqlx::FromRow)]
struct Chunk {
    /// Rows the window read, up to [`WINDOW`]; fewer means the tenant's history ends here.
    window_rows: i64,
    /// The new cursor: the window's end, or the last replayed delivery when the chunk filled up before it.
    cursor: Option<String>,
    /// Rows up to the cursor: what this chunk examined for good.
    scanned: i64,
    replayed: i64,
}

/// Moves one open job by one chunk, in one transaction holding the job's row, so several processes share the jobs
/// without doubling a chunk. The job is the oldest open one of the tenant whose jobs moved least recently (its
/// latest `updated_at` over all of its jobs), so tenants take turns, and a tenant's jobs take turns among its own.
/// `Err` only when no job could be picked or a failure could not be recorded (the database is unreachable).
pub async fn advance(pool: &PgPool) -> Result<Advanced> {
    let mut tx = pool.begin().await?;
    let open: Option<Open> = sqlx::query_as(
        "SELECT id, tenant_id, environment, filter, created_before, after_id, trace_parent FROM replays r
         WHERE status = ANY ($1)
         ORDER BY (SELECT max(t.updated_at) FROM replays t WHERE t.tenant_id = r.tenant_id), updated_at
         LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(ReplayStatus::open_names())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(open) = open else {
        return Ok(Advanced::Idle);
    };
    let moved = async {
        let chunk = chunk(&mut tx, &open).await?;
        let finished = record_progress(&mut tx, &open.id, &chunk).await?;
        Ok::<_, Error>((chunk, finished))
    }
    .await;
    let failed = match moved {
        Ok((chunk, finished)) => match tx.commit().await {
            Ok(()) => {
                let (replayed, scanned) = (chunk.replayed.max(0) as u64, chunk.scanned.max(0) as u64);
                return Ok(Advanced::Moved { job: open.id, replayed, scanned, finished });
            }
            Err(err) => Error::from(err),
        },
        Err(err) => {
            // Whatever the chunk did is undone (a connection that broke rolled back by itself).
            let _ = tx.rollback().await;
            err
        }
    };
    // Counted outside the chunk's transaction, on a connection that works.
    let gave_up = record_failure(pool, &open.id, reason(&failed)).await?;
    Ok(Advanced::Failed { job: open.id, error: failed, gave_up })
}

/// One chunk of `open` in `conn`'s transaction: reads the window after the cursor and replays what in it matches.
async fn chunk(conn: &mut PgConnection, open: &Open) -> Result<Chunk> {
    let row = format!("replay {}", open.id);
    let environment = open.environment.parse().map_err(corrupt(&row, "environment"))?;
    let owner = Owner { tenant: TenantId::from_uuid(open.tenant_id), environment };
    let stored: StoredFilter = serde_json::from_value(open.filter.clone()).map_err(corrupt(&row, "filter"))?;
    let filter = stored.into_filter()?;
    // For this transaction only. JIT off: the planner prices the per-row checks of a window high enough to compile
    // the statement, which took 140 ms of a chunk that runs in 10.
    sqlx::query("SELECT set_config('statement_timeout', $1, true), set_config('jit', 'off', true)")
        .bind(format!("{}ms", CHUNK_TIMEOUT.as_millis()))
        .execute(&mut *conn)
        .await?;
    let mut q = window_statement(owner, &filter, open);
    let chunk: Chunk = q.build_query_as().fetch_one(&mut *conn).await?;
    if chunk.replayed > 0 {
        wake::notify(&mut *conn).await?;
    }
    Ok(chunk)
}

/// The chunk as one statement: `win`, the window (the tenant's next [`WINDOW`] deliveries in the filter's webhook
/// and time range, which an index serves in order); `picked`, the first [`CHUNK`] replayable matches in it, each
/// holding its event; `replayed`, their replays. Deliveries of events received after the job started are past the
/// range's end, so the walk ends even while the tenant keeps sending. A replay's id carries its event's time
/// (migration 0023), so the job's own replays (and anyone's made since it started) are inside the range: they are
/// never picked, by their `created_at`.
fn window_statement(owner: Owner, filter: &DeliveryFilter, open: &Open) -> QueryBuilder<sqlx::Postgres> {
    let until = filter.until.map_or(open.created_before, |u| u.min(open.created_before));
    let range = DeliveryFilter { status: None, event_types: Vec::new(), until: Some(until), ..filter.clone() };
    let mut q = QueryBuilder::new(
        "WITH win AS MATERIALIZED (
            SELECT d.id, d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id, d.status,
                   d.replay_of, d.created_at
            FROM deliveries d WHERE true",
    );
    push_conditions(&mut q, Visibility::Owner(owner), &range);
    if let Some(after) = &open.after_id {
        q.push(" AND d.id > ").push_bind(after.as_str());
    }
    q.push(" ORDER BY d.id LIMIT ").push_bind(WINDOW);
    q.push(
        "), picked AS (
            SELECT d.*, w.max_attempts, w.include_transcript, w.include_metrics
              FROM win d JOIN webhooks w ON w.id = d.webhook_id WHERE",
    );
    push_replayable(&mut q);
    q.push(" AND d.created_at < ").push_bind(open.created_before);
    push_row_filters(&mut q, filter);
    q.push(EVENT_HELD);
    q.push(" ORDER BY d.id LIMIT ").push_bind(i64::from(CHUNK));
    q.push("), replayed AS (");
    push_replays(&mut q, ReplaySettings::CarriedByD, open.trace_parent.clone());
    q.push(
        "FROM picked d RETURNING replay_of
        ), progress AS (
            SELECT (SELECT count(*) FROM win) AS window_rows, (SELECT count(*) FROM replayed) AS replayed,
                   CASE WHEN (SELECT count(*) FROM replayed) = ",
    );
    q.push_bind(i64::from(CHUNK));
    q.push(
        " THEN (SELECT max(replay_of) FROM replayed) ELSE (SELECT max(id) FROM win) END AS cursor
        )
        SELECT p.window_rows, p.cursor, p.replayed, (SELECT count(*) FROM win WHERE win.id <= p.cursor) AS scanned
        FROM progress p",
    );
    q
}

/// Writes a chunk's progress on its job (and ends the job when the chunk found the end of the range); a success
/// clears the failure count. Returns whether the job finished.
async fn record_progress(conn: &mut PgConnection, id: &str, chunk: &Chunk) -> Result<bool> {
    let finished = chunk.window_rows < WINDOW && chunk.replayed < i64::from(CHUNK);
    sqlx::query(
        "UPDATE replays SET replayed = replayed + $2, scanned = scanned + $3, after_id = COALESCE($4, after_id),
                failures = 0, error = NULL, updated_at = now(),
                status = CASE WHEN $5 THEN $6 ELSE $7 END,
                finished_at = CASE WHEN $5 THEN now() END
         WHERE id = $1",
    )
    .bind(id)
    .bind(chunk.replayed)
    .bind(chunk.scanned)
    .bind(chunk.cursor.as_deref())
    .bind(finished)
    .bind(ReplayStatus::Finished.as_str())
    .bind(ReplayStatus::Running.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(finished)
}

/// Counts a failed chunk on its job, with `why`; the job moves to the back of the turns like any that moved, and
/// fails for good at [`MAX_FAILURES`] in a row. Returns whether it did.
async fn record_failure(pool: &PgPool, id: &str, why: &str) -> Result<bool> {
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE replays SET failures = failures + 1, error = $2, updated_at = now(),
                status = CASE WHEN failures + 1 >= $3 THEN $4 ELSE status END,
                finished_at = CASE WHEN failures + 1 >= $3 THEN now() END
         WHERE id = $1 AND status = ANY ($5)
         RETURNING status",
    )
    .bind(id)
    .bind(why)
    .bind(MAX_FAILURES)
    .bind(ReplayStatus::Failed.as_str())
    .bind(ReplayStatus::open_names())
    .fetch_optional(pool)
    .await?;
    Ok(status.as_deref() == Some(ReplayStatus::Failed.as_str()))
}

/// What the tenant reads about a failed chunk: the kind of failure, never the database's own words (the full
/// error goes to the log, once, by the loop).
fn reason(error: &Error) -> &'static str {
    let code = match error {
        Error::Database(db) => db.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned()),
        Error::Store(_) => None,
    };
    match error {
        Error::Database(_) if code.as_deref() == Some("57014") => "a chunk ran too long and was cancelled",
        Error::Database(db) if courier_store::is_transient(db) => "the database was unavailable",
        Error::Store(courier_store::Error::Corrupt { .. }) => "the replay's stored filter cannot be read",
        _ => "an internal error (logged with the replay's id)",
    }
}
