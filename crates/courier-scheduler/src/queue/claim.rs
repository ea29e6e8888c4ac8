//! Claiming due deliveries: one short transaction, `FOR UPDATE SKIP LOCKED`, a lease, and everything the worker
//! needs in the same round trip.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::{
    DeliveryId, Environment, Event, EventData, EventId, EventType, PayloadFilter, SealedSecrets, TenantId, TraceParent,
    WebhookId,
};
use sqlx::PgPool;

use crate::{Clock, DeliveryStatus, Result, corrupt};

/// The webhook as a claimed delivery sees it.
#[derive(Debug, Clone)]
pub struct ClaimedWebhook {
    pub id: WebhookId,
    pub url: String,
    pub payload: PayloadFilter,
    /// False when the webhook was disabled or deleted after this delivery was queued: cancel, do not send.
    pub active: bool,
    /// Its signing secrets as stored; the worker opens them with the master key (`courier_core::sealed`).
    pub secrets: SealedSecrets,
    /// Its custom headers as stored (sealed), when it has any.
    pub sealed_headers: Option<Vec<u8>>,
    /// Its broker destination as stored (sealed), when it publishes to a broker instead of POSTing to `url`.
    pub sealed_broker: Option<Vec<u8>>,
    /// Deliveries per second it accepts (`crate::rate`), when limited.
    pub rate_limit: Option<u32>,
}

/// A delivery this worker holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    /// This attempt's number, 1-based; also the fencing token when the result is recorded.
    pub attempt: u32,
    pub max_attempts: u32,
    pub event: Event,
    pub webhook: ClaimedWebhook,
    /// The trace context of the request that created this delivery, for the attempt's span to link to.
    pub trace_parent: Option<TraceParent>,
    /// Part of a per-call chain: when it ends, the call's next delivery to this webhook may go.
    pub ordered: bool,
    /// Handed over by ingest and not written yet (`crate::handover`): its journal row until it is.
    pub handover: Option<crate::handover::Ticket>,
}

impl ClaimedDelivery {
    /// What a release or a cancel fences on.
    pub fn leased(&self) -> crate::queue::lease::Leased {
        crate::queue::lease::Leased { id: self.id.clone(), attempt: self.attempt, handover: self.handover.clone() }
    }
}

/// The columns of a claimed delivery's webhook, as the claim and the handover read them.
#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    webhook_id: String,
    url: String,
    include_transcript: bool,
    include_metrics: bool,
    active: bool,
    secret_ciphertext: Vec<u8>,
    previous_secret_ciphertext: Option<Vec<u8>>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    headers_ciphertext: Option<Vec<u8>>,
    destination_ciphertext: Option<Vec<u8>>,
    rate_limit_per_second: Option<i32>,
}

/// The select list of [`WebhookRow`] over `webhooks w` and the delivery `d`, for `concat!`: the payload filter is
/// the one recorded with the delivery (migration 0021), or the webhook's for a delivery older than that.
macro_rules! webhook_columns {
    () => {
        "w.id AS webhook_id, w.url, COALESCE(d.include_transcript, w.include_transcript) AS include_transcript,
         COALESCE(d.include_metrics, w.include_metrics) AS include_metrics, w.active, w.secret_ciphertext,
         w.previous_secret_ciphertext, w.previous_secret_expires_at, w.headers_ciphertext, w.destination_ciphertext,
         w.rate_limit_per_second"
    };
}
pub(crate) use webhook_columns;

/// A [`WebhookRow`] where the row may have none (its `webhook_id` NULL): fan-out returns one for the deliveries it
/// hands over only.
pub(crate) struct MaybeWebhook(pub(crate) Option<WebhookRow>);

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for MaybeWebhook {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        let id: Option<String> = sqlx::Row::try_get(row, "webhook_id")?;
        Ok(Self(id.map(|_| WebhookRow::from_row(row)).transpose()?))
    }
}

