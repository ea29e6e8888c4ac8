//! The delivery log: what tenants read through the API and operators through the CLI.

use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, ErrorKind, EventId, EventType, ResponseBody, TenantId, WebhookId};
use courier_store::Owner;
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use crate::{DeliveryStatus, Result, corrupt};

/// One delivery as the log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub call_id: String,
    pub webhook_id: WebhookId,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub max_attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub replay_of: Option<DeliveryId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The payload filter it was created with, which its attempts send (`None` for a delivery created before
    /// migration 0021, which sends its webhook's current filter).
    pub payload: Option<courier_core::PayloadFilter>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<u16>,
    /// Why no response came back (unknown kinds written by a newer version read as [`ErrorKind::Other`]).
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    /// What the receiver answered, exactly as kept (bytes; see [`ResponseBody::display`]).
    pub response_body: Option<ResponseBody>,
    pub signature_timestamp: i64,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i32,
    status_code: Option<i32>,
    error_kind: Option<String>,
    error_message: Option<String>,
    response_body: Option<Vec<u8>>,
    response_truncated: bool,
    signature_timestamp: i64,
}

impl From<AttemptRow> for Attempt {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempt: row.attempt,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            status_code: row.status_code.and_then(|c| u16::try_from(c).ok()),
            error_kind: row.error_kind.map(|k| k.parse().unwrap_or(ErrorKind::Other)),
            error_message: row.error_message,
            response_body: row.response_body.map(|bytes| ResponseBody::stored(bytes, row.response_truncated)),
            signature_timestamp: row.signature_timestamp,
        }
    }
}

/// Whose deliveries a query may see: a tenant in one environment (the API), or an operator (the CLI, through
/// `operator`). Private to the crate, so the API cannot build an operator's view.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Visibility {
    Owner(Owner),
    Operator { tenant: Option<TenantId> },
}

/// Narrowing a log query; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub webhook_id: Option<WebhookId>,
    pub event_types: Vec<EventType>,
    pub call_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    id: String,
    tenant_id: uuid::Uuid,
    event_id: String,
    event_type: String,
    call_id: String,
    webhook_id: String,
    status: DeliveryStatus,
    attempt_count: i32,
    max_attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    replay_of: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    include_transcript: Option<bool>,
    include_metrics: Option<bool>,
}

pub(crate) const COLUMNS: &str = "d.id, d.tenant_id, d.event_id, d.event_type, d.call_id, d.webhook_id, d.status, \
    d.attempt_count, d.max_attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.replay_of, d.created_at, \
    d.updated_at, d.include_transcript, d.include_metrics";

pub(crate) fn from_row(row: Row) -> Result<Delivery> {
    let row_name = format!("delivery {}", row.id);
    Ok(Delivery {
        id: DeliveryId::parse(&row.id).map_err(corrupt(&row_name, "id"))?,
        tenant_id: TenantId::from_uuid(row.tenant_id),
        event_id: EventId::parse(&row.event_id).map_err(corrupt(&row_name, "event id"))?,
        event_type: row.event_type.parse().map_err(corrupt(&row_name, "event type"))?,
        call_id: row.call_id,
        webhook_id: WebhookId::parse(&row.webhook_id).map_err(corrupt(&row_name, "webhook id"))?,
        status: row.status,
        attempt_count: u32::try_from(row.attempt_count).map_err(corrupt(&row_name, "attempt_count"))?,
        max_attempts: u32::try_from(row.max_attempts).map_err(corrupt(&row_name, "max_attempts"))?,
        next_attempt_at: row.next_attempt_at,
        last_status_code: row.last_status_code.and_then(|c| u16::try_from(c).ok()),
        last_error: row.last_error,
        replay_of: row
            .replay_of
            .map(|id| DeliveryId::parse(&id))
            .transpose()
            .map_err(corrupt(&row_name, "replay_of"))?,
        created_at: row.created_at,
        updated_at: row.updated_at,
        payload: row.include_transcript.zip(row.include_metrics).map(|(include_transcript, include_metrics)| {
            courier_core::PayloadFilter { include_transcript, include_metrics }
        }),
    })
}

