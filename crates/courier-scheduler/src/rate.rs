//! Per-webhook rate limits, summed over every worker process: a delivery takes a slot of the webhook's current
//! window right before it is sent, or goes back to pending for the next window without spending an attempt.
//!
//! Windows are fixed slices of the database's clock: `capacity` slots per `window` where
//! `window = capacity × 1 s / per_second` (rounded up) and `capacity` is the smallest that makes a window at least
//! 50 ms. Any one second then overlaps at most `1 s / window + 1` windows: about `per_second + capacity` requests
//! (21 for a limit of 20).

use std::time::Duration;

use courier_core::WebhookId;
use sqlx::PgPool;

use crate::queue::defer::Line;
use crate::{Clock, Result};

/// The shortest window: shorter ones would cost a row per webhook every few milliseconds.
const MIN_WINDOW_MS: u64 = 50;

/// A webhook's limit as windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub capacity: u32,
    pub window: Duration,
}

impl Windows {
    pub fn of(per_second: u32) -> Self {
        let per_second = u64::from(per_second.max(1));
        let capacity = (per_second * MIN_WINDOW_MS).div_ceil(1000).max(1);
        // Rounded up: a window a little long only lowers the rate.
        Self { capacity: capacity as u32, window: Duration::from_millis((capacity * 1000).div_ceil(per_second)) }
    }
}

/// Takes one slot of `webhook`'s current window. `None` when taken (send now); otherwise how long until the next
/// window, for the delivery to wait as pending.
pub async fn take_slot(pool: &PgPool, clock: &Clock, webhook: &WebhookId, per_second: u32) -> Result<Option<Duration>> {
    let windows = Windows::of(per_second);
    let window_ms = i64::try_from(windows.window.as_millis()).unwrap_or(i64::MAX).max(1);
    let (granted, left_ms): (bool, f64) = sqlx::query_as(
        "WITH w AS (SELECT (extract(epoch FROM now() + $4) * 1000)::float8 AS ms),
         taken AS (
            INSERT INTO webhook_rate_windows AS r (webhook_id, window_id, used)
            SELECT $1, floor(w.ms / $2)::bigint, 1 FROM w
            ON CONFLICT (webhook_id, window_id) DO UPDATE SET used = r.used + 1 WHERE r.used < $3
            RETURNING 1
         )
         SELECT EXISTS (SELECT 1 FROM taken), $2 - (w.ms - floor(w.ms / $2) * $2) FROM w",
    )
    .bind(webhook.as_str())
    .bind(window_ms as f64)
    .bind(windows.capacity as i32)
    .bind(clock.skew())
    .fetch_one(pool)
    .await?;
    Ok((!granted).then(|| Duration::from_millis(left_ms.max(1.0).ceil() as u64)))
}

/// Where a deferred backlog's line ends: the worker paces its wake-ups until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries given slots by this deferral (the claimed one included, unless another worker moved it first).
    pub scheduled: u64,
    /// When the last slot of the line comes, on the process's clock.
    pub until: Duration,
}

/// Gives `claimed` back unattempted because its webhook's window is full, and with it every pending delivery of
/// the webhook that would come due before the next window: each gets a slot of its own, `capacity` per window,
/// from the next window or the end of the webhook's line, whichever is later. The claim then meets none of them
/// until their slot (they are not due), so a backlog behind a limit costs one write per delivery, not one claim
/// and release per window, and no other tenant's deliveries wait behind it.
pub async fn defer(
    pool: &PgPool,
    clock: &Clock,
    claimed: (&courier_core::DeliveryId, u32),
    webhook: &WebhookId,
    per_second: u32,
    next_window: Duration,
) -> Result<Backlog> {
    let windows = Windows::of(per_second);
    let mut tx = pool.begin().await?;
    // The line's end, locked: deferrals of one webhook by several workers queue up one after another.
    sqlx::query("INSERT INTO webhook_rate_backlog (webhook_id, until) VALUES ($1, '-infinity') ON CONFLICT DO NOTHING")
        .bind(webhook.as_str())
        .execute(&mut *tx)
        .await?;
    let start: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT greatest(until, now() + $2 + $3) FROM webhook_rate_backlog WHERE webhook_id = $1 FOR UPDATE",
    )
    .bind(webhook.as_str())
    .bind(clock.skew())
    .bind(next_window)
    .fetch_one(&mut *tx)
    .await?;
    let line = Line { webhook, start, capacity: windows.capacity, window: windows.window, due_before: next_window };
    let slots = crate::queue::defer::into_slots(&mut tx, clock, claimed, &line).await?;
    // Times here are the queue's clock (`now() + skew`), like every due time.
    let Some(last) = slots.iter().max().copied() else {
        tx.commit().await?;
        return Ok(Backlog { scheduled: 0, until: Duration::ZERO });
    };
    let left: f64 = sqlx::query_scalar(
        "UPDATE webhook_rate_backlog SET until = $2 + $3 WHERE webhook_id = $1
         RETURNING extract(epoch FROM until - (now() + $4))::float8",
    )
    .bind(webhook.as_str())
    .bind(last)
    .bind(windows.window)
    .bind(clock.skew())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Backlog { scheduled: slots.len() as u64, until: Duration::from_secs_f64(left.max(0.0)) })
}

/// Forgets windows older than a minute; returns how many rows went.
pub async fn forget_old_windows(pool: &PgPool) -> Result<u64> {
    // Windows differ in length per webhook; anything a minute old is past for every one of them (at most 50 s).
    let done = sqlx::query(
        "DELETE FROM webhook_rate_windows r USING webhooks w
          WHERE w.id = r.webhook_id
            AND r.window_id < floor(extract(epoch FROM now() - interval '1 minute') * 1000
                                    / (ceil(coalesce(w.rate_limit_per_second, 1) * 50 / 1000.0)
                                       * 1000.0 / coalesce(w.rate_limit_per_second, 1)))",
    )
    .execute(pool)
    .await?;
    // A line that ended a minute ago holds nothing: the next deferral starts a new one.
    sqlx::query("DELETE FROM webhook_rate_backlog WHERE until < now() - interval '1 minute'").execute(pool).await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_at_least_50_ms_and_bound_any_second() {
        assert_eq!(Windows::of(20), Windows { capacity: 1, window: Duration::from_millis(50) });
        assert_eq!(Windows::of(1), Windows { capacity: 1, window: Duration::from_millis(1000) });
        assert_eq!(Windows::of(1000), Windows { capacity: 50, window: Duration::from_millis(50) });
        for per_second in [1, 3, 7, 20, 33, 250, 10_000] {
            let w = Windows::of(per_second);
            assert!(w.window >= Duration::from_millis(MIN_WINDOW_MS) || per_second > 1000, "{per_second}: {w:?}");
            // Windows one second can overlap, times capacity: the limit plus at most two windows' worth.
            let overlapped = 1000_u32.div_ceil(w.window.as_millis() as u32) + 1;
            assert!(overlapped * w.capacity <= per_second + 2 * w.capacity, "{per_second}: {w:?}");
        }
    }
}
