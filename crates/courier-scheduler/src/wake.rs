//! Wake-ups: `NOTIFY` on new due work, so an idle worker starts within milliseconds.
//! A lost notification only costs latency: workers also poll.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::Result;

/// The channel fan-out, replay and retries notify.
pub const CHANNEL: &str = "courier_deliveries";

/// Listens for new work. Reconnects by itself when the connection drops (then the poll covers the gap).
pub struct Wakeup {
    listener: PgListener,
}

impl Wakeup {
    pub async fn connect(pool: &PgPool) -> Result<Self> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Self { listener })
    }

    /// Waits for a notification or `timeout`, whichever comes first; drains any others already queued.
    pub async fn wait(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout(timeout, self.listener.try_recv()).await {
            Ok(Ok(Some(_))) => while self.listener.next_buffered().is_some() {},
            // The connection dropped (it reconnects on the next call): fall back to the poll interval.
            Ok(Ok(None) | Err(_)) => tokio::time::sleep_until(deadline).await,
            Err(_elapsed) => {}
        }
    }
}

/// Tells listening workers there is due work (used after a replay or a lease release).
pub async fn notify(db: impl sqlx::PgExecutor<'_>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(db).await?;
    Ok(())
}
