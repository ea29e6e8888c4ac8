//! A webhook that stops receiving: its state changes (through the store, which owns `webhooks`) and its queue is
//! cancelled in the same transaction, so nothing pending is left for an inactive webhook.

use std::time::Duration;

use courier_core::WebhookId;
use courier_store::webhooks::{DisabledReason, state};
use sqlx::{PgConnection, PgPool};

use crate::{Clock, DeliveryStatus, Result};

/// What [`disable`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    /// The ids that exist (see [`state::disable`]), now disabled.
    pub webhooks: Vec<WebhookId>,
    /// Pending deliveries cancelled.
    pub cancelled: u64,
    /// Deliveries of `webhook.disabled` queued for the webhooks that were enabled until now.
    pub announced: u64,
}

/// Disables these webhooks for `reason`, cancels their pending deliveries (in-flight ones finish their attempt and
/// are cancelled when next claimed) and announces `webhook.disabled` for those that were enabled.
pub async fn disable(conn: &mut PgConnection, ids: &[WebhookId], reason: DisabledReason) -> Result<Disabled> {
    let found = state::disable(&mut *conn, ids, reason).await?;
    let cancelled = cancel_queue(&mut *conn, &found.existing).await?;
    let announced = crate::operational::webhooks_disabled(conn, &found.newly, reason).await?;
    Ok(Disabled { webhooks: found.existing, cancelled, announced })
}

/// Cancels every pending (or waiting) delivery of these webhooks (they were deleted or disabled in this
/// transaction).
pub async fn cancel_queue(conn: &mut PgConnection, webhooks: &[WebhookId]) -> Result<u64> {
    if webhooks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = webhooks.iter().map(WebhookId::as_str).collect();
    // Under a savepoint of its own, so a row claimed and finished meanwhile (moved out of the queue: SQLSTATE
    // 40001) costs a second run of this statement, not the caller's whole transaction.
    let mut runs = 0;
    loop {
        runs += 1;
        let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
        let done = sqlx::query(
            "UPDATE deliveries SET status = $2, next_attempt_at = NULL, updated_at = now()
             WHERE webhook_id = ANY ($1) AND status = ANY ($3)",
        )
        .bind(&ids)
        .bind(DeliveryStatus::Cancelled)
        .bind([DeliveryStatus::Pending, DeliveryStatus::Waiting])
        .execute(&mut *savepoint)
        .await;
        match done {
            Ok(done) => {
                savepoint.commit().await?;
                return Ok(done.rows_affected());
            }
            Err(err) if runs < 5 && crate::row_moved(&err) => savepoint.rollback().await?,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Disables webhooks whose deliveries have all failed for good for longer than `after`, with at least
/// `min_exhausted` exhausted deliveries, and cancels their queues; returns how many were disabled.
pub async fn disable_failing(pool: &PgPool, clock: &Clock, after: Duration, min_exhausted: u32) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let disabled = state::disable_failing(&mut tx, after, min_exhausted, clock.skew()).await?;
    if !disabled.is_empty() {
        cancel_queue(&mut tx, &disabled).await?;
        crate::operational::webhooks_disabled(&mut tx, &disabled, DisabledReason::Failing).await?;
        tracing::warn!(webhooks = ?disabled, "disabled webhooks that kept failing");
    }
    tx.commit().await?;
    Ok(disabled.len() as u64)
}
