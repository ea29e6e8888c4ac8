//! Recording attempts: many deliveries per transaction, fenced by the attempt number so a worker that lost its
//! lease cannot overwrite the newer claim's outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::{AttemptResult, DeliveryId, Next, WebhookId};
use sqlx::PgPool;

use crate::Result;

/// The most of a receiver's answer kept on record.
pub const MAX_RESPONSE_BODY: usize = 4096;

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
    /// Truncated to [`MAX_RESPONSE_BODY`] bytes on a character boundary when recorded.
    pub response_body: Option<String>,
    pub signature_timestamp: i64,
    pub next: Next,
}

fn truncate(body: &str) -> &str {
    if body.len() <= MAX_RESPONSE_BODY {
        return body;
    }
    let mut end = MAX_RESPONSE_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

/// Records a batch of attempts and applies their decisions in one transaction.
/// Returns how many deliveries the batch still held the lease of (the rest were reclaimed by another worker;
/// their attempts are recorded all the same, because they happened).
pub async fn record(pool: &PgPool, records: &[AttemptRecord]) -> Result<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let n = records.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut codes: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut kinds: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut messages = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut timestamps = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut next_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut gone: Vec<&str> = Vec::new();
    let mut exhausted: Vec<&str> = Vec::new();
    let mut succeeded: Vec<&str> = Vec::new();
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
        messages.push(r.error_message.as_deref());
        bodies.push(r.response_body.as_deref().map(truncate));
        timestamps.push(r.signature_timestamp);
        let (status, at) = match r.next {
            Next::Succeeded => {
                succeeded.push(r.webhook_id.as_str());
                ("succeeded", None)
            }
            Next::Retry { after } => {
                ("pending", Some(now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)))
            }
            Next::Failed => {
                exhausted.push(r.webhook_id.as_str());
                ("failed", None)
            }
            Next::Gone => {
                gone.push(r.webhook_id.as_str());
                ("failed", None)
            }
        };
        statuses.push(status);
        next_at.push(at);
    }

    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error_kind,
                                        error_message, response_body, signature_timestamp)
         SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], $7::text[],
                              $8::text[], $9::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&started)
    .bind(&durations)
    .bind(&codes)
    .bind(&kinds)
    .bind(&messages)
    .bind(&bodies)
    .bind(&timestamps)
    .execute(&mut *tx)
    .await?;
    let updated = sqlx::query(
        "UPDATE deliveries d
            SET status = u.status, next_attempt_at = u.next_at, lease_expires_at = NULL,
                last_status_code = u.code, last_error = u.kind, updated_at = now()
           FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
                AS u(id, attempt, status, next_at, code, kind)
          WHERE d.id = u.id AND d.status = 'delivering' AND d.attempt_count = u.attempt",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&statuses)
    .bind(&next_at)
    .bind(&codes)
    .bind(&kinds)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if !exhausted.is_empty() {
        // Start (or continue) the webhook's failing streak; auto-disable reads it.
        sqlx::query(
            "UPDATE webhooks w SET failing_since = COALESCE(w.failing_since, now()),
                    exhausted_since_failing = w.exhausted_since_failing + f.n
               FROM (SELECT id, count(*)::int AS n FROM unnest($1::text[]) AS id GROUP BY id) AS f
              WHERE w.id = f.id",
        )
        .bind(&exhausted)
        .execute(&mut *tx)
        .await?;
    }
    if !succeeded.is_empty() {
        // Any success ends the streak. Healthy webhooks have no streak, so this writes nothing for them.
        sqlx::query(
            "UPDATE webhooks SET failing_since = NULL, exhausted_since_failing = 0
             WHERE id = ANY ($1) AND failing_since IS NOT NULL",
        )
        .bind(&succeeded)
        .execute(&mut *tx)
        .await?;
    }
    if !gone.is_empty() {
        sqlx::query(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = 'gone', updated_at = now()
             WHERE id = ANY ($1) AND status = 'enabled'",
        )
        .bind(&gone)
        .execute(&mut *tx)
        .await?;
        crate::lifecycle::cancel_pending_of(&mut tx, &gone).await?;
    }
    tx.commit().await?;
    Ok(updated)
}
