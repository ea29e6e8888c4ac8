//! Cancelling: deliveries of a webhook that was deleted or disabled stop where they are.

use courier_core::{DeliveryId, WebhookId};
use sqlx::{PgConnection, PgPool};

use crate::Result;

/// Cancels every pending delivery of these webhooks; in-flight ones finish their attempt and are cancelled when
/// next claimed. Call it in the transaction that disables or deletes the webhook.
pub async fn cancel_for_webhook(conn: &mut PgConnection, webhook: &WebhookId) -> Result<u64> {
    cancel_pending_of(conn, &[webhook.as_str()]).await
}

pub(crate) async fn cancel_pending_of(conn: &mut PgConnection, webhooks: &[&str]) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = now()
         WHERE webhook_id = ANY ($1) AND status = 'pending'",
    )
    .bind(webhooks)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Cancels claimed deliveries whose webhook turned out to be inactive, without an attempt.
pub async fn cancel_claimed(pool: &PgPool, claimed: &[(DeliveryId, u32)]) -> Result<u64> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts) = crate::claim::fencing_arrays(claimed);
    let done = sqlx::query(
        "UPDATE deliveries d
            SET status = 'cancelled', attempt_count = d.attempt_count - 1, lease_expires_at = NULL, updated_at = now()
           FROM unnest($1::text[], $2::int[]) AS c(id, attempt)
          WHERE d.id = c.id AND d.status = 'delivering' AND d.attempt_count = c.attempt",
    )
    .bind(&ids)
    .bind(&attempts)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Disables webhooks whose deliveries have all failed for good for longer than `after`, with at least
/// `min_exhausted` exhausted deliveries, and cancels their queues; returns how many were disabled.
pub async fn auto_disable_failing(pool: &PgPool, after: std::time::Duration, min_exhausted: u32) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let disabled: Vec<String> = sqlx::query_scalar(
        "UPDATE webhooks SET status = 'disabled', disabled_reason = 'failing', updated_at = now()
         WHERE status = 'enabled' AND deleted_at IS NULL AND failing_since <= now() - $1
           AND exhausted_since_failing >= $2
         RETURNING id",
    )
    .bind(after)
    .bind(min_exhausted as i32)
    .fetch_all(&mut *tx)
    .await?;
    if !disabled.is_empty() {
        let ids: Vec<&str> = disabled.iter().map(String::as_str).collect();
        cancel_pending_of(&mut tx, &ids).await?;
        tracing::warn!(webhooks = ?ids, "disabled webhooks that kept failing");
    }
    tx.commit().await?;
    Ok(disabled.len() as u64)
}
