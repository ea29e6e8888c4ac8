//! Recording attempts: many deliveries per transaction, fenced by the attempt number so a worker that lost its
//! lease cannot overwrite the newer claim's outcome.
//!
//! Recording never stalls on one row. A batch PostgreSQL refuses for a reason in the data (a constraint, an
//! encoding, a delivery purged meanwhile) is split and written row by row; a row that still cannot be stored is
//! recorded without its receiver-supplied details, and as the last resort its delivery is moved on without an
//! attempt row, which is logged with its ids. Only an unreachable database is an `Err`, for the caller to retry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::response::safe_message;
use courier_core::{AttemptResult, DeliveryId, Next, ResponseBody, WebhookId};
use courier_store::webhooks::{DisabledReason, state};
use sqlx::PgPool;

use crate::handover::{Settled, Ticket};
use crate::{Clock, DeliveryStatus, Error, Result};

/// The most of an error message kept on record, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// The longest retry delay a row can hold (Postgres intervals are bounded; no policy comes near it).
const MAX_DELAY_MS: i64 = 365 * 86_400_000;

/// How a record transaction of a few attempts begins: its statements reuse one generic plan per connection. The
/// record statement's custom plans expand every day partition of `deliveries`, and for a lone attempt making one
/// took 0.55 ms where running it took 0.3 (`pg_stat_statements`, the `rate` scenario); the generic plan runs in
/// 0.4. The generic plan is made for a handful of rows, so a larger batch plans for itself: with 500-row batches
/// the generic plan took 0.16 ms a row against 0.09 planned (the `batch` scenario). Both in `BEGIN`'s round trip.
///
/// Either way without sequential scans (and so without JIT, which their disabled cost would set off): the fenced
/// update finds its rows by primary key. A plan made while the queue was small (a generic one, kept for the
/// connection's life, or a custom one on statistics autovacuum has not refreshed) otherwise read the whole queue
/// for each record, 100,000 rows in the batch benchmark (12–23 ms records, `auto_explain`).
const GENERIC_PLANS: &str =
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; SET LOCAL jit = off";
const CUSTOM_PLANS: &str =
    "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_seqscan = off; SET LOCAL jit = off";

/// The most attempts a record transaction runs on the generic plan. A burst's records hold about 20 attempts:
/// planning one for itself took 0.82 ms of its 2.2 (`pg_stat_statements`, 20,000 single events), and the generic
/// plan ran the same batches in 1.2 ms in all. Its joins are made for a handful of rows, which costs little up to
/// here and costs more than planning at the batch scenario's 500.
const GENERIC_UP_TO: usize = 64;

/// One finished attempt and what it decided.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub result: AttemptResult,
    pub error_message: Option<String>,
    pub response_body: Option<ResponseBody>,
    pub signature_timestamp: i64,
    pub next: Next,
    /// Part of a per-call chain (from the claim): ending it lets the call's next delivery go.
    pub ordered: bool,
    /// Handed over by ingest and not written yet: the record writes it, once, in its state after this attempt.
    pub handover: Option<crate::handover::Ticket>,
}

/// How much of an attempt a write keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail<'a> {
    /// Everything.
    Full,
    /// The outcome (status code or error kind) without what the receiver said, with a note why.
    Minimal { sqlstate: &'a str },
    /// No attempt row: only the delivery moves on.
    None,
}

/// What a call to [`record`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Deliveries whose lease the batch still held, now moved on.
    pub updated: u64,
    /// The batch was refused as a whole and written row by row.
    pub split: bool,
    /// Attempts recorded without the receiver's details (status code or error kind, and a note).
    pub minimal: u64,
    /// Attempts with no row at all (their deliveries moved on, or were left to their leases).
    pub dropped: u64,
    /// Deliveries made due by this batch: waiting ones whose call's earlier delivery ended, and the deliveries of
    /// operational events it announced. Wake the workers.
    pub promoted: u64,
}

impl Recorded {
    fn add(&mut self, written: Written) {
        self.updated += written.updated;
        self.promoted += written.promoted;
    }
}

