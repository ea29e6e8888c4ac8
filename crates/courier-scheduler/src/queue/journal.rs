//! The journal of deliveries handed over in memory (`crate::handover`, migration 0028): what stands for them in
//! the database until each is written once, by its first attempt's record, a release or a cancel, or, after a
//! crash, by the sweep here.
//!
//! Fan-out ([`super::enqueue::store_and_fan_out`]) writes one row per fan-out, its deliveries as arrays. Whatever writes one
//! of them takes the row `FOR KEY SHARE` in the statement that inserts the delivery; [`recover`] takes the row
//! `FOR UPDATE` (skipping rows held) and only then, in its next statement, looks for what is missing. So a delivery
//! is written by its worker or by the sweep, never both: a worker that comes after the sweep finds no row, inserts
//! nothing, and its record falls back to the fenced update of the row the sweep wrote, as any late record does.

use courier_core::ErrorKind;
use sqlx::{PgConnection, PgPool};

use crate::{Clock, DeliveryStatus, Result};

/// The deliveries of journal rows `h`, as `x`, for `concat!` after a FROM that names `h`.
macro_rules! journal_deliveries {
    () => {
        "unnest(h.delivery_ids, h.event_ids, h.webhook_ids, h.event_types, h.call_ids, h.max_attempts,
                h.trace_parents, h.include_transcript, h.include_metrics)
           AS x(id, event_id, webhook_id, event_type, call_id, max_attempts, trace_parent, include_transcript,
                include_metrics)"
    };
}
pub(crate) use journal_deliveries;

/// The columns of `deliveries` a journal's delivery fills, for `concat!`; [`journal_values`] is the matching list
/// less status, attempt count and lease, which follow it.
macro_rules! journal_columns {
    () => {
        "id, tenant_id, environment, event_id, webhook_id, event_type, call_id, max_attempts, trace_parent,
         include_transcript, include_metrics, created_at, event_received_at, status, attempt_count, lease_expires_at"
    };
}
pub(crate) use journal_columns;

/// The values of [`journal_columns`] from `h` and `x` up to `event_received_at`: a handed-over delivery's id names its
/// event's millisecond, which is its event's `received_at` exactly (migration 0023; the journal is younger).
macro_rules! journal_values {
    () => {
        "x.id, h.tenant_id, h.environment, x.event_id, x.webhook_id, x.event_type, x.call_id, x.max_attempts,
         x.trace_parent, x.include_transcript, x.include_metrics, h.created_at, courier_id_time(x.id)"
    };
}
pub(crate) use journal_values;

/// A delivery handed over and not written yet: its id and its journal row.
pub type Unwritten<'a> = (&'a str, i64);

/// Writes these handed-over deliveries as the claim would have left them (`delivering`, attempt 1, the handover's
/// lease), for a release or a cancel to move them on in the same transaction. Returns the ids written: one whose
/// journal row the sweep already took, or that its record wrote already (an attempt recorded just before a
/// shutdown released it), is in `deliveries`, and is not among them.
pub async fn write_leased(conn: &mut PgConnection, unwritten: &[Unwritten<'_>]) -> Result<Vec<String>> {
    if unwritten.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, journals): (Vec<&str>, Vec<i64>) = unwritten.iter().copied().unzip();
    let written = sqlx::query_scalar(concat!(
        "INSERT INTO deliveries (",
        journal_columns!(),
        ") SELECT ",
        journal_values!(),
        ", $3, 1, h.lease_expires_at
           FROM (SELECT * FROM delivery_handovers WHERE id = ANY ($2) FOR KEY SHARE) h, ",
        journal_deliveries!(),
        " WHERE x.id = ANY ($1) AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)
         RETURNING id"
    ))
    .bind(&ids)
    .bind(&journals)
    .bind(DeliveryStatus::Delivering)
    .fetch_all(conn)
    .await?;
    Ok(written)
}

/// Journal rows whose lease ran out at most this many at a time.
const RECOVER_BATCH: i64 = 100;

/// The sweep: for journal rows whose lease ran out, writes the deliveries not written yet as the claim would have
/// left them (`delivering`, attempt 1, the lease run out), so any worker claims them again and the lease sweep fails
/// those with no attempt left ([`ErrorKind::LeaseExpired`]), and deletes the rows. Returns how many deliveries it
/// wrote (wake the workers).
pub async fn recover(pool: &PgPool, clock: &Clock) -> Result<u64> {
    let mut written = 0;
    loop {
        let (rows, deliveries) = recover_batch(pool, clock).await?;
        written += deliveries;
        if rows < RECOVER_BATCH as usize {
            return Ok(written);
        }
    }
}

/// One batch of [`recover`]: how many journal rows it took, and how many deliveries it wrote.
async fn recover_batch(pool: &PgPool, clock: &Clock) -> Result<(usize, u64)> {
    let mut tx = sqlx::Acquire::begin(pool).await?;
    // Taken first, skipping rows a worker is writing from: once this commits, a worker finds no row and writes
    // nothing. What the workers wrote before is visible to the next statement, which takes a snapshot of its own.
    let expired: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM delivery_handovers WHERE lease_expires_at <= now() + $1
          ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(clock.skew())
    .bind(RECOVER_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if expired.is_empty() {
        return Ok((0, 0));
    }
    let written: i64 = sqlx::query_scalar(concat!(
        "WITH h AS (DELETE FROM delivery_handovers WHERE id = ANY ($1) RETURNING *),
              written AS (
                INSERT INTO deliveries (",
        journal_columns!(),
        ") SELECT ",
        journal_values!(),
        ", $2, 1, h.lease_expires_at FROM h, ",
        journal_deliveries!(),
        "  WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)
                RETURNING id)
         SELECT count(*) FROM written"
    ))
    .bind(&expired)
    .bind(DeliveryStatus::Delivering)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if written > 0 {
        tracing::warn!(
            deliveries = written,
            journal_rows = expired.len(),
            error = ErrorKind::LeaseExpired.as_str(),
            "handed-over deliveries whose lease ran out unrecorded were written back to the queue"
        );
    }
    Ok((expired.len(), written as u64))
}

/// How many deliveries are handed over and not written yet: in flight, though not in `deliveries`.
pub async fn unwritten(db: impl sqlx::PgExecutor<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM delivery_handovers h, unnest(h.delivery_ids) AS x(id)
          WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)",
    )
    .fetch_one(db)
    .await?)
}
