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
    /// Notifications this process sent after waking its own worker directly (`own`) are skipped: that worker
    /// already looked, and a second look would be an empty claim.
    pub async fn wait(&mut self, timeout: Duration, own: Option<&LocalWake>) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.listener.try_recv()).await {
                Ok(Ok(Some(n))) if own.is_some_and(|o| o.sent(n.payload())) => continue,
                Ok(Ok(Some(_))) => {
                    while self.listener.next_buffered().is_some() {}
                    return;
                }
                // The connection dropped (it reconnects on the next call): fall back to the poll interval.
                Ok(Ok(None) | Err(_)) => return tokio::time::sleep_until(deadline).await,
                Err(_elapsed) => return,
            }
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
    local: Option<LocalWake>,
}

/// A wake-up that stays inside the process: when the API and a worker share one (`courier serve`), ingest wakes the
/// worker directly the moment its commit returns, instead of through a `NOTIFY` round trip to PostgreSQL. The
/// `NOTIFY` still goes out for the other processes. A wake-up given while the worker is busy is kept for its next wait.
#[derive(Clone)]
pub struct LocalWake {
    notify: std::sync::Arc<tokio::sync::Notify>,
    /// The payload of this process's `NOTIFY`s, so its worker can skip the ones it was already woken for.
    token: std::sync::Arc<str>,
}

impl Default for LocalWake {
    fn default() -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string();
        Self { notify: std::sync::Arc::default(), token: token.into() }
    }
}

impl LocalWake {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Returns at the next wake-up (at once if one came since the last wait).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Whether a notification's payload is one this process sent.
    pub fn sent(&self, payload: &str) -> bool {
        payload == &*self.token
    }
}

impl Notifier {
    /// Starts the notifying task on the current runtime.
    pub fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, None)
    }

    /// [`Notifier::spawn`], also waking the worker of this process directly through `local`; its `NOTIFY`s carry
    /// `local`'s token, so that worker skips them.
    pub fn spawn_with(pool: PgPool, local: Option<LocalWake>) -> Self {
        let (pending, mut rx) = mpsc::channel::<()>(1);
        let token = local.as_ref().map(|l| l.token.to_string()).unwrap_or_default();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                if let Err(err) = notify_as(&pool, &token).await {
                    // The workers' poll finds the work anyway; only latency is lost.
                    tracing::warn!(error = %err, "waking the workers failed");
                }
            }
        });
        Self { pending, local }
    }

    /// Asks for one `NOTIFY` soon (and wakes this process's worker at once, if it has one). Never waits: a wake-up
    /// already queued covers this one.
    pub fn wake(&self) {
        if let Some(local) = &self.local {
            local.wake();
        }
        let _ = self.pending.try_send(());
    }
}

/// Tells listening workers there is due work (used after a replay or a lease release).
pub async fn notify(db: impl sqlx::PgExecutor<'_>) -> Result<()> {
    notify_as(db, "").await
}

async fn notify_as(db: impl sqlx::PgExecutor<'_>, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(db).await?;
    Ok(())
}
