//! What every handler shares.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_core::{ApiKeyId, MasterKey, TenantId};
use courier_scheduler::ingest::Ingest;
use courier_scheduler::supervise::Components;
use courier_store::cluster::Database;
use ipnet::IpNet;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The API's own settings: how it serves requests, and the rules for the webhooks tenants create through it.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests per second per key and the burst above it; `None` turns rate limiting off.
    pub rate_limit: Option<RateLimit>,
    /// Proxies whose `X-Forwarded-For` names the client (`COURIER_TRUSTED_PROXIES`); see `client_addr`.
    pub trusted_proxies: Vec<IpNet>,
    /// The longest any one API statement may run before PostgreSQL cancels it (answered 503).
    pub statement_timeout: Duration,
    /// Bulk replays one tenant may have queued or running at once (`COURIER_MAX_RUNNING_REPLAYS`).
    pub max_running_replays: u32,
    pub webhooks: WebhookRules,
    pub portal: PortalConfig,
}

/// How the tenant portal is reached and framed.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// The base of magic links, without a trailing slash (`https://courier.example.com`).
    pub public_url: String,
    /// Mark the session cookie `Secure` (the public URL is https).
    pub secure_cookie: bool,
    /// The CSP `frame-ancestors` sources, e.g. `'none'`.
    pub frame_ancestors: String,
}

/// What a webhook created or changed through the API may be.
#[derive(Debug, Clone)]
pub struct WebhookRules {
    /// Let live-mode webhooks use plain `http`.
    pub allow_http: bool,
    /// Let live-mode keys create `relay` webhooks (test mode always may).
    pub relay_live: bool,
    /// CIDRs a webhook may target although they are private (development, tests); the worker gets the same list.
    pub allowed_targets: Vec<IpNet>,
    /// How long a rotated-out secret keeps signing.
    pub rotation_grace: Duration,
    /// The attempt budget of a webhook created without `max_attempts`.
    pub default_max_attempts: u32,
    /// Webhooks one tenant may have (deleted ones not counted).
    pub max_webhooks: u32,
}

/// The database as the API reaches it: pools like the process's (same servers, credentials, size, and following the
/// primary), whose sessions cancel any statement running longer than `timeout`. The API gets its own: under `serve`
/// it shares the database with delivery, and a tenant's expensive query must not hold a connection (or a lock) that
/// delivery needs. Connections open lazily.
///
/// Its sessions also plan each prepared statement once (`plan_cache_mode = force_generic_plan`). History is
/// partitioned by day (migration 0015), and planning a log query for its actual values costs about 10 ms at 40
/// day partitions, more than running it; a generic plan prunes the days as it starts, for any values.
fn api_database(db: &Database, timeout: Duration, connections: u32) -> Database {
    db.with_sessions(
        connections,
        API_CONNECTION_WAIT,
        &[("statement_timeout", timeout.as_millis().to_string()), ("plan_cache_mode", "force_generic_plan".to_owned())],
    )
}

/// How long a request waits for a database connection before its 503: less than the 10 s clients commonly allow a
/// request, so a client sees the 503 and its `Retry-After` (a failover's first second, before the watch knows the
/// primary is gone, or a pool exhausted) rather than its own timeout.
const API_CONNECTION_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// Connections of the priority pool: the ingest dispatcher runs up to four transactions at once, and key lookups
/// take a fraction of a millisecond each.
const PRIORITY_CONNECTIONS: u32 = 8;

