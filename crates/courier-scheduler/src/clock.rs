//! The time the queue runs on: PostgreSQL's `now()`, shifted by a skew that is zero in production.
//!
//! Every time the scheduler compares or schedules (what is due, when a retry or a lease ends, how long a webhook
//! has been failing) is computed in the database, so workers whose clocks disagree still agree on the queue. Tests
//! need to step that time instead of sleeping through retry delays: they [`advance`](Clock::advance) a shared
//! clock, which moves every such statement forward and wakes the worker waiting on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Cheap to clone; clones share the skew.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew_ms: Arc<AtomicU64>,
    moved: Arc<Notify>,
}

impl Clock {
    /// The database's clock as it is: what production runs on.
    pub fn database() -> Self {
        Self::default()
    }

    /// How far this clock runs ahead of the database's.
    pub fn skew(&self) -> Duration {
        Duration::from_millis(self.skew_ms.load(Ordering::Acquire))
    }

    /// Moves the clock forward by `by` and wakes whoever waits in [`Clock::advanced`].
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::AcqRel);
        self.moved.notify_waiters();
    }

    /// Resolves when the clock is advanced (never, in production).
    pub async fn advanced(&self) {
        self.moved.notified().await;
    }
}

/// The database's clock now, for a bound the caller carries between statements (a bulk replay's start, an
/// erasure's cut-off): the same clock every comparison in SQL reads, whichever process asks.
pub async fn database_now<'e>(db: impl sqlx::PgExecutor<'e>) -> crate::Result<chrono::DateTime<chrono::Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(db).await?)
}