/// What one write transaction changed.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    updated: u64,
    promoted: u64,
}

/// True for failures of the database rather than of the rows: the same write may succeed later.
pub fn is_transient(err: &Error) -> bool {
    match err {
        Error::Database(err) => courier_store::is_transient(err),
        Error::Store(courier_store::Error::Database(err)) => courier_store::is_transient(err),
        Error::Store(_) => false,
    }
}

fn sqlstate(err: &Error) -> String {
    match err {
        Error::Database(sqlx::Error::Database(db)) => {
            db.code().map(|c| c.into_owned()).unwrap_or_else(|| "unknown".to_owned())
        }
        _ => "encode".to_owned(),
    }
}

/// Records a batch of attempts and applies their decisions. Deliveries whose lease the batch no longer held (another
/// worker reclaimed them) keep the newer claim's state; their attempts are recorded all the same, because they
/// happened. `Err` only when the database is unreachable or shutting down ([`is_transient`]): retry the batch.
pub async fn record(pool: &PgPool, clock: &Clock, records: &[AttemptRecord]) -> Result<Recorded> {
    let err = match crate::retry_moved(|| write(pool, clock, records, Detail::Full)).await {
        Ok(written) => {
            let mut recorded = Recorded::default();
            recorded.add(written);
            return Ok(recorded);
        }
        Err(err) if is_transient(&err) => return Err(err),
        Err(err) => err,
    };
    let mut recorded = Recorded { split: records.len() > 1, ..Recorded::default() };
    if records.len() == 1 {
        record_refused(pool, clock, &records[0], &err, &mut recorded).await?;
        return Ok(recorded);
    }
    tracing::warn!(error = %err, count = records.len(), "a batch of attempts was refused; recording them one by one");
    for r in records {
        match crate::retry_moved(|| write(pool, clock, std::slice::from_ref(r), Detail::Full)).await {
            Ok(written) => recorded.add(written),
            Err(err) if is_transient(&err) => return Err(err),
            Err(err) => record_refused(pool, clock, r, &err, &mut recorded).await?,
        }
    }
    Ok(recorded)
}

/// One attempt PostgreSQL refused in full: keep its outcome without the details, else move its delivery on.
async fn record_refused(
    pool: &PgPool,
    clock: &Clock,
    r: &AttemptRecord,
    err: &Error,
    recorded: &mut Recorded,
) -> Result<()> {
    let one = std::slice::from_ref(r);
    let code = sqlstate(err);
    tracing::warn!(error = %err, delivery.id = %r.delivery_id, attempt = r.attempt,
        "an attempt's details were refused; recording its outcome only");
    let last = match write(pool, clock, one, Detail::Minimal { sqlstate: &code }).await {
        Ok(written) => {
            recorded.add(written);
            recorded.minimal += 1;
            return Ok(());
        }
        Err(err) if is_transient(&err) => return Err(err),
        Err(err) => err,
    };
    // The attempt row itself cannot exist (its delivery was purged, say): the delivery's state still moves on.
    recorded.dropped += 1;
    match write(pool, clock, one, Detail::None).await {
        Ok(written) => {
            recorded.add(written);
            tracing::error!(error = %last, delivery.id = %r.delivery_id, webhook.id = %r.webhook_id,
                attempt = r.attempt, outcome = r.next.as_str(),
                "an attempt could not be stored at all; its delivery moved on without it");
            Ok(())
        }
        Err(err) if is_transient(&err) => Err(err),
        Err(err) => {
            tracing::error!(error = %err, delivery.id = %r.delivery_id, webhook.id = %r.webhook_id,
                attempt = r.attempt, outcome = r.next.as_str(),
                "an attempt and its outcome could not be stored; dropped (its lease will run out)");
            Ok(())
        }
    }
}

