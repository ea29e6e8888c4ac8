//! A claim's lease: giving deliveries back unattempted, cancelling ones whose webhook turned inactive, and failing
//! those whose worker died after its last allowed attempt. Every update is fenced on the attempt number.

use std::time::Duration;

use courier_core::{DeliveryId, ErrorKind};
use sqlx::PgPool;

use crate::{Clock, DeliveryStatus, Result};

/// Claimed deliveries as the two arrays a fenced `UPDATE … FROM unnest($1, $2)` takes: ids and attempt numbers.
fn fencing_arrays(claimed: &[(DeliveryId, u32)]) -> (Vec<&str>, Vec<i32>) {
    claimed.iter().map(|(id, attempt)| (id.as_str(), *attempt as i32)).unzip()
}

/// Gives claimed deliveries back unattempted (shutdown, or a saturated webhook): pending again after `after`,
/// with the attempt this claim counted taken back.
pub async fn release(pool: &PgPool, clock: &Clock, claimed: &[(DeliveryId, u32)], after: Duration) -> Result<u64> {
    crate::retry_moved(|| release_once(pool, clock, claimed, after)).await
}

async fn release_once(pool: &PgPool, clock: &Clock, claimed: &[(DeliveryId, u32)], after: Duration) -> Result<u64> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts) = fencing_arrays(claimed);
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
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Cancels claimed deliveries whose webhook turned out to be inactive, without an attempt.
pub async fn cancel_claimed(pool: &PgPool, clock: &Clock, claimed: &[(DeliveryId, u32)]) -> Result<u64> {
    crate::retry_moved(|| cancel_claimed_once(pool, clock, claimed)).await
}

async fn cancel_claimed_once(pool: &PgPool, clock: &Clock, claimed: &[(DeliveryId, u32)]) -> Result<u64> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts) = fencing_arrays(claimed);
    let mut tx = pool.begin().await?;
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