#[derive(Clone)]
pub struct AppState {
    /// Reads and tenant changes (statement timeout as configured), on the primary.
    pub pool: PgPool,
    /// The same, with replicas for the reads that need not see a write made just before them ([`AppState::reader`]).
    database: Database,
    /// Authentication and ingest only: short statements that must never queue behind a tenant's expensive reads
    /// for a connection. Same server and timeout, a pool of its own.
    pub(crate) priority: PgPool,
    pub key: MasterKey,
    pub config: Arc<ApiConfig>,
    pub(crate) limiter: Arc<crate::limits::RateLimiter>,
    pub(crate) usage: Arc<KeyUsage>,
    /// Turns for expensive reads (log pages, replay counts), per tenant.
    pub(crate) reads: Arc<crate::limits::ExpensiveReads>,
    /// Where ingest requests go to be stored, several to a transaction.
    pub(crate) ingest: Ingest,
    /// The supervised loops of this process (ingest here; the binary adds the worker), for `/readyz`.
    pub components: Components,
    /// Turns to read and parse a large body (a batch), so concurrent 16 MiB requests cannot exhaust memory.
    pub(crate) large_bodies: LargeBodies,
    /// The `courier listen` sessions of this process, when a worker runs beside the API to hand them deliveries.
    pub(crate) relays: Option<courier_scheduler::relay::Relays>,
}

/// How many large bodies may be parsed at once, by everyone and by one tenant, and how long a request waits for its
/// turn before a 503. A turn is taken once the body has arrived, so it is held for the parse only (milliseconds),
/// never for an upload.
#[derive(Clone)]
pub(crate) struct LargeBodies {
    turns: Arc<Turns>,
}

#[derive(Default)]
struct Turns {
    /// Turns held, by tenant (a tenant holding none has no entry).
    held: Mutex<HashMap<TenantId, usize>>,
    /// Woken whenever a turn is given back.
    returned: tokio::sync::Notify,
}

/// A turn to parse one large body; given back on drop.
pub(crate) struct Turn {
    turns: Arc<Turns>,
    tenant: TenantId,
}

impl Drop for Turn {
    fn drop(&mut self) {
        {
            let mut held = self.turns.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = held.get_mut(&self.tenant) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&self.tenant);
                }
            }
        }
        self.turns.returned.notify_waiters();
    }
}

impl LargeBodies {
    /// Large bodies parsed at once per process: four 16 MiB batches are about 150 MiB at the peak.
    pub(crate) const AT_ONCE: usize = 4;
    /// Of which one tenant may hold at most this many, so others always find one.
    pub(crate) const PER_TENANT: usize = 2;
    const WAIT: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { turns: Arc::default() }
    }

    /// Waits for a turn for `tenant`; a 503 with `Retry-After` when none came within 10 s.
    pub(crate) async fn turn(&self, tenant: TenantId) -> Result<Turn, crate::ApiError> {
        let wait = async {
            loop {
                // Registered before looking, so a turn given back between the look and the wait still wakes us.
                let returned = self.turns.returned.notified();
                tokio::pin!(returned);
                returned.as_mut().enable();
                if let Some(turn) = self.try_turn(tenant) {
                    return turn;
                }
                returned.await;
            }
        };
        tokio::time::timeout(Self::WAIT, wait).await.map_err(|_| {
            crate::ApiError::retry_later(
                "too many large requests are being parsed right now; retry shortly",
                "no turn for a large body within 10 s",
            )
        })
    }

    fn try_turn(&self, tenant: TenantId) -> Option<Turn> {
        let mut held = self.turns.held.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = held.values().sum();
        let mine = held.get(&tenant).copied().unwrap_or(0);
        if total >= Self::AT_ONCE || mine >= Self::PER_TENANT {
            return None;
        }
        *held.entry(tenant).or_default() += 1;
        Some(Turn { turns: self.turns.clone(), tenant })
    }
}

/// What an [`AppState`] needs running besides the requests: the ingest dispatcher, which group-commits them. Its
/// owner (the binary's `Application`, or a test) starts it; it ends once every handle of the state is dropped.
pub struct ApiLoops {
    dispatcher: courier_scheduler::ingest::Dispatcher,
}

impl ApiLoops {
    /// Runs the dispatcher under supervision (should it panic, it restarts on the same queue, and waiting
    /// requests are kept) until the state is gone.
    pub fn spawn(self, components: Components, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let dispatcher = self.dispatcher;
        tokio::spawn(courier_scheduler::supervise::supervise("ingest", components, shutdown, move || {
            let dispatcher = dispatcher.clone();
            async move {
                dispatcher.run().await;
                Ok::<(), std::convert::Infallible>(())
            }
        }))
    }
}

