//! Replicas fit to read from: each one's lag checked four times a second; one lagging past the allowed lag,
//! unreachable, or not streaming from a primary is skipped, and the primary serves its reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool};

const CHECK_EVERY: Duration = Duration::from_millis(250);
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Seconds this server's data is behind its primary: zero on a primary, or on a standby that has replayed all it
/// received while streaming; the age of the last transaction replayed while it has more to replay; unknown (NULL)
/// when it streams from nobody, since then it cannot know what it misses.
const LAG: &str = "SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN 0::float8
        WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN NULL
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8
        ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
    END";

/// The replica hosts and whether each is fit now; shared by every process pool reading from them.
pub(super) struct Fitness {
    hosts: Vec<PgConnectOptions>,
    fit: Vec<AtomicBool>,
    max_lag: Duration,
    /// Turns among fit replicas.
    next: AtomicUsize,
}

impl Fitness {
    pub(super) fn new(hosts: Vec<PgConnectOptions>, max_lag: Duration) -> Arc<Self> {
        let fit = hosts.iter().map(|_| AtomicBool::new(false)).collect();
        Arc::new(Self { hosts, fit, max_lag, next: AtomicUsize::new(0) })
    }

    pub(super) fn hosts(&self) -> &[PgConnectOptions] {
        &self.hosts
    }

    /// The index of a fit replica, taking turns; `None` when none is.
    pub(super) fn pick(&self) -> Option<usize> {
        let n = self.hosts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| self.fit[i].load(Ordering::Relaxed))
    }

    /// Checks every replica's lag once (concurrently), then four times a second until the process drops its
    /// `Database`.
    pub(super) async fn run(fitness: Weak<Self>) {
        let mut probes: Vec<Option<PgConnection>> = Vec::new();
        let mut first = true;
        loop {
            let Some(f) = fitness.upgrade() else { return };
            probes.resize_with(f.hosts.len(), || None);
            let checks = f.hosts.iter().zip(probes.iter_mut()).map(|(host, probe)| lag(probe, host));
            let lags = futures_util::future::join_all(checks).await;
            for (i, lag) in lags.into_iter().enumerate() {
                let fit = lag.is_some_and(|secs| secs <= f.max_lag.as_secs_f64());
                // Every change is logged, and the first verdict: a replica never fit (a user without
                // `pg_read_all_stats` sees no WAL receiver) must not go unnoticed.
                if f.fit[i].swap(fit, Ordering::Relaxed) != fit || first {
                    let host = &f.hosts[i];
                    tracing::info!(host = host.get_host(), port = host.get_port(), fit, lag, "replica fitness changed");
                }
            }
            drop(f);
            first = false;
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
}

/// The replica's lag in seconds on the session kept for checking it; `None` when it cannot say (down, slow to
/// answer, not streaming).
async fn lag(probe: &mut Option<PgConnection>, host: &PgConnectOptions) -> Option<f64> {
    use sqlx::Connection;
    let ask = async {
        if probe.is_none() {
            *probe = Some(PgConnection::connect_with(host).await?);
        }
        match probe.as_mut() {
            Some(conn) => sqlx::query_scalar::<_, Option<f64>>(LAG).fetch_one(conn).await,
            None => Err(sqlx::Error::PoolClosed),
        }
    };
    match tokio::time::timeout(CHECK_TIMEOUT, ask).await {
        Ok(Ok(lag)) => lag,
        _ => {
            *probe = None;
            None
        }
    }
}

/// The pools of one set of replicas, index for index with [`Fitness::hosts`].
#[derive(Clone)]
pub(super) struct Readers {
    pub(super) fitness: Arc<Fitness>,
    pub(super) pools: Arc<Vec<PgPool>>,
}

impl Readers {
    pub(super) fn pick(&self) -> Option<&PgPool> {
        self.fitness.pick().and_then(|i| self.pools.get(i))
    }
}
