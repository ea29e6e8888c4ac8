//! The running service: the HTTP API and, in `serve`, the delivery worker, sharing one database and one shutdown.
//!
//! Two pools on the same server: the API's, whose sessions carry `COURIER_API_STATEMENT_TIMEOUT`, and the process's
//! own (the worker's), without it, for the background loops: a replay chunk or a retention pass is bounded by its
//! own design, not by a timeout meant for one tenant's request.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use courier_api::AppState;
use courier_api::state::ApiLoops;
use courier_store::cluster::Database;
use courier_worker::Worker;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and workers (`courier serve`, `courier dev`).
    All,
    /// API only (`courier api`).
    Api,
}

pub struct Application {
    listener: TcpListener,
    /// `/metrics`, apart from the public API (`COURIER_METRICS_LISTEN`), when configured.
    metrics: Option<TcpListener>,
    state: AppState,
    /// The ingest dispatcher the state needs, started by [`Application::run`] with every other loop.
    api_loops: ApiLoops,
    /// The process's own pool (no statement timeout): the worker's, and the background loops'.
    pool: PgPool,
    worker: Option<Worker>,
    retention_days: u32,
    /// The `courier listen` sessions, under `serve`.
    relays: Option<courier_scheduler::relay::Relays>,
    /// Under `serve` with `COURIER_INGEST_KAFKA_BROKERS`: the topics to take events from, and who gets their
    /// deliveries (this process's worker first, as for the API's ingest).
    kafka_ingest: Option<KafkaIngest>,
}

struct KafkaIngest {
    settings: crate::settings::KafkaIngestSettings,
    timeout: Duration,
    workers: courier_scheduler::ingest::Workers,
}

impl KafkaIngest {
    /// The consumer loop, under the same supervision as the process's other loops.
    fn spawn(
        self,
        pool: &PgPool,
        components: &courier_scheduler::supervise::Components,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let KafkaIngest { settings, timeout, workers } = self;
        let (pool, shutdown) = (pool.clone(), stop.clone());
        let start = move || {
            let (settings, pool, workers, stop) = (settings.clone(), pool.clone(), workers.clone(), shutdown.clone());
            crate::kafka_ingest::run(settings, timeout, pool, workers, stop)
        };
        spawn_supervised("kafka_ingest", components, stop, boxed(start))
    }
}

