//! A claim's lease: giving deliveries back unattempted, cancelling ones whose webhook turned inactive, and failing
//! those whose worker died after its last allowed attempt. Every update is fenced on the attempt number.

use std::time::Duration;

use courier_core::{DeliveryId, ErrorKind};
use sqlx::{PgConnection, PgPool};

use crate::handover::Ticket;
use crate::{Clock, DeliveryStatus, Result};

/// A delivery a worker holds: its id, the attempt number its lease fences on, and for one ingest handed over, the
/// ticket of the journal row that stands for it until it is written.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: DeliveryId,
    pub attempt: u32,
    pub handover: Option<Ticket>,
}

/// Claimed deliveries as the two arrays a fenced `UPDATE … FROM unnest($1, $2)` takes: ids and attempt numbers.
fn fencing_arrays(claimed: &[Leased]) -> (Vec<&str>, Vec<i32>) {
    claimed.iter().map(|l| (l.id.as_str(), l.attempt as i32)).unzip()
}

/// Writes the handed-over deliveries among `claimed` that are not written yet, as the claim would have left them,
/// so the fenced update that follows in the same transaction moves them on. Returns their tickets, to mark written
/// once the transaction commits.
async fn write_handed<'a>(conn: &mut PgConnection, claimed: &'a [Leased]) -> Result<Vec<&'a Ticket>> {
    let unwritten: Vec<(&str, i64)> =
        claimed.iter().filter_map(|l| l.handover.as_ref().map(|t| (l.id.as_str(), t.journal()))).collect();
    let written = super::journal::write_leased(conn, &unwritten).await?;
    Ok(claimed
        .iter()
        .filter(|l| written.iter().any(|id| id == l.id.as_str()))
        .filter_map(|l| l.handover.as_ref())
        .collect())
}

/// Gives claimed deliveries back unattempted (shutdown, or a saturated webhook): pending again after `after`,
/// with the attempt this claim counted taken back.
pub async fn release(pool: &PgPool, clock: &Clock, claimed: &[Leased], after: Duration) -> Result<u64> {
    crate::retry_moved(|| release_once(pool, clock, claimed, after)).await
}

async fn release_once(pool: &PgPool, clock: &Clock, claimed: &[Leased], after: Duration) -> Result<u64> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts) = fencing_arrays(claimed);
    let mut tx = pool.begin().await?;
    let written = write_handed(&mut tx, claimed).await?;
    let done = sqlx::query(
        "UPDATE deliveries d
            SET status = $4, attempt_count = d.attempt_count - 1, lease_expires_at = NULL,
                next_attempt_at = now() + $5 + $3, updated_at = now()
           FROM unnest($1::text[], $2::int[]) AS c(id, attempt)
          WHERE d.id = c.id AND d.status = $6 AND d.attempt_count = c.attempt",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(after)
    .bind(DeliveryStatus::Pending)
    .bind(clock.skew())
    .bind(DeliveryStatus::Delivering)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    written.into_iter().for_each(Ticket::written);
    Ok(done.rows_affected())
}

/// Cancels claimed deliveries whose webhook turned out to be inactive, without an attempt.
pub async fn cancel_claimed(pool: &PgPool, clock: &Clock, claimed: &[Leased]) -> Result<u64> {
    crate::retry_moved(|| cancel_claimed_once(pool, clock, claimed)).await
}

async fn cancel_claimed_once(pool: &PgPool, clock: &Clock, claimed: &[Leased]) -> Result<u64> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts) = fencing_arrays(claimed);
    let mut tx = pool.begin().await?;
    let written = write_handed(&mut tx, claimed).await?;
    let cancelled: Vec<String> = sqlx::query_scalar(
        "UPDATE deliveries d
            SET status = $3, attempt_count = d.attempt_count - 1, lease_expires_at = NULL, updated_at = now()
           FROM unnest($1::text[], $2::int[]) AS c(id, attempt)
          WHERE d.id = c.id AND d.status = $4 AND d.attempt_count = c.attempt
         RETURNING d.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(DeliveryStatus::Cancelled)
    .bind(DeliveryStatus::Delivering)
    .fetch_all(&mut *tx)
    .await?;
    let ended: Vec<&str> = cancelled.iter().map(String::as_str).collect();
    crate::ordering::promote_next(&mut tx, clock, &ended).await?;
    tx.commit().await?;
    written.into_iter().for_each(Ticket::written);
    Ok(cancelled.len() as u64)
}

/// Fails deliveries whose lease ran out after their last allowed attempt: the worker that held them died after
/// sending, so the attempt budget is spent ([`ErrorKind::LeaseExpired`]). Returns how many.
pub async fn fail_exhausted_leases(pool: &PgPool, clock: &Clock) -> Result<u64> {
    // A lease recorded late or cancelled meanwhile leaves the queue under the sweep's feet: run it again without.
    crate::retry_moved(|| fail_exhausted_leases_once(pool, clock)).await
}

async fn fail_exhausted_leases_once(pool: &PgPool, clock: &Clock) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let failed: Vec<(String, String)> = sqlx::query_as(
        "UPDATE deliveries SET status = $1, lease_expires_at = NULL, updated_at = now(),
                last_error = COALESCE(last_error, $2)
         WHERE due_at <= now() + $4 AND status = $3 AND attempt_count >= max_attempts
         RETURNING id, webhook_id",
    )
    .bind(DeliveryStatus::Failed)
    .bind(ErrorKind::LeaseExpired.as_str())
    .bind(DeliveryStatus::Delivering)
    .bind(clock.skew())
    .fetch_all(&mut *tx)
    .await?;
    let ended: Vec<&str> = failed.iter().map(|(id, _)| id.as_str()).collect();
    let counted: Vec<(String, DeliveryStatus)> =
        failed.iter().map(|(_, webhook)| (webhook.clone(), DeliveryStatus::Failed)).collect();
    crate::hourly::add(&mut tx, &counted).await?;
    crate::ordering::promote_next(&mut tx, clock, &ended).await?;
    crate::operational::deliveries_exhausted(&mut tx, &ended).await?;
    tx.commit().await?;
    Ok(failed.len() as u64)
}
