//! A webhook that stops receiving: its state changes (through the store, which owns `webhooks`) and its queue is
//! cancelled in the same transaction, so nothing pending is left for an inactive webhook.

use std::time::Duration;

use courier_core::WebhookId;
use courier_store::webhooks::{DisabledReason, state};
use sqlx::{PgConnection, PgPool};

pub use crate::queue::cancel::cancel_queue;
use crate::{Clock, Result};

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
