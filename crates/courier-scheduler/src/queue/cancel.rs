//! Cancelling a webhook's queue, in the transaction that deletes or disables the webhook.

use courier_core::WebhookId;
use sqlx::PgConnection;

use crate::{DeliveryStatus, Result};

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
