//! The batch recorder: one task writes every finished attempt of this process, many to a transaction.

use std::time::Duration;

use courier_scheduler::wake::Notifier;
use courier_scheduler::{AttemptRecord, Clock};
use sqlx::PgPool;
use tokio::sync::mpsc;

/// Writes attempt records in batches: whatever has arrived, up to 500, in one transaction. A batch PostgreSQL
/// refuses for its data is split by the scheduler, so only an unreachable database makes it wait, with backoff.
pub(crate) async fn record_batches(
    pool: PgPool,
    clock: Clock,
    workers: Notifier,
    mut rx: mpsc::Receiver<AttemptRecord>,
) {
    let mut batch = Vec::with_capacity(500);
    while rx.recv_many(&mut batch, 500).await > 0 {
        let mut backoff = Duration::from_millis(100);
        loop {
            match courier_scheduler::record(&pool, &clock, &batch).await {
                Ok(recorded) => {
                    crate::metrics::recorded(&recorded);
                    // Deliveries that waited for an earlier one of their call are due now, in any process.
                    if recorded.promoted > 0 {
                        workers.wake();
                    }
                    break;
                }
                Err(err) => {
                    // The attempts happened; keep them until the database takes them (their leases protect them).
                    tracing::error!(error = %err, count = batch.len(), "recording attempts failed; retrying");
                    metrics::counter!("courier_attempt_record_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}
