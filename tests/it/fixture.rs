//! The fixture of the delivery tests: a tenant, webhooks, ingest through the ingest use case, and workers running
//! the production loop (`Worker::run`) on a queue clock the fixture steps over retry delays instead of sleeping.

use std::time::Duration;

use courier_core::{
    Environment, EventData, EventId, EventSelector, EventType, MasterKey, PayloadFilter, WebhookSecret,
};
use courier_scheduler::logs::{self, DeliveryFilter};
use courier_scheduler::wake::Notifier;
use courier_scheduler::{Clock, ingest};
use courier_store::events::NewEvent;
use courier_store::webhooks::{self, NewWebhook, Webhook};
use courier_store::{Owner, tenants};
use courier_worker::{Worker, WorkerConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub(crate) struct Fixture {
    pub(crate) pool: PgPool,
    pub(crate) key: MasterKey,
    pub(crate) owner: Owner,
    /// The queue's clock for every worker this fixture makes; [`Fixture::settle`] steps it over retry delays.
    pub(crate) clock: Clock,
    workers: Notifier,
}

/// A worker loop running in the background until [`Running::stop`].
pub(crate) struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<courier_worker::Result<()>>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("joins").expect("the worker stops cleanly");
    }
}

pub(crate) fn config() -> WorkerConfig {
    WorkerConfig {
        retry: courier_core::RetryPolicy {
            initial: Duration::from_millis(20),
            multiplier: 2.0,
            cap: Duration::from_millis(200),
            jitter: 0.0,
        },
        timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_millis(400),
        allowed_targets: vec!["127.0.0.0/8".parse().expect("cidr")],
        concurrency: 16,
        per_webhook: 16,
        per_tenant: 16,
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        lease: Duration::from_millis(800),
        auto_disable: None,
    }
}

impl Fixture {
    pub(crate) async fn new(pool: PgPool) -> Self {
        let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
        Self {
            workers: Notifier::spawn(pool.clone()),
            pool,
            key: MasterKey::from_bytes(&[3u8; 32]),
            owner: Owner { tenant: tenant.id, environment: Environment::Live },
            clock: Clock::database(),
        }
    }

    pub(crate) async fn webhook_for(
        &self,
        owner: Owner,
        url: &str,
        events: &[&str],
        payload: PayloadFilter,
        max_attempts: u32,
    ) -> (Webhook, WebhookSecret) {
        let new = NewWebhook {
            url: url.to_owned(),
            broker: None,
            description: None,
            events: EventSelector::parse(events.iter().copied()).expect("valid selector"),
            payload,
            max_attempts,
            ordering: webhooks::Ordering::None,
            headers: Default::default(),
            rate_limit: None,
        };
        webhooks::create(&self.pool, &self.key, owner, new).await.expect("webhook")
    }

    /// A webhook of the fixture's owner with per-call ordering as given.
    pub(crate) async fn webhook_ordered(&self, url: &str, max_attempts: u32, ordering: webhooks::Ordering) -> Webhook {
        let (webhook, _) = self.webhook(url, max_attempts).await;
        let patch = webhooks::WebhookPatch { ordering: Some(ordering), ..Default::default() };
        let mut conn = self.pool.acquire().await.expect("conn");
        webhooks::update(&mut conn, &self.key, self.owner, &webhook.id, patch).await.expect("update").expect("exists")
    }

    pub(crate) async fn webhook(&self, url: &str, max_attempts: u32) -> (Webhook, WebhookSecret) {
        self.webhook_for(self.owner, url, &["*"], PayloadFilter::default(), max_attempts).await
    }

    /// Stores an event and fans it out in one transaction, through the ingest use case the API calls.
    pub(crate) async fn ingest_for(&self, owner: Owner, event_type: EventType) -> (EventId, u64) {
        let new = NewEvent {
            id: EventId::generate(),
            event_type,
            created: None,
            data: EventData::parse(serde_json::json!({
                "call_id": "call-1",
                "status": "completed",
                "transcript": [{"role": "assistant", "content": "Hello!"}],
                "metrics": {"duration_seconds": 180}
            }))
            .expect("valid"),
        };
        let answers = ingest::accept(&self.pool, &self.workers, owner, vec![new], None).await.expect("ingest");
        let accepted = answers.into_iter().next().expect("one answer").expect("accepted");
        assert!(accepted.first_time);
        (accepted.id, accepted.deliveries)
    }

    pub(crate) async fn ingest(&self) -> EventId {
        self.ingest_for(self.owner, EventType::CallCompleted).await.0
    }

