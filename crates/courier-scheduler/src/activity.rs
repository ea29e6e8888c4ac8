//! A tenant's recent delivery activity per webhook: what the portal's overview charts.

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use courier_core::WebhookId;
use courier_store::Owner;
use sqlx::PgPool;

use crate::{Result, corrupt};

/// How far back the overview looks, in hours.
pub const HOURS: i64 = 24;

/// One webhook's last [`HOURS`] hours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Oldest hour first, exactly [`HOURS`] of them: deliveries that succeeded / failed for good in that hour.
    pub hourly: Vec<HourCount>,
    /// When its newest delivery was created (at any time, not only in the window).
    pub last_delivery: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourCount {
    pub hour: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
}

impl Activity {
    /// Succeeded out of finished (succeeded or failed) over the window; `None` when nothing finished.
    pub fn success_rate(&self) -> Option<f64> {
        let (ok, failed) = self.hourly.iter().fold((0u64, 0u64), |(o, f), h| (o + h.succeeded, f + h.failed));
        (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64)
    }
}

/// The activity of each of `webhooks` (the owner's; others come back empty) over the [`HOURS`] hours up to now:
/// deliveries by the hour they finished, from `delivery_hourly` (a few dozen rows per webhook whatever the traffic),
/// and the newest delivery through the webhook index.
pub async fn recent(pool: &PgPool, owner: Owner, webhooks: &[WebhookId]) -> Result<HashMap<WebhookId, Activity>> {
    let now = crate::clock::database_now(pool).await?;
    let first_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now) - Duration::hours(HOURS - 1);
    let ids: Vec<&str> = webhooks.iter().map(WebhookId::as_str).collect();
    let counts: Vec<(String, DateTime<Utc>, i32, i32)> = sqlx::query_as(
        "SELECT h.webhook_id, h.hour, h.succeeded, h.failed
           FROM delivery_hourly h JOIN webhooks w ON w.id = h.webhook_id
          WHERE h.webhook_id = ANY ($1) AND w.tenant_id = $2 AND w.environment = $3 AND h.hour >= $4",
    )
    .bind(&ids)
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(first_hour)
    .fetch_all(pool)
    .await?;
    let last: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT w.id, (SELECT d.created_at FROM deliveries d
                              WHERE d.webhook_id = w.id AND d.tenant_id = $2 ORDER BY d.id DESC LIMIT 1)
           FROM unnest($1::text[]) AS w(id)",
    )
    .bind(&ids)
    .bind(owner.tenant.as_uuid())
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<WebhookId, Activity> = HashMap::new();
    for webhook in webhooks {
        let hourly =
            (0..HOURS).map(|i| HourCount { hour: first_hour + Duration::hours(i), succeeded: 0, failed: 0 }).collect();
        out.insert(webhook.clone(), Activity { hourly, last_delivery: None });
    }
    for (id, hour, succeeded, failed) in counts {
        let id = WebhookId::parse(&id).map_err(corrupt(format!("delivery of {id}"), "webhook_id"))?;
        let Some(activity) = out.get_mut(&id) else { continue };
        if let Some(slot) = activity.hourly.iter_mut().find(|h| h.hour == hour) {
            slot.succeeded = u64::try_from(succeeded).unwrap_or(0);
            slot.failed = u64::try_from(failed).unwrap_or(0);
        }
    }
    for (id, at) in last {
        if let Some(activity) = WebhookId::parse(&id).ok().and_then(|id| out.get_mut(&id)) {
            activity.last_delivery = at;
        }
    }
    Ok(out)
}
