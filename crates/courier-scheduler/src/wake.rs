//! Wake-ups: `NOTIFY` on new due work, so an idle worker starts within milliseconds.
//! A lost notification only costs latency: workers also poll.

use std::time::Duration;

use tokio::sync::mpsc;

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

/// Wakes listening workers after commits that made deliveries due, from outside those commits.
///
/// A `NOTIFY` inside a transaction takes a database-wide lock from its commit until the commit's WAL flush, so
/// notifying commits cannot share a flush: ingest stalled at about 600 events/s with its backends waiting on
/// `Lock:object`. Producers therefore only [`wake`](Self::wake) this after committing, and one task sends a single
/// `NOTIFY` (in a transaction of its own, which writes no WAL) for every commit that happened while the previous one
/// was on its way. The task ends when the last handle is dropped.
#[derive(Clone)]
pub struct Notifier {
    pending: mpsc::Sender<()>,
}

impl Notifier {
    /// Starts the notifying task on the current runtime.
    pub fn spawn(pool: PgPool) -> Self {
        let (pending, mut rx) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                if let Err(err) = notify(&pool).await {
                    // The workers' poll finds the work anyway; only latency is lost.
                    tracing::warn!(error = %err, "waking the workers failed");
                }
            }
        });
        Self { pending }
    }

    /// Asks for one `NOTIFY` soon. Never waits: a wake-up already queued covers this one.
    pub fn wake(&self) {
        let _ = self.pending.try_send(());
    }
}

/// Tells listening workers there is due work (used after a replay or a lease release).
pub async fn notify(db: impl sqlx::PgExecutor<'_>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(db).await?;
    Ok(())
}