impl WebhookRow {
    pub(crate) fn parse(self, row_name: &str) -> Result<ClaimedWebhook> {
        let webhook = WebhookId::parse(&self.webhook_id).map_err(corrupt(row_name, "webhook id"))?;
        Ok(ClaimedWebhook {
            id: webhook.clone(),
            url: self.url,
            payload: PayloadFilter {
                include_transcript: self.include_transcript,
                include_metrics: self.include_metrics,
            },
            active: self.active,
            secrets: SealedSecrets {
                webhook,
                current: self.secret_ciphertext,
                previous: self.previous_secret_ciphertext.zip(self.previous_secret_expires_at),
            },
            sealed_headers: self.headers_ciphertext,
            sealed_broker: self.destination_ciphertext,
            rate_limit: self.rate_limit_per_second.and_then(|n| u32::try_from(n).ok()),
        })
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    attempt_count: i32,
    max_attempts: i32,
    tenant_id: uuid::Uuid,
    environment: String,
    event_id: String,
    event_type: String,
    created: i64,
    data: serde_json::Value,
    #[sqlx(flatten)]
    webhook: WebhookRow,
    trace_parent: Option<String>,
    ordered: bool,
}

fn from_row(row: Row) -> Result<ClaimedDelivery> {
    let row_name = format!("delivery {}", row.id);
    let event_type: EventType = row.event_type.parse().map_err(corrupt(&row_name, "event type"))?;
    Ok(ClaimedDelivery {
        id: DeliveryId::parse(&row.id).map_err(corrupt(&row_name, "id"))?,
        attempt: u32::try_from(row.attempt_count).map_err(corrupt(&row_name, "attempt_count"))?,
        max_attempts: u32::try_from(row.max_attempts).map_err(corrupt(&row_name, "max_attempts"))?,
        event: Event {
            id: EventId::parse(&row.event_id).map_err(corrupt(&row_name, "event id"))?,
            event_type,
            created: row.created,
            tenant_id: TenantId::from_uuid(row.tenant_id),
            livemode: row.environment.parse::<Environment>().map_err(corrupt(&row_name, "environment"))?.is_live(),
            data: EventData::parse_as(event_type, row.data).map_err(corrupt(&row_name, "event data"))?,
        },
        webhook: row.webhook.parse(&row_name)?,
        // Only ever written from a parsed TraceParent; a stored value that does not parse only loses the link.
        trace_parent: row.trace_parent.and_then(|t| t.parse().ok()),
        ordered: row.ordered,
        handover: None,
    })
}

/// What a claim must leave alone: this process's saturated webhooks and tenants, and retries once retries hold
/// their share of the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Skip<'a> {
    pub webhooks: &'a [WebhookId],
    pub tenants: &'a [TenantId],
    /// Claim only first attempts (retries already hold their share of slots).
    pub retries: bool,
}

/// Tenants whose queue heads a claim looks at beside the oldest due rows, and rows it takes from each head.
const TENANTS_PER_CLAIM: i64 = 16;
const ROWS_PER_HEAD: i64 = 8;
/// Due rows each look of the claim reads at most (the oldest overall, and each tenant's head). A webhook or tenant
/// the claim skips can hold this many rows in front of others of its own tenant; other tenants are reached through
/// their own heads.
const SCAN_PER_LOOK: i64 = 512;

/// Where this process's next claim starts its turn across tenants (a tenant id; the walk takes the next one after
/// it). Process-wide on purpose: every claim of the process moves the same turn on.
static TURN: std::sync::Mutex<uuid::Uuid> = std::sync::Mutex::new(uuid::Uuid::nil());

/// What makes a live row claimable, written once for each place the claim looks (`c` is the row).
macro_rules! claimable {
    () => {
        "c.due_at <= now() + $6 AND c.attempt_count < c.max_attempts
         AND c.webhook_id <> ALL ($3) AND c.tenant_id <> ALL ($4) AND (c.attempt_count = 0 OR NOT $5)
         -- Per-call ordering: never while an earlier delivery of the same call to this webhook is live.
         AND (c.call_seq IS NULL OR NOT EXISTS (
               SELECT 1 FROM deliveries_live p
                WHERE p.webhook_id = c.webhook_id AND p.call_id = c.call_id AND p.call_seq IS NOT NULL
                  AND p.call_seq < c.call_seq AND p.status = ANY ($8)))"
    };
}