/// One transaction: the attempt rows (as `detail` says) and every delivery's next state.
// Long because it turns one batch into the column arrays of one set-based statement in one pass; split, the arrays
// would have to travel between functions.
async fn write(pool: &PgPool, clock: &Clock, records: &[AttemptRecord], detail: Detail<'_>) -> Result<Written> {
    if records.is_empty() {
        return Ok(Written::default());
    }
    let n = records.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut codes: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut kinds: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut messages: Vec<Option<String>> = Vec::with_capacity(n);
    let mut bodies: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut truncated = Vec::with_capacity(n);
    let mut timestamps = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut delays: Vec<Option<i64>> = Vec::with_capacity(n);
    for r in records {
        ids.push(r.delivery_id.as_str());
        attempts.push(r.attempt as i32);
        started.push(r.started_at);
        durations.push(i32::try_from(r.duration.as_millis()).unwrap_or(i32::MAX));
        match r.result {
            AttemptResult::Response { status, .. } => {
                codes.push(Some(i32::from(status)));
                kinds.push(None);
            }
            AttemptResult::Error(kind) => {
                codes.push(None);
                kinds.push(Some(kind.as_str()));
            }
        }
        match detail {
            Detail::Full | Detail::None => {
                messages.push(r.error_message.as_deref().map(|m| safe_message(m, MAX_ERROR_MESSAGE)));
                bodies.push(r.response_body.as_ref().map(ResponseBody::as_bytes));
                truncated.push(r.response_body.as_ref().is_some_and(ResponseBody::truncated));
            }
            Detail::Minimal { sqlstate } => {
                messages.push(Some(format!("the details of this attempt could not be stored (SQLSTATE {sqlstate})")));
                bodies.push(None);
                truncated.push(false);
            }
        }
        timestamps.push(r.signature_timestamp);
        let (status, delay) = match r.next {
            Next::Succeeded => (DeliveryStatus::Succeeded, None),
            Next::Retry { after } => (
                DeliveryStatus::Pending,
                Some(i64::try_from(after.as_millis()).unwrap_or(MAX_DELAY_MS).min(MAX_DELAY_MS)),
            ),
            Next::Failed | Next::Gone => (DeliveryStatus::Failed, None),
        };
        statuses.push(status);
        delays.push(delay);
    }

    let mut tx = pool.begin_with(if n <= GENERIC_UP_TO { GENERIC_PLANS } else { CUSTOM_PLANS }).await?;
    let journals: Vec<i64> = records.iter().filter_map(|r| r.handover.as_ref().map(Ticket::journal)).collect();
    let settled = Settled::take(records.iter().filter_map(|r| r.handover.as_ref()));
    let statement = if detail == Detail::None { super::record::RECORD_WITHOUT_ATTEMPTS } else { super::record::RECORD };
    let mut finished: Vec<(String, DeliveryStatus, String, bool)> = sqlx::query_as(statement)
        .bind(&ids)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&delays)
        .bind(&codes)
        .bind(&kinds)
        .bind(clock.skew())
        .bind(DeliveryStatus::Delivering)
        .bind(&journals)
        .bind(&settled.ids)
        .bind(&started)
        .bind(&durations)
        .bind(&messages)
        .bind(&bodies)
        .bind(&truncated)
        .bind(&timestamps)
        .bind(detail != Detail::None)
        .bind(DeliveryStatus::Succeeded)
        .bind(DeliveryStatus::Failed)
        .fetch_all(&mut *tx)
        .await?;
    // A handed-over delivery neither written nor moved: its journal row went to the sweep while this statement
    // waited for it, and the row the sweep wrote is newer than the statement's snapshot. Look again.
    let stray: Vec<usize> = (0..n)
        .filter(|&i| records[i].handover.is_some())
        .filter(|&i| !finished.iter().any(|(_, _, id, _)| id == records[i].delivery_id.as_str()))
        .collect();
    if !stray.is_empty() {
        let pick = |i: &usize| *i;
        let again: Vec<(String, DeliveryStatus, String, bool)> = sqlx::query_as(super::record::MOVE_AGAIN)
            .bind(stray.iter().map(pick).map(|i| ids[i]).collect::<Vec<_>>())
            .bind(stray.iter().map(pick).map(|i| attempts[i]).collect::<Vec<_>>())
            .bind(stray.iter().map(pick).map(|i| statuses[i]).collect::<Vec<_>>())
            .bind(stray.iter().map(pick).map(|i| delays[i]).collect::<Vec<_>>())
            .bind(stray.iter().map(pick).map(|i| codes[i]).collect::<Vec<_>>())
            .bind(stray.iter().map(pick).map(|i| kinds[i]).collect::<Vec<_>>())
            .bind(clock.skew())
            .bind(DeliveryStatus::Delivering)
            .bind(DeliveryStatus::Succeeded)
            .bind(DeliveryStatus::Failed)
            .fetch_all(&mut *tx)
            .await?;
        finished.extend(again);
    }
    let inserted: std::collections::HashSet<&str> =
        finished.iter().filter(|(_, _, _, written)| *written).map(|(_, _, id, _)| id.as_str()).collect();
    let written: Vec<Ticket> = records
        .iter()
        .filter(|r| inserted.contains(r.delivery_id.as_str()))
        .filter_map(|r| r.handover.clone())
        .collect();
    let finished: Vec<(String, DeliveryStatus, String)> =
        finished.into_iter().map(|(webhook, status, id, _)| (webhook, status, id)).collect();
    let updated = finished.len() as u64;
    let moved = Moved::of(records, &finished);
    // Every side effect follows from the rows the fenced update moved, never from the records alone: a delivery
    // the lease sweep already ended (or another claim took over) was announced, counted and promoted there.
    let Moved { gone, exhausted, ended, exhausted_ids } = moved;
    // The failure streak auto-disable reads, and a 410's disabling, belong to the webhook's owner.
    state::track_failures(&mut tx, &exhausted, clock.skew()).await?;
    let mut promoted = 0;
    if !gone.is_empty() {
        promoted += crate::disabling::disable(&mut tx, &gone, DisabledReason::Gone).await?.announced;
    }
    promoted += crate::operational::deliveries_exhausted(&mut tx, &exhausted_ids).await?;
    promoted += crate::ordering::promote_next(&mut tx, clock, &ended).await?;
    tx.commit().await?;
    settled.deleted();
    written.iter().for_each(Ticket::written);
    Ok(Written { updated, promoted })
}