impl AppState {
    /// The state, and the loop it needs running ([`ApiLoops`]), for the caller to start and own.
    pub fn new(pool: PgPool, key: MasterKey, config: ApiConfig) -> (Self, ApiLoops) {
        Self::with_local_worker(&Database::single(pool), key, config, None)
    }

    /// The state of an API that shares its process with a worker (`courier serve`): ingest wakes that worker
    /// directly after each commit, besides the `NOTIFY` every other worker gets, and hands it the deliveries it
    /// leased to it (`courier_scheduler::handover`).
    pub fn with_local_worker(
        db: &Database,
        key: MasterKey,
        config: ApiConfig,
        local: Option<courier_scheduler::ingest::LocalWorker>,
    ) -> (Self, ApiLoops) {
        let priority = api_database(db, config.statement_timeout, PRIORITY_CONNECTIONS).pool().clone();
        let database = api_database(db, config.statement_timeout, db.pool().options().get_max_connections());
        let pool = database.pool().clone();
        let rate_limit = config.rate_limit;
        let limiter = Arc::new(crate::limits::RateLimiter::new(rate_limit));
        let (wake, handover) = local.map(|l| (l.wake, l.handover)).unzip();
        let notifier = courier_scheduler::wake::Notifier::spawn_with(priority.clone(), wake);
        let components = Components::default();
        let (ingest, dispatcher) =
            Ingest::new(priority.clone(), courier_scheduler::ingest::Workers { notifier, handover });
        let state = Self {
            pool,
            database,
            priority,
            key,
            config: Arc::new(config),
            limiter,
            usage: Arc::default(),
            reads: Arc::new(crate::limits::ExpensiveReads::new(rate_limit)),
            ingest,
            components,
            large_bodies: LargeBodies::new(),
            relays: None,
        };
        (state, ApiLoops { dispatcher })
    }

    /// The same state, accepting `courier listen` sessions into `relays`, which this process's worker delivers to.
    pub fn with_relays(self, relays: courier_scheduler::relay::Relays) -> Self {
        Self { relays: Some(relays), ..self }
    }

    /// The pool for a read that need not see a write made just before it (logs, lists, counts): a replica's when one
    /// is fit (`COURIER_READ_DATABASE_URL`, within `COURIER_READ_MAX_LAG`), else the primary's.
    pub(crate) fn reader(&self) -> &PgPool {
        self.database.reader()
    }

    /// Whether the database has no reachable primary right now.
    pub(crate) fn primary_lost(&self) -> bool {
        self.database.primary_lost()
    }

    /// Closes every connection of the process's pools as it is next acquired (one met a read-only session).
    pub(crate) fn close_connections(&self) {
        self.database.close_connections();
    }

    /// Where to look again for one object a replica did not find: the primary, when reads go to replicas at all. A
    /// client that reads the delivery its replay just created must find it, even on a replica a few ms behind.
    pub(crate) fn primary_on_miss(&self) -> Option<&PgPool> {
        self.database.has_replicas().then_some(&self.pool)
    }

    /// Writes the keys used since the last flush in one statement. `serve` calls it every few seconds, so a key's
    /// `last_used_at` costs no write per request.
    pub async fn flush_key_usage(&self) -> Result<(), courier_store::Error> {
        self.limiter.housekeeping();
        self.reads.housekeeping();
        let used: Vec<ApiKeyId> = {
            let mut set = self.usage.used.lock().unwrap_or_else(|e| e.into_inner());
            set.drain().collect()
        };
        if used.is_empty() {
            return Ok(());
        }
        courier_store::api_keys::mark_used(&self.pool, &used, chrono::Utc::now()).await
    }
}

/// Keys seen since the last flush.
#[derive(Default)]
pub(crate) struct KeyUsage {
    used: Mutex<HashSet<ApiKeyId>>,
}

impl KeyUsage {
    pub(crate) fn touch(&self, key: &ApiKeyId) {
        let mut set = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !set.contains(key) {
            set.insert(key.clone());
        }
    }
}
