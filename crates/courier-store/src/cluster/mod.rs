//! The process's way to its database: the primary among the hosts `DATABASE_URL` lists, followed through a
//! failover, and the replicas `COURIER_READ_DATABASE_URL` lists, for reads that need not see their own writes.
//!
//! sqlx connects a pool to one host. A [`Database`] keeps every pool made from it on the current primary
//! (`primary::Watch`), and picks a replica fit to read from for each read (`replicas::Fitness`), the primary
//! when none is.

mod hosts;
mod primary;
mod replicas;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use hosts::parse as parse_hosts;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no primary among the hosts {0}: each is unreachable or a standby")]
    NoPrimary(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How to reach the database: what `DATABASE_URL` and its companions say.
#[derive(Debug, Clone)]
pub struct Endpoints<'a> {
    /// `DATABASE_URL`: one host, or several in libpq's syntax; the writable one is used.
    pub primary: &'a str,
    /// `COURIER_READ_DATABASE_URL`: replicas for the read-only API and portal queries, when set.
    pub replicas: Option<&'a str>,
    /// `COURIER_READ_MAX_LAG`: a replica further behind than this is skipped.
    pub max_lag: Duration,
    /// `COURIER_DATABASE_MAX_CONNECTIONS`, per pool.
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// The primary's pool, and replicas' when there are any. Cheap to clone; the checks behind it run until the last
/// clone is dropped.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    watch: Option<Arc<primary::Watch>>,
    readers: Option<replicas::Readers>,
}

impl Database {
    /// Finds the primary among the listed hosts (the first writable one, in order; a process started during a
    /// failover waits for it, four looks a second, up to `acquire_timeout`) and starts following it.
    pub async fn connect(at: &Endpoints<'_>) -> Result<Self, ConnectError> {
        let hosts = hosts::parse(at.primary)?;
        let listed: Vec<String> = hosts.iter().map(|h| format!("{}:{}", h.get_host(), h.get_port())).collect();
        let watch = primary::Watch::new(hosts);
        let deadline = tokio::time::Instant::now() + at.acquire_timeout;
        let first = loop {
            if let Some(first) = watch.find().await {
                break first;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectError::NoPrimary(listed.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        watch.move_to(first);
        let options =
            watch.epoch.pool_options().max_connections(at.max_connections).acquire_timeout(at.acquire_timeout);
        let pool = watch.follow(|host| options.connect_lazy_with(host.clone()));
        // One connection now, so a wrong password or database fails the start, not the first request.
        drop(pool.acquire().await?);
        tokio::spawn(primary::Watch::run(Arc::downgrade(&watch)));
        let readers = match at.replicas {
            Some(url) => {
                let fitness = replicas::Fitness::new(hosts::parse(url)?, at.max_lag);
                tokio::spawn(replicas::Fitness::run(Arc::downgrade(&fitness)));
                let pools = fitness.hosts().iter().map(|h| reader_pool(&pool, h.clone(), at.max_connections)).collect();
                Some(replicas::Readers { fitness, pools: Arc::new(pools) })
            }
            None => None,
        };
        Ok(Self { pool, watch: Some(watch), readers })
    }

    /// A database of one pool, followed by nothing (tests, and tools that connect once).
    pub fn single(pool: PgPool) -> Self {
        Self { pool, watch: None, readers: None }
    }

    /// The primary's pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// For reads that need not see a write made just before them: a fit replica's pool, else the primary's.
    pub fn reader(&self) -> &PgPool {
        self.readers.as_ref().and_then(replicas::Readers::pick).unwrap_or(&self.pool)
    }

    /// Whether no listed host answered as a primary on the last look (a failover under way): requests that need
    /// one are better refused at once than held until the pool gives up.
    pub fn primary_lost(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.lost())
    }

    /// Closes every connection opened so far as it is next acquired, in every pool that follows the primary: one
    /// met a read-only session, and its siblings may be on the same server.
    pub fn close_connections(&self) {
        if let Some(watch) = &self.watch {
            watch.epoch.begin();
        }
    }

    /// Whether reads may go to replicas.
    pub fn has_replicas(&self) -> bool {
        self.readers.is_some()
    }

    /// The same database through pools of `connections` each, waiting at most `wait` for a connection, whose
    /// sessions carry `settings` (the API's statement timeout, say); they follow the primary as this one's do.
    pub fn with_sessions(&self, connections: u32, wait: Duration, settings: &[(&str, String)]) -> Self {
        let configure = |o: &PgConnectOptions| o.clone().options(settings.iter().map(|(k, v)| (*k, v.as_str())));
        let options = self.pool.options().clone().max_connections(connections).acquire_timeout(wait);
        let base = configure(&self.pool.connect_options());
        let pool = match &self.watch {
            // On the host the watch holds, under its lock: a move under way cannot miss this pool.
            Some(watch) => {
                watch.follow(|host| options.connect_lazy_with(base.host(host.get_host()).port(host.get_port())))
            }
            None => options.connect_lazy_with(base),
        };
        let readers = self.readers.as_ref().map(|r| replicas::Readers {
            fitness: r.fitness.clone(),
            pools: Arc::new(
                r.pools.iter().map(|p| reader_pool(p, configure(&p.connect_options()), connections)).collect(),
            ),
        });
        Self { pool, watch: self.watch.clone(), readers }
    }
}

/// A lazily connected pool on a replica, sized like the primary's, without the primary's hooks (a replica is a
/// standby by design). A read waits at most two seconds for a connection: one that died since its last check
/// (a quarter of a second ago at most) fails the reads it was given quickly, with a 503, rather than holding them.
fn reader_pool(like: &PgPool, host: PgConnectOptions, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(like.options().get_acquire_timeout().min(Duration::from_secs(2)))
        .connect_lazy_with(host)
}
