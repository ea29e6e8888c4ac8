//! Keeping every pool of the process on the primary: which of the listed hosts is writable, checked every second,
//! and every pool pointed at the one that is.
//!
//! A pool never keeps a session on a standby: [`Epoch::after_connect`] refuses one (the pool retries until its
//! acquire timeout, so a request during a failover waits, then answers 503), and when the watch moves the pools to
//! another host, or sees the primary again after an outage, [`Epoch::before_acquire`] closes every connection
//! opened before that moment. PostgreSQL cannot turn a running primary into a standby, so a session meets
//! `25006 read_only_sql_transaction` only through something in between (a proxy, or a DNS name that moved while the
//! old address came back as a standby); the next check finds that too, within a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};

/// How often a healthy primary is checked, and how often the hosts are tried while none is.
const HEALTHY_EVERY: Duration = Duration::from_secs(1);
const SEEKING_EVERY: Duration = Duration::from_millis(250);
/// How long one check may take before its host counts as down: long enough that a primary busy under load is not
/// mistaken for a lost one (connection refused, the usual sign of a dead server, is seen at once).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// When the pools last moved (or came back): connections older than that are closed as they are acquired.
#[derive(Default)]
pub(super) struct Epoch {
    since: Mutex<Option<Instant>>,
}

impl Epoch {
    pub(super) fn begin(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether a connection of this age was opened before the last move.
    fn outdated(&self, age: Duration) -> bool {
        self.since.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|at| age > at.elapsed())
    }

    /// The pool options every pool of a cluster shares: no session on a standby, none from before the last move.
    pub(super) fn pool_options(self: &Arc<Self>) -> sqlx::postgres::PgPoolOptions {
        let epoch = self.clone();
        sqlx::postgres::PgPoolOptions::new()
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if in_recovery(conn).await? {
                        return Err(sqlx::Error::Protocol(
                            "the server is a standby (read-only); seeking the primary".into(),
                        ));
                    }
                    Ok(())
                })
            })
            .before_acquire(move |_, meta| {
                let keep = !epoch.outdated(meta.age);
                Box::pin(async move { Ok(keep) })
            })
    }
}

async fn in_recovery(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(conn).await
}

/// The hosts, which one the pools use, and the pools.
pub(super) struct Watch {
    hosts: Vec<PgConnectOptions>,
    /// Which host the pools use, and the pools, under one lock: a pool made while the watch moves is pointed at the
    /// host it moves to, never left on the one it left.
    pools: Mutex<(usize, Vec<PgPool>)>,
    pub(super) epoch: Arc<Epoch>,
    /// No host answered as a primary on the last pass: the API refuses requests at once rather than hold them.
    lost: AtomicBool,
}

impl Watch {
    pub(super) fn new(hosts: Vec<PgConnectOptions>) -> Arc<Self> {
        Arc::new(Self {
            hosts,
            pools: Mutex::new((0, Vec::new())),
            epoch: Arc::default(),
            lost: AtomicBool::new(false),
        })
    }

    fn current(&self) -> usize {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// A pool `make` builds from the current host's options, following the primary from now on.
    pub(super) fn follow(&self, make: impl FnOnce(&PgConnectOptions) -> PgPool) -> PgPool {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pool = make(&self.hosts[pools.0]);
        pools.1.push(pool.clone());
        pool
    }

    /// The first listed host that answers as a primary, if any: how a process finds it at start.
    pub(super) async fn find(&self) -> Option<usize> {
        for (i, host) in self.hosts.iter().enumerate() {
            if check(host).await == Some(false) {
                return Some(i);
            }
        }
        None
    }

    /// Points every pool at host `i`; connections from before are closed as they come up.
    pub(super) fn move_to(&self, i: usize) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.0 = i;
        let (host, port) = (self.hosts[i].get_host().to_owned(), self.hosts[i].get_port());
        for pool in pools.1.iter() {
            pool.set_connect_options((*pool.connect_options()).clone().host(&host).port(port));
        }
        self.epoch.begin();
    }

