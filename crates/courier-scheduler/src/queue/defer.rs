//! Deferring a rate-limited webhook's deliveries: each to a slot of its own in the webhook's line.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, WebhookId};
use sqlx::PgConnection;

use crate::{Clock, DeliveryStatus, Result};

/// Where a webhook's line of slots starts and how it runs: `capacity` deliveries per `window` from `start`; what is
/// due before `due_before` (from now, on the queue's clock) joins it.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub webhook: &'a WebhookId,
    pub start: DateTime<Utc>,
    pub capacity: u32,
    pub window: Duration,
    pub due_before: Duration,
}

/// Gives `claimed` (its attempt number counted by the claim) back unattempted, and with it every pending delivery of
/// the line's webhook due before `due_before`: each pending at a slot of its own, in due order. Returns the slots
/// given, in the queue's time.
pub async fn into_slots(
    conn: &mut PgConnection,
    clock: &Clock,
    claimed: (&DeliveryId, u32),
    line: &Line<'_>,
) -> Result<Vec<DateTime<Utc>>> {
    let slots: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "WITH
         -- The claimed delivery itself, waiting for its lock: another claim may hold it for a moment (a row it
         -- read as due before this one's claim committed), and skipping it would strand its counted attempt.
         own AS (
            SELECT d.id, d.due_at FROM deliveries_live d
             WHERE d.id = $4 AND d.status = $5 AND d.attempt_count = $6
             FOR UPDATE
         ),
         -- Due before the next window: what the claim would otherwise meet again and again. Rows already slotted
         -- further on keep their place in the line; rows a claim holds right now are that claim's.
         others AS (
            SELECT d.id, d.due_at FROM deliveries_live d
             WHERE d.webhook_id = $1 AND d.status = $2 AND d.due_at < now() + $9 + $10
             FOR UPDATE SKIP LOCKED
         ),
         line AS (SELECT * FROM own UNION ALL SELECT * FROM others),
         slotted AS (
            SELECT id, (row_number() OVER (ORDER BY due_at, id) - 1) / $7 AS n FROM line
         )
         UPDATE deliveries_live d
            SET status = $2, lease_expires_at = NULL, updated_at = now(),
                -- The claimed one counted an attempt it never made.
                attempt_count = CASE WHEN d.status = $5 THEN d.attempt_count - 1 ELSE d.attempt_count END,
                next_attempt_at = $3 + slotted.n * $8
           FROM slotted
          WHERE d.id = slotted.id
         RETURNING d.next_attempt_at",
    )
    .bind(line.webhook.as_str())
    .bind(DeliveryStatus::Pending)
    .bind(line.start)
    .bind(claimed.0.as_str())
    .bind(DeliveryStatus::Delivering)
    .bind(claimed.1 as i32)
    .bind(i64::from(line.capacity))
    .bind(line.window)
    .bind(clock.skew())
    .bind(line.due_before)
    .fetch_all(conn)
    .await?;
    Ok(slots)
}
