//! Per-call ordering: a webhook with `ordering = 'call'` receives the deliveries that share a call_id one at a time,
//! in the order their events were accepted.
//!
//! Fan-out gives each such delivery a `call_seq` and makes it `waiting` when its call already has a live delivery
//! to that webhook (a waiting row has no due time, so the claim never scans it). When a delivery of a chain ends,
//! the next waiting one becomes `pending` in the same transaction ([`promote_next`]). The claim also refuses any
//! delivery with a live predecessor, so two heads of one chain (concurrent ingests of one call) still go one at a
//! time. The sweep promotes chains whose head ended while a successor was being fanned out ([`promote_stranded`]).

use sqlx::{PgConnection, PgPool};

use crate::{Clock, DeliveryStatus, Result};

/// The statuses of a delivery still to be attempted or in flight: what holds back a later delivery of its call.
pub(crate) const LIVE: [DeliveryStatus; 3] =
    [DeliveryStatus::Waiting, DeliveryStatus::Pending, DeliveryStatus::Delivering];

/// The statuses a delivery ends in.
const FINAL: [DeliveryStatus; 3] = [DeliveryStatus::Succeeded, DeliveryStatus::Failed, DeliveryStatus::Cancelled];

/// For every chain one of `ended` belongs to, if that delivery is final now and the chain's earliest live delivery
/// is waiting, makes it pending. (A fenced write that lost its lease leaves the delivery live: nothing moves.)
/// Returns how many were promoted (each needs a wake-up).
pub(crate) async fn promote_next(conn: &mut PgConnection, clock: &Clock, ended: &[&str]) -> Result<u64> {
    if ended.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "WITH chains AS (
            SELECT DISTINCT webhook_id, call_id FROM deliveries
             WHERE id = ANY ($1) AND call_seq IS NOT NULL AND status = ANY ($6)
         ),
         head AS (
            SELECT DISTINCT ON (s.webhook_id, s.call_id) s.id, s.status
              FROM chains c JOIN deliveries_live s ON s.webhook_id = c.webhook_id AND s.call_id = c.call_id
             WHERE s.call_seq IS NOT NULL AND s.status = ANY ($4)
             ORDER BY s.webhook_id, s.call_id, s.call_seq
         )
         UPDATE deliveries_live d SET status = $3, next_attempt_at = now() + $2, updated_at = now()
           FROM head WHERE d.id = head.id AND head.status = $5",
    )
    .bind(ended)
    .bind(clock.skew())
    .bind(DeliveryStatus::Pending)
    .bind(LIVE)
    .bind(DeliveryStatus::Waiting)
    .bind(FINAL)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Promotes waiting deliveries that no live delivery precedes: a chain whose head ended while its successor was
/// being fanned out in a concurrent transaction (neither saw the other). Returns how many.
pub async fn promote_stranded(pool: &PgPool, clock: &Clock) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE deliveries_live s SET status = $1, next_attempt_at = now() + $2, updated_at = now()
          WHERE s.status = $3 AND s.call_seq IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM deliveries_live p
                             WHERE p.webhook_id = s.webhook_id AND p.call_id = s.call_id AND p.call_seq IS NOT NULL
                               AND p.call_seq < s.call_seq AND p.status = ANY ($4))",
    )
    .bind(DeliveryStatus::Pending)
    .bind(clock.skew())
    .bind(DeliveryStatus::Waiting)
    .bind(LIVE)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