    /// Whether the last full pass over the hosts found no primary (and none has answered since).
    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Checks the primary every second, on a session kept for it; when it does not answer as one, tries every host
    /// in order, four times a second until one is writable, and moves the pools there. Ends when the process drops
    /// its `Database`.
    pub(super) async fn run(watch: Weak<Self>) {
        let mut probe: Option<PgConnection> = None;
        // The server last seen as the primary: a different one at the same address (a moved name, a restart) means
        // every connection opened before may be on the old one.
        let mut seen_server: Option<Server> = None;
        loop {
            let seeking = watch.upgrade().is_some_and(|w| w.lost());
            tokio::time::sleep(if seeking { SEEKING_EVERY } else { HEALTHY_EVERY }).await;
            let Some(watch) = watch.upgrade() else { return };
            let current = watch.current();
            let host = &watch.hosts[current];
            let seen = look(&mut probe, host).await;
            if let Seen::Primary(server) = seen {
                if watch.lost.swap(false, Ordering::Relaxed) {
                    tracing::info!(host = host.get_host(), port = host.get_port(), "the primary answers again");
                }
                if seen_server.as_ref().is_some_and(|before| *before != server) {
                    tracing::warn!(host = host.get_host(), port = host.get_port(), "another server answers here now");
                    watch.epoch.begin();
                }
                seen_server = Some(server);
                continue;
            }
            match watch.find().await {
                // The same host answering as a primary after a look that did not reach it: a blip, or the name now
                // points at another server, which the next look tells apart.
                Some(i) if i == current && seen == Seen::Unreachable => {}
                Some(i) => {
                    let found = &watch.hosts[i];
                    tracing::warn!(host = found.get_host(), port = found.get_port(), "moved to the primary");
                    watch.move_to(i);
                    seen_server = None;
                }
                None => {
                    if !watch.lost.swap(true, Ordering::Relaxed) {
                        tracing::warn!(host = host.get_host(), port = host.get_port(), "no primary; seeking one");
                    }
                    continue;
                }
            }
            watch.lost.store(false, Ordering::Relaxed);
        }
    }
}

/// Which server answered: its address as it sees it and when its postmaster started (a promoted standby, or the
/// same address restarted, differs).
type Server = (Option<String>, chrono::DateTime<chrono::Utc>);

/// What a look at the current primary saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Primary(Server),
    Standby,
    Unreachable,
}

/// Looks at `host` on the session kept for checking it (opened when there is none; dropped on anything but a
/// primary's answer, so the next look connects afresh, to wherever the name now points).
async fn look(probe: &mut Option<PgConnection>, host: &PgConnectOptions) -> Seen {
    let ask = async {
        if probe.is_none() {
            *probe = Some(PgConnection::connect_with(host).await?);
        }
        let Some(conn) = probe.as_mut() else { return Err(sqlx::Error::PoolClosed) };
        sqlx::query_as::<_, (bool, Option<String>, chrono::DateTime<chrono::Utc>)>(
            "SELECT pg_is_in_recovery(), host(inet_server_addr()), pg_postmaster_start_time()",
        )
        .fetch_one(conn)
        .await
    };
    let seen = match tokio::time::timeout(CHECK_TIMEOUT, ask).await {
        Ok(Ok((false, address, started))) => Seen::Primary((address, started)),
        Ok(Ok((true, _, _))) => Seen::Standby,
        _ => Seen::Unreachable,
    };
    if !matches!(seen, Seen::Primary(_)) {
        *probe = None;
    }
    seen
}

/// Whether `host` is in recovery; `None` when it cannot be asked within the check's timeout.
pub(super) async fn check(host: &PgConnectOptions) -> Option<bool> {
    let ask = async {
        let mut conn = PgConnection::connect_with(host).await?;
        let answer = in_recovery(&mut conn).await;
        let _ = conn.close().await;
        answer
    };
    tokio::time::timeout(CHECK_TIMEOUT, ask).await.ok()?.ok()
}