/// Claims up to `limit` due deliveries (pending and due, or leased and expired), skipping rows other workers hold
/// and what `skip` names. Each claimed row's attempt count goes up by one and its lease runs for `lease`.
///
/// Tenants take turns: the candidates are the oldest due rows and the oldest few of each of a handful of tenants
/// (from where the last claim's turn began, round past the end, through `deliveries_tenant_due`), ranked within their tenant, so every tenant's first
/// rows come before any tenant's second. A tenant with a backlog still has its whole claim when alone.
pub async fn claim(
    pool: &PgPool,
    clock: &Clock,
    limit: u32,
    lease: Duration,
    skip: Skip<'_>,
) -> Result<Vec<ClaimedDelivery>> {
    // A candidate that finished or was cancelled between the claim's read and its lock is moved out of the queue:
    // the claim runs again without it rather than fail.
    crate::retry_moved(|| claim_once(pool, clock, limit, lease, skip)).await
}

// Long because it is one statement, the claim, whose every clause carries the comment that says why it is there.
async fn claim_once(
    pool: &PgPool,
    clock: &Clock,
    limit: u32,
    lease: Duration,
    skip: Skip<'_>,
) -> Result<Vec<ClaimedDelivery>> {
    let webhooks: Vec<&str> = skip.webhooks.iter().map(WebhookId::as_str).collect();
    let tenants: Vec<uuid::Uuid> = skip.tenants.iter().map(TenantId::as_uuid).collect();
    // Every row the claim reads it finds through an index: each look is an ordered walk stopped by its LIMIT, the
    // rest are lookups by key. With the queue's statistics out of date (a burst into a new or idle queue, before
    // autovacuum's next analyze) the planner chose otherwise, in the batch benchmark: a bitmap scan of a tenant's
    // 22,311 due rows and a sort, for 8 (50 ms; it estimated 41), and a sequential scan of the whole queue for the
    // 64 candidates (63 ms over 13,712 rows); without those, another index of the tenant's rows and a sort
    // (`tests/it/claim_cost.rs`). So this transaction plans with none of them: a look that could sort instead of
    // walking its index in order never does (the sorts of the few candidates, which have no other way, stay).
    // Those sorts are then costed as disabled (10^10), which would make PostgreSQL compile the claim with LLVM: 1.5 s
    // of JIT for a 1 ms statement. So no JIT either. The settings go with the `BEGIN`, in the same round trip.
    // Each claim is planned for itself: planning takes about a third of it (1.4 ms of 4.5 in the batch benchmark),
    // but one generic plan per connection, though 1.05× as fast in one compare run, made claims of 48 and 123 ms in
    // two batch runs of five, against the bound of 50.
    let mut tx = pool
        .begin_with(
            "BEGIN; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off;
             SET LOCAL jit = off",
        )
        .await?;
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "WITH RECURSIVE
         -- A claim need not wait for its WAL flush: if PostgreSQL crashes before the flush, the claim is undone and
         -- the rows are simply due again (at least once). Ingest and attempt records keep synchronous commits.
         relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
         -- A few tenants with live rows, from the last claim's turn on and round past the end: one index probe
         -- each, and the walk stops where it began.
         turn(tenant_id, first, n) AS (
            SELECT s.tenant_id, s.tenant_id, 1
              FROM (SELECT COALESCE(
                      (SELECT l.tenant_id FROM deliveries_live l WHERE l.tenant_id > $9 AND l.due_at IS NOT NULL
                        ORDER BY l.tenant_id LIMIT 1),
                      (SELECT l.tenant_id FROM deliveries_live l WHERE l.due_at IS NOT NULL
                        ORDER BY l.tenant_id LIMIT 1)) AS tenant_id) s
             WHERE s.tenant_id IS NOT NULL
            UNION ALL
            SELECT nxt.tenant_id, t.first, t.n + 1
              FROM turn t,
                   LATERAL (SELECT COALESCE(
                      (SELECT l.tenant_id FROM deliveries_live l WHERE l.tenant_id > t.tenant_id AND l.due_at IS NOT NULL
                        ORDER BY l.tenant_id LIMIT 1),
                      (SELECT l.tenant_id FROM deliveries_live l WHERE l.due_at IS NOT NULL
                        ORDER BY l.tenant_id LIMIT 1)) AS tenant_id) nxt
             WHERE t.n < $10 AND nxt.tenant_id <> t.first
         ),
         -- Each look reads at most $12 due rows and filters those: what the claim skips (saturated webhooks and
         -- tenants, chains behind a live delivery) costs it a bounded scan, never a walk through a whole backlog.
         candidates AS (
            (SELECT c.id, c.tenant_id, c.due_at
               FROM (SELECT * FROM deliveries_live c WHERE c.due_at <= now() + $6 ORDER BY c.due_at LIMIT $12) c
              WHERE ",
        claimable!(),
        " ORDER BY c.due_at LIMIT $1)
            UNION
            SELECT h.id, h.tenant_id, h.due_at FROM turn t,
                   LATERAL (SELECT c.id, c.tenant_id, c.due_at
                              FROM (SELECT * FROM deliveries_live c
                                     WHERE c.tenant_id = t.tenant_id AND c.due_at <= now() + $6
                                     ORDER BY c.due_at LIMIT $12) c
                             WHERE ",
        claimable!(),
        " ORDER BY c.due_at LIMIT $11) h
         ),
         ranked AS (
            SELECT id, due_at, row_number() OVER (PARTITION BY tenant_id ORDER BY due_at, id) AS rank FROM candidates
         ),
         due AS (
            SELECT c.id, c.tenant_id, c.environment, c.event_id, c.event_received_at
              FROM deliveries_live c JOIN ranked r ON r.id = c.id
             -- Checked again on the row as locked: another claim may have taken it since the candidates were read.
             WHERE c.due_at <= now() + $6 AND c.attempt_count < c.max_attempts
               -- The candidates by the primary key, as an array: joined on `id` alone the planner may hash the whole
               -- queue instead (a seq scan of 27,632 rows, 70 ms, for 64 candidates in the batch benchmark).
               AND c.id = ANY (ARRAY(SELECT id FROM ranked))
             ORDER BY r.rank, r.due_at
             LIMIT $1
             FOR UPDATE OF c SKIP LOCKED
         )
         -- The queue is one table (migration 0015): claiming keeps a delivery live, so it never leaves it.
         UPDATE deliveries_live d
            SET status = $7, attempt_count = d.attempt_count + 1, next_attempt_at = NULL,
                lease_expires_at = now() + $6 + $2, updated_at = now()
           FROM due, relaxed, webhooks w,
                -- Each event from the one day its delivery names (migration 0029): a lateral lookup, so the day is
                -- a parameter the events' partitions are pruned by, and no plan can probe or scan every day instead.
                LATERAL (SELECT e.created, e.data FROM events e
                          WHERE e.tenant_id = due.tenant_id AND e.environment = due.environment
                            AND e.id = due.event_id AND e.received_at = due.event_received_at
                          LIMIT 1) e
          WHERE d.id = due.id AND w.id = d.webhook_id
         RETURNING d.id, d.attempt_count, d.max_attempts, d.tenant_id, d.environment, d.event_id, d.event_type,
                   e.created, e.data, d.trace_parent, d.call_seq IS NOT NULL AS ordered, ",
        webhook_columns!(),
    ))
    .bind(i64::from(limit))
    .bind(lease)
    .bind(&webhooks)
    .bind(&tenants)
    .bind(skip.retries)
    .bind(clock.skew())
    .bind(DeliveryStatus::Delivering)
    .bind(crate::ordering::LIVE)
    .bind(TURN.lock().map(|t| *t).unwrap_or_default())
    .bind(TENANTS_PER_CLAIM)
    .bind(ROWS_PER_HEAD)
    .bind(SCAN_PER_LOOK)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // The next claim's turn starts after the first tenant this one served, so turns go round.
    if let (Ok(mut turn), Some(served)) = (TURN.lock(), rows.iter().map(|r| r.tenant_id).min()) {
        *turn = served;
    }
    rows.into_iter().map(from_row).collect()
}