    /// `n` call events with ids `evt_<prefix><i>`, a call each, for a backlog ingested in one go.
    pub(crate) fn call_events(prefix: &str, n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                id: EventId::parse(&format!("evt_{prefix}{i}")).expect("id"),
                event_type: EventType::CallCompleted,
                created: None,
                data: EventData::parse(serde_json::json!({"call_id": format!("call-{i}")})).expect("data"),
            })
            .collect()
    }

    pub(crate) fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(self.pool.clone(), self.key.clone(), config).expect("worker").with_clock(self.clock.clone())
    }

    /// Runs `worker`'s production loop in the background.
    pub(crate) fn start(&self, worker: &Worker) -> Running {
        let stop = CancellationToken::new();
        Running { handle: tokio::spawn(worker.clone().run(stop.clone())), stop }
    }

    /// Deliveries waiting, pending or in flight, those handed over and not written yet included.
    pub(crate) async fn live_deliveries(&self) -> i64 {
        let queued: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status IN ('waiting', 'pending', 'delivering')")
                .fetch_one(&self.pool)
                .await
                .expect("count");
        queued + courier_scheduler::queue::journal::unwritten(&self.pool).await.expect("journal")
    }

    /// Runs `worker` until no delivery is pending or in flight ([`Fixture::settle`]), then stops it. Returns the
    /// retry delays it stepped over.
    pub(crate) async fn drain(&self, worker: &Worker) -> Vec<Duration> {
        let running = self.start(worker);
        let stepped = self.settle().await;
        running.stop().await;
        stepped
    }

    /// Waits until no delivery is pending or in flight. Whenever everything left is waiting for a retry, the
    /// queue's clock is stepped to the earliest one instead of sleeping; returns each delay stepped over, exactly as
    /// the recorder scheduled it (`next_attempt_at` minus the moment it was written, on the queue's clock).
    pub(crate) async fn settle(&self) -> Vec<Duration> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut stepped = Vec::new();
        // Two looks in a row find nothing live: the queue and the journal are read by two statements, and a record
        // that moves a delivery from the journal into the queue between them would hide it from one look.
        let mut quiet = false;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "the queue did not drain");
            let (live, delivering, wait_ms, scheduled_ms): (i64, i64, Option<f64>, Option<f64>) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status IN ('waiting', 'pending', 'delivering')),
                        count(*) FILTER (WHERE status = 'delivering'),
                        (extract(epoch FROM min(next_attempt_at) FILTER (WHERE status = 'pending') - (now() + $1))
                            * 1000)::float8,
                        (SELECT (extract(epoch FROM next_attempt_at - updated_at - $1) * 1000)::float8
                           FROM deliveries WHERE status = 'pending' ORDER BY next_attempt_at LIMIT 1)
                 FROM deliveries",
            )
            .bind(self.clock.skew())
            .fetch_one(&self.pool)
            .await
            .expect("queue state");
            // A delivery handed over in memory is in flight, in the journal, until its first attempt writes it.
            let handed = courier_scheduler::queue::journal::unwritten(&self.pool).await.expect("journal");
            let (live, delivering) = (live + handed, delivering + handed);
            if live == 0 && quiet {
                return stepped;
            }
            quiet = live == 0;
            if quiet {
                continue;
            }
            match wait_ms {
                Some(wait) if delivering == 0 && wait > 0.0 => {
                    stepped.push(Duration::from_millis(scheduled_ms.unwrap_or(0.0).round() as u64));
                    self.clock.advance(Duration::from_millis(wait.ceil() as u64 + 1));
                }
                // Something is in flight or due now: the worker is on it. Look again shortly.
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Polls until `done` holds (at most 10 s), for states the worker reaches by itself.
    pub(crate) async fn until<F: std::future::Future<Output = bool>>(&self, done: impl FnMut() -> F) {
        self.until_within(Duration::from_secs(10), done).await;
    }

    /// [`Fixture::until`] with a deadline of its own.
    pub(crate) async fn until_within<F: std::future::Future<Output = bool>>(
        &self,
        within: Duration,
        mut done: impl FnMut() -> F,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        while !done().await {
            assert!(tokio::time::Instant::now() < deadline, "the expected state never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) async fn deliveries(&self) -> Vec<logs::Delivery> {
        courier_scheduler::operator::deliveries(&self.pool, None, &DeliveryFilter::default(), 1000).await.expect("list")
    }

    pub(crate) async fn only_delivery(&self) -> (logs::Delivery, Vec<logs::Attempt>) {
        let all = self.deliveries().await;
        assert_eq!(all.len(), 1, "{all:?}");
        courier_scheduler::operator::delivery(&self.pool, &all[0].id).await.expect("get").expect("exists")
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