/// What the deliveries a write moved decide beyond their own rows.
struct Moved<'a> {
    /// Webhooks that answered 410.
    gone: Vec<WebhookId>,
    /// Webhooks of deliveries that failed after their last attempt (the streak; a success ends it in the statement).
    exhausted: Vec<&'a WebhookId>,
    /// Ordered deliveries that ended, whose call's next delivery may then go.
    ended: Vec<&'a str>,
    /// Deliveries that failed after their last attempt, to announce (`delivery.exhausted`).
    exhausted_ids: Vec<&'a str>,
}

impl<'a> Moved<'a> {
    /// From the records whose delivery the update returned (`finished`: webhook, status, id).
    fn of(records: &'a [AttemptRecord], finished: &[(String, DeliveryStatus, String)]) -> Self {
        let ids: std::collections::HashSet<&str> = finished.iter().map(|(_, _, id)| id.as_str()).collect();
        let mut moved = Moved { gone: Vec::new(), exhausted: Vec::new(), ended: Vec::new(), exhausted_ids: Vec::new() };
        for r in records.iter().filter(|r| ids.contains(r.delivery_id.as_str())) {
            if r.ordered && !matches!(r.next, Next::Retry { .. }) {
                moved.ended.push(r.delivery_id.as_str());
            }
            match r.next {
                Next::Failed => {
                    moved.exhausted.push(&r.webhook_id);
                    moved.exhausted_ids.push(r.delivery_id.as_str());
                }
                Next::Gone => moved.gone.push(r.webhook_id.clone()),
                Next::Succeeded | Next::Retry { .. } => {}
            }
        }
        moved
    }
}
