//! A rate-limited webhook's side of the delivery loop: take a slot right before sending, or give the delivery back
//! with the webhook's due backlog (`courier_scheduler::rate`) and pace this worker's wake-ups along its line.

use std::time::Duration;

use courier_core::WebhookId;
use courier_scheduler::{ClaimedDelivery, rate};

use crate::runner::Worker;

impl Worker {
    /// `None` when the delivery may go now; otherwise how long until its webhook's next window.
    pub(crate) async fn over_rate(&self, delivery: &ClaimedDelivery, per_second: u32) -> Option<Duration> {
        match rate::take_slot(&self.pool, &self.clock, &delivery.webhook.id, per_second).await {
            Ok(wait) => wait,
            Err(err) => {
                // Unknown, so not sent: the limit is a promise to the receiver.
                tracing::warn!(error = %err, "taking a rate-limit slot failed; the delivery waits");
                Some(Duration::from_millis(100))
            }
        }
    }

    /// Gives a delivery back unattempted, with the rest of its webhook's due backlog, each to a slot of its own
    /// (`rate::defer`), and paces this worker's wake-ups along the line.
    pub(crate) async fn defer(&self, delivery: &ClaimedDelivery, per_second: u32, next_window: Duration) {
        crate::metrics::rate_limited();
        let claimed = (&delivery.id, delivery.attempt);
        match rate::defer(&self.pool, &self.clock, claimed, &delivery.webhook.id, per_second, next_window).await {
            Ok(backlog) => self.pace(&delivery.webhook.id, per_second, next_window, backlog.until),
            Err(err) => tracing::warn!(error = %err, "deferring a rate-limited delivery failed; its lease will expire"),
        }
    }

    /// Wakes this worker once a window until the webhook's line ends: one task per webhook however long its
    /// backlog (a later deferral only moves the end), so slots are claimed as they come due, not a poll later.
    fn pace(&self, webhook: &WebhookId, per_second: u32, first: Duration, line: Duration) {
        let ends = tokio::time::Instant::now() + line;
        {
            let mut pacers = self.pacers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(end) = pacers.get_mut(webhook) {
                *end = (*end).max(ends);
                return;
            }
            pacers.insert(webhook.clone(), ends);
        }
        let window = rate::Windows::of(per_second).window;
        let (pacers, local, webhook) = (self.pacers.clone(), self.local.clone(), webhook.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, window);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                local.wake();
                let mut pacers = pacers.lock().unwrap_or_else(|e| e.into_inner());
                if pacers.get(&webhook).is_none_or(|end| tokio::time::Instant::now() >= *end) {
                    pacers.remove(&webhook);
                    return;
                }
            }
        });
    }
}