impl Application {
    /// Binds the listener (port 0 picks a free one, for tests) and prepares the parts; serves nothing yet.
    pub async fn build(settings: &Settings, db: Database, role: Role) -> anyhow::Result<Self> {
        let pool = db.pool().clone();
        let key = settings.master_key()?;
        let listener = TcpListener::bind(settings.api.listen)
            .await
            .with_context(|| format!("cannot listen on {} (COURIER_LISTEN)", settings.api.listen))?;
        let metrics = match settings.api.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (COURIER_METRICS_LISTEN)"))?,
            ),
            None => None,
        };
        // Under `serve`, ingest wakes this process's worker directly: a claim can start the moment a commit returns.
        let local = courier_scheduler::wake::LocalWake::default();
        let worker = match role {
            Role::All => Some(
                Worker::new(pool.clone(), key.clone(), settings.worker_config())
                    .context("cannot start the delivery worker")?
                    .with_local_wake(local.clone()),
            ),
            Role::Api => None,
        };
        // Kafka ingest, under `serve`, wakes and hands over to the same worker.
        let kafka_ingest = settings.kafka_ingest.clone().zip(worker.as_ref()).map(|(kafka, w)| KafkaIngest {
            settings: kafka,
            timeout: settings.delivery.connect_timeout.max(Duration::from_secs(10)),
            workers: courier_scheduler::ingest::Workers {
                notifier: courier_scheduler::wake::Notifier::spawn_with(pool.clone(), Some(local.clone())),
                handover: Some(w.handover()),
            },
        });
        // …and hands it the deliveries it leased to it in the same commit, so those need no claim at all.
        let local =
            worker.as_ref().map(|w| courier_scheduler::ingest::LocalWorker { wake: local, handover: w.handover() });
        let (mut state, api_loops) = AppState::with_local_worker(&db, key, settings.api_config(), local);
        // …and takes `courier listen` sessions, whose relay webhooks' deliveries that worker hands over in memory.
        let relays = courier_scheduler::relay::Relays::default();
        let worker = worker.map(|w| w.with_relays(relays.clone()));
        let relays = worker.is_some().then_some(relays);
        if let Some(relays) = &relays {
            state = state.with_relays(relays.clone());
        }
        let retention_days = settings.retention.days;
        Ok(Self { listener, metrics, state, api_loops, pool, worker, retention_days, relays, kafka_ingest })
    }

    pub fn addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown`: then stops accepting, drains requests, stops the worker (which finishes or releases
    /// its in-flight deliveries) and flushes key usage.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, metrics, state, api_loops, pool, worker, retention_days, relays, kafka_ingest } =
            self;
        // `courier listen` sessions end with the shutdown, or their WebSockets would hold the server open.
        if let Some(relays) = relays {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                relays.close_all();
            });
        }
        // Every loop of the process starts here, under `shutdown` and the same supervision. The dispatcher ends
        // by itself once the server has drained and dropped the state (requests still draining need it).
        let ingest = api_loops.spawn(state.components.clone(), shutdown.clone());
        // Each restarted with backoff when it fails or panics and reported by /readyz, never left dead behind a live
        // API; the loops run on the process's own pool (see the module's comment).
        let supervised = |name, start| spawn_supervised(name, &state.components, &shutdown, start);
        let (retention_pool, stop) = (pool.clone(), shutdown.clone());
        let retention = supervised(
            "retention",
            boxed(move || retention_loop(retention_pool.clone(), retention_days, stop.clone())),
        );
        let (replay_pool, stop) = (pool.clone(), shutdown.clone());
        let replays = supervised("replays", boxed(move || replay_loop(replay_pool.clone(), stop.clone())));
        let kafka = kafka_ingest.map(|kafka| kafka.spawn(&pool, &state.components, &shutdown));
        let (usage, stop) = (state.clone(), shutdown.clone());
        let flusher = supervised("key_usage", boxed(move || key_usage_loop(usage.clone(), stop.clone())));
        let worker = worker.map(|w| {
            let stop = shutdown.clone();
            supervised("worker", boxed(move || w.clone().run(stop.clone())))
        });
        crate::metrics::install();
        let metrics_server = metrics.map(|listener| tokio::spawn(serve_metrics(listener, &state, shutdown.clone())));
        let app = courier_api::router(state);
        let stop = shutdown.clone();
        tracing::info!(addr = %listener.local_addr()?, "listening");
        // The client's address feeds the rate limit of failed authentications.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
        if let Some(worker) = worker {
            worker.await.context("the worker's supervisor panicked")?;
        }
        let _ = flusher.await;
        let _ = retention.await;
        let _ = replays.await;
        if let Some(kafka) = kafka {
            let _ = kafka.await;
        }
        if let Some(server) = metrics_server {
            server.await.context("the metrics server panicked")??;
        }
        ingest.await.context("the ingest dispatcher's supervisor panicked")?;
        Ok(())
    }
}

/// A loop of the process as `supervise` starts it: each start a fresh future, its error anything displayable.
type Start = Box<dyn FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> + Send>;

/// `start` as a [`Start`], so loops of different types share one spawning helper.
fn boxed<F, Fut, E>(mut start: F) -> Start
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Into<anyhow::Error> + 'static,
{
    Box::new(move || {
        let run = start();
        Box::pin(async move { run.await.map_err(Into::into) })
    })
}

/// Spawns `start` under the scheduler's supervision until `stop`, reporting to `components`.
fn spawn_supervised(
    name: &'static str,
    components: &courier_scheduler::supervise::Components,
    stop: &CancellationToken,
    start: Start,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(courier_scheduler::supervise::supervise(name, components.clone(), stop.clone(), start))
}

/// Advances bulk replay jobs one bounded chunk at a time, tenants taking turns, until shutdown. A pause between chunks
/// keeps a big replay from flooding the queue faster than a worker share drains it, and a long walk over a sparse
/// filter to about a third of one database core.
///
/// It runs in every `serve` and `api` process, and not in `courier worker`: jobs are rows that every loop shares
/// (one job's chunk at a time, under its row lock), so the processes that accept replays already advance them all,
/// and one loop per worker process as well would make replays fill the queue faster with each worker added, while
/// workers are added for delivery.
async fn replay_loop(pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    use courier_scheduler::replay::{Advanced, advance};
    loop {
        let pause = match advance(&pool).await {
            Ok(Advanced::Moved { .. }) => Duration::from_millis(50),
            Ok(Advanced::Idle) => Duration::from_secs(1),
            Ok(Advanced::Failed { job, error, gave_up }) => {
                let error = anyhow::Error::from(error);
                tracing::warn!(replay.id = %job, gave_up, error = format!("{error:#}"), "a bulk replay chunk failed");
                Duration::from_millis(50)
            }
            Err(err) => {
                let err = anyhow::Error::from(err);
                tracing::warn!(error = format!("{err:#}"), "advancing bulk replays failed; will retry");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Every minute: ends deliveries older than the retention, creates the coming week's history partitions, drops the
/// days past retention, deletes the expired events that are not dropped by day (one bounded batch at a time with a
/// pause between batches, so it never holds locks delivery needs for long), and prunes old hourly counts and
/// set-aside Kafka records.
async fn retention_loop(pool: PgPool, days: u32, shutdown: CancellationToken) -> anyhow::Result<()> {
    let clock = courier_scheduler::Clock::database();
    loop {
        expire_deliveries(&pool, &clock, days).await;
        history_by_day(&pool, days).await;
        loop {
            match courier_scheduler::retention::purge_expired_batch(&pool, &clock, days).await {
                Ok(n) if n == courier_scheduler::retention::BATCH as u64 => {
                    tracing::info!(deleted = n, "retention: deleted expired events");
                }
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "retention: deleted expired events");
                    }
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "retention pass failed; will retry");
                    break;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        if let Err(err) = courier_scheduler::hourly::prune(&pool).await {
            tracing::warn!(error = %err, "pruning the hourly delivery counts failed; will retry");
        }
        if let Err(err) = courier_store::ingest_rejects::prune(&pool, days).await {
            tracing::warn!(error = %err, "pruning the set-aside Kafka records failed; will retry");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Ends the deliveries that outlived their tenant's retention (`courier_scheduler::retention::expire_batch`), a
/// batch at a time, before the days they would otherwise hold on to are dropped.
async fn expire_deliveries(pool: &PgPool, clock: &courier_scheduler::Clock, days: u32) {
    use courier_scheduler::retention::{BATCH, expire_batch};
    loop {
        match expire_batch(pool, clock, days).await {
            Ok(0) => return,
            Ok(n) => {
                tracing::info!(failed = n, "retention: ended deliveries that outlived the retention");
                if n < BATCH as u64 {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "ending deliveries past retention failed; will retry");
                return;
            }
        }
    }
}

/// Creates the partitions ahead and drops expired days (courier_scheduler::history).
async fn history_by_day(pool: &PgPool, days: u32) {
    use courier_scheduler::history;
    // Which days exist and which expired is the database's clock's call, like every time the queue compares.
    let now = match courier_scheduler::clock::database_now(pool).await {
        Ok(now) => now,
        Err(err) => return tracing::warn!(error = %err, "reading the database's clock failed; will retry"),
    };
    match history::create_ahead(pool, now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(days = n, "history: created partitions ahead"),
        Err(err) => tracing::warn!(error = %err, "creating history partitions failed; will retry"),
    }
    match history::drop_expired(pool, days, now).await {
        Ok((dropped, kept)) => {
            for (day, held) in dropped {
                tracing::info!(
                    day = day.suffix.as_str(),
                    held.events = held.events,
                    held.attempts = held.attempts,
                    "history: dropped a day past retention"
                );
            }
            for day in kept {
                tracing::info!(
                    day = day.suffix.as_str(),
                    "history: kept a day past retention (busy, or after a busy one)"
                );
            }
        }
        Err(err) => tracing::warn!(error = %err, "dropping expired history failed; will retry"),
    }
}

/// Writes which API keys were used every 5 s (and once more at shutdown), so authentication costs no write.
async fn key_usage_loop(state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(Duration::from_secs(5)) => false,
        };
        if let Err(err) = state.flush_key_usage().await {
            tracing::warn!(error = %err, "recording API key usage failed; will retry");
        }
        if stopping {
            return Ok(());
        }
    }
}

/// `/metrics` on its own listener: queue depths and tenants' traffic are the operator's business, not the public
/// port's.
fn serve_metrics(
    listener: TcpListener,
    state: &AppState,
    stop: CancellationToken,
) -> impl std::future::Future<Output = std::io::Result<()>> + use<> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(crate::metrics::scrape))
        .with_state(state.pool.clone());
    async move { axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await }
}