/// Appends the visibility and filter conditions to a query that already has a `WHERE` clause on `d`.
pub(crate) fn push_conditions(q: &mut QueryBuilder<Postgres>, visibility: Visibility, filter: &DeliveryFilter) {
    match visibility {
        Visibility::Owner(owner) => {
            q.push(" AND d.tenant_id = ").push_bind(owner.tenant.as_uuid());
            q.push(" AND d.environment = ").push_bind(owner.environment.as_str());
        }
        Visibility::Operator { tenant: Some(tenant) } => {
            q.push(" AND d.tenant_id = ").push_bind(tenant.as_uuid());
        }
        Visibility::Operator { tenant: None } => {}
    }
    push_row_filters(q, filter);
    if let Some(webhook) = &filter.webhook_id {
        q.push(" AND d.webhook_id = ").push_bind(webhook.as_str().to_owned());
    }
    if let Some(call_id) = &filter.call_id {
        q.push(" AND d.call_id = ").push_bind(call_id.clone());
    }
    push_id_range(q, filter);
}

/// Appends the filters no index serves (status, event types), for a query that reads a bounded window of rows `d`
/// by an index and checks these within it.
pub(crate) fn push_row_filters(q: &mut QueryBuilder<Postgres>, filter: &DeliveryFilter) {
    if let Some(status) = filter.status {
        q.push(" AND d.status = ").push_bind(status.as_str());
    }
    if !filter.event_types.is_empty() {
        let types: Vec<&'static str> = filter.event_types.iter().map(|t| t.as_str()).collect();
        q.push(" AND d.event_type = ANY (").push_bind(types).push(")");
    }
}

/// The time range, as an id range: a delivery's id carries its event's `received_at` (migration 0023; an id made
/// before it, the delivery's own creation), so `since` and `until` bound when the event was received, exactly, and
/// the tenant's index scans only that stretch of history. A replay is of its event's time, as it is listed.
fn push_id_range(q: &mut QueryBuilder<Postgres>, filter: &DeliveryFilter) {
    if let Some(since) = filter.since {
        q.push(" AND d.id >= ").push_bind(first_id_from(since));
    }
    if let Some(until) = filter.until {
        q.push(" AND d.id < ").push_bind(first_id_from(until));
    }
}

/// The first id of the first whole millisecond at or after `t`: ids name milliseconds, so an event of millisecond
/// `m` is at or after `t` exactly when `m` is.
fn first_id_from(t: DateTime<Utc>) -> String {
    let partial = !t.timestamp_subsec_nanos().is_multiple_of(1_000_000);
    DeliveryId::first_at(t.timestamp_millis() + i64::from(partial)).as_str().to_owned()
}

/// One page of a tenant's delivery log, and where to go on when the page is short only because the scan stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    /// Up to `limit` rows, newest first (one more when more rows match right after them).
    pub rows: Vec<Delivery>,
    /// Set when fewer rows matched than asked for within the scan window and older history remains: continue
    /// before this id.
    pub resume_before: Option<DeliveryId>,
}

/// The most rows one page request examines when its filters (status, event type) have no index of their own.
/// Those columns change on every write or repeat on every row, so an index on them would cost every delivery
/// three more index writes; instead a page walks at most this much of the tenant's history, newest first, and
/// says where to continue. A page therefore costs the same with ten million rows as with ten thousand.
pub const SCAN_WINDOW: i64 = 5_000;

/// A page of a tenant's log for the API: `limit + 1` rows at most (the extra one says there is more), served by an
/// index when filtered by webhook or call, else by a bounded scan of the tenant's history ([`SCAN_WINDOW`]).
pub async fn page(
    db: &sqlx::PgPool,
    owner: Owner,
    filter: &DeliveryFilter,
    before: Option<&DeliveryId>,
    limit: u32,
) -> Result<LogPage> {
    let visibility = Visibility::Owner(owner);
    let indexed = filter.webhook_id.is_some() || filter.call_id.is_some();
    let needs_filtering = filter.status.is_some() || !filter.event_types.is_empty();
    if indexed || !needs_filtering {
        return Ok(LogPage { rows: list_visible(db, visibility, filter, before, limit).await?, resume_before: None });
    }
    // The window: the tenant's newest rows in the range, by the tenant index; the filters apply within it.
    let range = DeliveryFilter { status: None, event_types: Vec::new(), ..filter.clone() };
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM (SELECT * FROM deliveries d WHERE true"));
    push_conditions(&mut q, visibility, &range);
    if let Some(before) = before {
        q.push(" AND d.id < ").push_bind(before.as_str().to_owned());
    }
    q.push(" ORDER BY d.id DESC LIMIT ").push_bind(SCAN_WINDOW).push(") d WHERE true");
    push_row_filters(&mut q, filter);
    q.push(" ORDER BY d.id DESC LIMIT ").push_bind(i64::from(limit));
    let rows: Vec<Row> = q.build_query_as().fetch_all(db).await?;
    let rows: Vec<Delivery> = rows.into_iter().map(from_row).collect::<Result<_>>()?;
    if rows.len() >= limit as usize {
        return Ok(LogPage { rows, resume_before: None });
    }
    // Short: was the window full (then older history remains unexamined)?
    let mut q = QueryBuilder::new("SELECT min(id), count(*) FROM (SELECT d.id FROM deliveries d WHERE true");
    push_conditions(&mut q, visibility, &range);
    if let Some(before) = before {
        q.push(" AND d.id < ").push_bind(before.as_str().to_owned());
    }
    q.push(" ORDER BY d.id DESC LIMIT ").push_bind(SCAN_WINDOW).push(") w");
    let (end, scanned): (Option<String>, i64) = q.build_query_as().fetch_one(db).await?;
    let resume_before = match end {
        Some(end) if scanned >= SCAN_WINDOW => {
            Some(DeliveryId::parse(&end).map_err(corrupt(format!("delivery {end}"), "id"))?)
        }
        _ => None,
    };
    Ok(LogPage { rows, resume_before })
}

/// A tenant's deliveries, newest first. `before` is the last id of the previous page; ids sort by creation, so
/// pages stay stable while new deliveries arrive (they sort before the first page, never inside a later one).
pub async fn list(
    db: impl PgExecutor<'_>,
    owner: Owner,
    filter: &DeliveryFilter,
    before: Option<&DeliveryId>,
    limit: u32,
) -> Result<Vec<Delivery>> {
    list_visible(db, Visibility::Owner(owner), filter, before, limit).await
}

pub(crate) async fn list_visible(
    db: impl PgExecutor<'_>,
    visibility: Visibility,
    filter: &DeliveryFilter,
    before: Option<&DeliveryId>,
    limit: u32,
) -> Result<Vec<Delivery>> {
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM deliveries d WHERE true"));
    push_conditions(&mut q, visibility, filter);
    if let Some(before) = before {
        q.push(" AND d.id < ").push_bind(before.as_str().to_owned());
    }
    q.push(" ORDER BY d.id DESC LIMIT ").push_bind(i64::from(limit));
    let rows: Vec<Row> = q.build_query_as().fetch_all(db).await?;
    rows.into_iter().map(from_row).collect()
}

/// One of a tenant's deliveries with every attempt, oldest attempt first.
pub async fn get(db: &sqlx::PgPool, owner: Owner, id: &DeliveryId) -> Result<Option<(Delivery, Vec<Attempt>)>> {
    get_visible(db, Visibility::Owner(owner), id).await
}

pub(crate) async fn get_visible(
    db: &sqlx::PgPool,
    visibility: Visibility,
    id: &DeliveryId,
) -> Result<Option<(Delivery, Vec<Attempt>)>> {
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM deliveries d WHERE d.id = "));
    q.push_bind(id.as_str().to_owned());
    push_conditions(&mut q, visibility, &DeliveryFilter::default());
    let row: Option<Row> = q.build_query_as().fetch_optional(db).await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, started_at, duration_ms, status_code, error_kind, error_message, response_body,
                response_truncated, signature_timestamp
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(id.as_str())
    .fetch_all(db)
    .await?;
    Ok(Some((from_row(row)?, attempts.into_iter().map(Attempt::from).collect())))
}

/// Every delivery of one event, oldest first (by when each was made: they all share their event's time in their
/// ids).
pub async fn for_event(db: impl PgExecutor<'_>, owner: Owner, event: &EventId) -> Result<Vec<Delivery>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries d
         WHERE d.tenant_id = $1 AND d.environment = $2 AND d.event_id = $3 ORDER BY d.created_at, d.id"
    )))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(event.as_str())
    .fetch_all(db)
    .await?;
    rows.into_iter().map(from_row).collect()
}
