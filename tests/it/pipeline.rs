//! The delivery pipeline end to end: ingest (events and their fan-out in one transaction), claim, sign, POST to a
//! real receiver, classify, record, retry. Every test runs the production worker loop (`Worker::run`); retry delays
//! are stepped on the queue's clock, never slept through.

use std::time::Duration;

use courier_core::signature::verify_standard;
use courier_core::{
    Environment, ErrorKind, EventData, EventId, EventSelector, EventType, MasterKey, PayloadFilter, WebhookSecret,
};
use courier_scheduler::logs::{self, DeliveryFilter, Visibility};
use courier_scheduler::wake::Notifier;
use courier_scheduler::{Clock, DeliveryStatus, ingest};
use courier_store::events::NewEvent;
use courier_store::webhooks::{self, NewWebhook, Webhook, WebhookPatch, WebhookStatus};
use courier_store::{Owner, tenants};
use courier_worker::{Worker, WorkerConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

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
            description: None,
            events: EventSelector::parse(events.iter().copied()).expect("valid selector"),
            payload,
            max_attempts,
        };
        webhooks::create(&self.pool, &self.key, owner, new).await.expect("webhook")
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

    pub(crate) fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(self.pool.clone(), self.key.clone(), config).expect("worker").with_clock(self.clock.clone())
    }

    /// Runs `worker`'s production loop in the background.
    pub(crate) fn start(&self, worker: &Worker) -> Running {
        let stop = CancellationToken::new();
        Running { handle: tokio::spawn(worker.clone().run(stop.clone())), stop }
    }

    pub(crate) async fn live_deliveries(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')")
            .fetch_one(&self.pool)
            .await
            .expect("count")
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
        loop {
            assert!(tokio::time::Instant::now() < deadline, "the queue did not drain");
            let (live, delivering, wait_ms, scheduled_ms): (i64, i64, Option<f64>, Option<f64>) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status IN ('pending', 'delivering')),
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
            if live == 0 {
                return stepped;
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
    pub(crate) async fn until<F: std::future::Future<Output = bool>>(&self, mut done: impl FnMut() -> F) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done().await {
            assert!(tokio::time::Instant::now() < deadline, "the expected state never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) async fn deliveries(&self) -> Vec<logs::Delivery> {
        logs::list(&self.pool, Visibility::Operator { tenant: None }, &DeliveryFilter::default(), None, 1000)
            .await
            .expect("list")
    }

    pub(crate) async fn only_delivery(&self) -> (logs::Delivery, Vec<logs::Attempt>) {
        let all = self.deliveries().await;
        assert_eq!(all.len(), 1, "{all:?}");
        logs::get(&self.pool, Visibility::Operator { tenant: None }, &all[0].id).await.expect("get").expect("exists")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn fans_out_to_matching_enabled_webhooks_of_the_tenant_and_environment_only(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let url = |name: &str| format!("{}/{name}", receiver.url);
    let all = PayloadFilter { include_transcript: true, include_metrics: true };
    let (completed, completed_secret) = f.webhook_for(f.owner, &url("completed"), &["call.completed"], all, 5).await;
    let (everything, everything_secret) =
        f.webhook_for(f.owner, &url("all"), &["*"], PayloadFilter::default(), 3).await;
    f.webhook_for(f.owner, &url("started"), &["call.started"], all, 5).await;
    let (disabled, _) = f.webhook_for(f.owner, &url("disabled"), &["*"], all, 5).await;
    let disable = WebhookPatch { enabled: Some(false), ..Default::default() };
    webhooks::update(&mut f.pool.acquire().await.expect("conn"), f.owner, &disabled.id, disable)
        .await
        .expect("disable");
    let test_env = Owner { environment: Environment::Test, ..f.owner };
    f.webhook_for(test_env, &url("test-env"), &["*"], all, 5).await;
    let other_tenant = Owner { tenant: tenants::create(&f.pool, "Globex").await.expect("tenant").id, ..f.owner };
    f.webhook_for(other_tenant, &url("other-tenant"), &["*"], all, 5).await;

    let (event_id, fanned_out) = f.ingest_for(f.owner, EventType::CallCompleted).await;
    assert_eq!(fanned_out, 2);
    f.drain(&f.worker(config())).await;

    let received = receiver.received();
    assert_eq!(received.len(), 2, "only the two matching webhooks receive it");
    for request in &received {
        let (secret, webhook, max_attempts, full) = if request.header("x-webhook-delivery").is_empty() {
            panic!("missing X-Webhook-Delivery");
        } else if request.json()["event"]["data"].get("transcript").is_some() {
            (&completed_secret, &completed, 5, true)
        } else {
            (&everything_secret, &everything, 3, false)
        };
        let body = request.json();
        assert_eq!(body["event"]["id"], event_id.as_str());
        assert_eq!(body["event"]["type"], "call.completed");
        assert_eq!(body["event"]["livemode"], true);
        assert_eq!(body["event"]["tenant_id"], f.owner.tenant.to_string());
        assert_eq!(body["attempt"], 1);
        assert_eq!(body["max_attempts"], max_attempts);
        assert_eq!(body["event"]["data"].get("metrics").is_some(), full, "{}", webhook.id);
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-webhook-event"), "call.completed");
        assert!(request.header("user-agent").starts_with("Courier/"));
        assert!(guide_accepts(secret.expose(), request.header("x-webhook-signature"), &request.body));
        assert!(!guide_accepts(
            WebhookSecret::generate().expose(),
            request.header("x-webhook-signature"),
            &request.body
        ));
        verify_standard(
            secret,
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            request.header("webhook-signature"),
            &request.body,
            now(),
            300,
        )
        .expect("Standard Webhooks signature verifies");
        assert_eq!(request.header("webhook-id"), event_id.as_str());
    }
    let statuses: Vec<_> = f.deliveries().await.into_iter().map(|d| (d.status, d.attempt_count)).collect();
    assert_eq!(statuses, vec![(DeliveryStatus::Succeeded, 1); 2]);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_receiver_failing_k_times_gets_k_plus_one_attempts(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500), Reply::Status(502)]);
    let (_, secret) = f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    let stepped = f.drain(&f.worker(config())).await;

    let (delivery, attempts) = f.only_delivery().await;
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.status_code)).collect::<Vec<_>>(),
        vec![(1, Some(500)), (2, Some(502)), (3, Some(200))]
    );
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.json()["attempt"].as_i64()).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    // Every attempt is signed afresh, and each signature is the one on record.
    for (request, attempt) in received.iter().zip(&attempts) {
        assert!(guide_accepts(secret.expose(), request.header("x-webhook-signature"), &request.body));
        assert_eq!(request.header("webhook-timestamp"), attempt.signature_timestamp.to_string());
    }
    // Delays follow the policy: 20 ms, then 40 ms (no jitter in this test), each waited out on the queue's clock.
    assert_eq!(stepped, vec![Duration::from_millis(20), Duration::from_millis(40)]);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_receiver_that_always_fails_exhausts_max_attempts(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    f.webhook(&receiver.url, 3).await;
    f.ingest().await;
    f.drain(&f.worker(config())).await;
    let (delivery, attempts) = f.only_delivery().await;
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.attempt_count, 3);
    assert_eq!(attempts.len(), 3);
    assert_eq!(receiver.received().len(), 3);
    assert!(attempts.iter().all(|a| a.response_body.as_ref().map(|b| b.display()).as_deref() == Some("ok")));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn retry_after_on_429_is_honoured(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::WithHeader(429, "retry-after", "1".to_owned())]);
    f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    let mut cfg = config();
    cfg.retry.cap = Duration::from_secs(5);
    let stepped = f.drain(&f.worker(cfg)).await;
    // The policy alone would retry after 20 ms; the receiver asked for a second.
    assert_eq!(stepped, vec![Duration::from_secs(1)]);
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(f.only_delivery().await.0.status, DeliveryStatus::Succeeded);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn gone_disables_the_webhook_and_cancels_its_queue(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(410)).await;
    let (webhook, _) = f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    f.drain(&f.worker(WorkerConfig { concurrency: 1, ..config() })).await;
    // An event after the 410 finds the webhook disabled and fans out to nothing.
    let (_, fanned_out) = f.ingest_for(f.owner, EventType::CallCompleted).await;
    assert_eq!(fanned_out, 0);
    let stored = webhooks::get(&f.pool, f.owner, &webhook.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, WebhookStatus::Disabled(webhooks::DisabledReason::Gone));
    let deliveries = f.deliveries().await;
    assert_eq!(deliveries.len(), 1, "a disabled webhook receives no new deliveries");
    assert_eq!((deliveries[0].status, deliveries[0].attempt_count), (DeliveryStatus::Failed, 1));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn gone_cancels_deliveries_already_queued(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(410)).await;
    f.webhook(&receiver.url, 5).await;
    let first = f.ingest().await;
    f.ingest().await;
    f.ingest().await;
    // The other two wait for a retry an hour away (the recorder works asynchronously, so deliveries due now could
    // be attempted before the 410 is on record): the 410 must cancel them.
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() + interval '1 hour' WHERE event_id <> $1")
        .bind(first.as_str())
        .execute(&f.pool)
        .await
        .expect("postpone");
    f.drain(&f.worker(config())).await;
    let mut statuses: Vec<_> = f.deliveries().await.into_iter().map(|d| d.status.as_str()).collect();
    statuses.sort();
    assert_eq!(statuses, vec!["cancelled", "cancelled", "failed"]);
    assert_eq!(receiver.received().len(), 1);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn timeouts_refused_connections_and_redirects_are_retried_failures(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let slow = Receiver::start(Reply::Slow(Duration::from_secs(2))).await;
    let redirect = Receiver::start(Reply::WithHeader(302, "location", "http://127.0.0.1:9/elsewhere".to_owned())).await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        format!("http://127.0.0.1:{port}/hook")
    };
    f.webhook(&slow.url, 2).await;
    f.webhook(&redirect.url, 2).await;
    f.webhook(&refused, 2).await;
    f.ingest().await;
    f.drain(&f.worker(config())).await;

    let mut outcomes = Vec::new();
    for delivery in f.deliveries().await {
        let (delivery, attempts) = logs::get(&f.pool, Visibility::Operator { tenant: None }, &delivery.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(delivery.status, DeliveryStatus::Failed);
        assert_eq!(attempts.len(), 2);
        outcomes.push(
            attempts[0]
                .error_kind
                .map(|k| k.to_string())
                .or(attempts[0].status_code.map(|c| c.to_string()))
                .expect("one of them"),
        );
    }
    outcomes.sort();
    assert_eq!(outcomes, vec!["302", "connect", "timeout"]);
    assert_eq!(redirect.received().len(), 2, "the redirect is not followed");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn forbidden_targets_are_recorded_as_blocked_not_sent(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    f.webhook(&receiver.url, 1).await;
    f.webhook(&by_name, 1).await;
    f.ingest().await;
    let guarded = f.worker(WorkerConfig { allowed_targets: vec![], ..config() });
    f.drain(&guarded).await;
    assert!(receiver.received().is_empty(), "nothing reaches a forbidden address");
    for delivery in f.deliveries().await {
        let (_, attempts) = logs::get(&f.pool, Visibility::Operator { tenant: None }, &delivery.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(attempts[0].error_kind, Some(ErrorKind::BlockedTarget), "{attempts:?}");
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_killed_worker_loses_nothing(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(200))).await;
    f.webhook(&receiver.url, 5).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(f.ingest().await);
    }
    let cfg = WorkerConfig { concurrency: 4, ..config() };
    let doomed = tokio::spawn(f.worker(cfg.clone()).run(CancellationToken::new()));
    // Let it claim and send its first batch, then kill it without any chance to record or release.
    while receiver.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.abort();
    let _ = doomed.await;
    let in_flight_at_death: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'delivering'")
        .fetch_one(&f.pool)
        .await
        .expect("count");
    assert!(in_flight_at_death > 0, "the test must kill the worker mid-flight");

    let survivor = CancellationToken::new();
    let handle = tokio::spawn(f.worker(cfg).run(survivor.clone()));
    for _ in 0..300 {
        if f.live_deliveries().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    survivor.cancel();
    handle.await.expect("joins").expect("runs cleanly");

    assert_eq!(f.live_deliveries().await, 0);
    assert!(f.deliveries().await.iter().all(|d| d.status == DeliveryStatus::Succeeded));
    let mut seen: Vec<String> = receiver.received().iter().map(|r| r.event_id()).collect();
    seen.sort();
    let total = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), ids.len(), "every event arrived");
    assert!(total - seen.len() <= in_flight_at_death as usize, "duplicates only for what was in flight");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn two_workers_deliver_each_delivery_exactly_once(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    f.webhook(&format!("{}/a", receiver.url), 5).await;
    f.webhook(&format!("{}/b", receiver.url), 5).await;
    let stop = CancellationToken::new();
    let workers =
        [tokio::spawn(f.worker(config()).run(stop.clone())), tokio::spawn(f.worker(config()).run(stop.clone()))];
    for _ in 0..100 {
        f.ingest().await;
    }
    for _ in 0..500 {
        if f.live_deliveries().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for w in workers {
        w.await.expect("joins").expect("runs cleanly");
    }
    let received = receiver.received();
    assert_eq!(received.len(), 200);
    let mut keys: Vec<String> = received.iter().map(|r| r.header("x-webhook-delivery").to_owned()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 200, "no delivery was sent twice");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn shutdown_finishes_in_flight_attempts_and_records_them(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Slow(Duration::from_millis(300))).await;
    f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    let stop = CancellationToken::new();
    let handle = tokio::spawn(f.worker(config()).run(stop.clone()));
    while receiver.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    handle.await.expect("joins").expect("stops cleanly");
    let (delivery, attempts) = f.only_delivery().await;
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(attempts.len(), 1);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn shutdown_releases_what_outlives_the_grace_period(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Slow(Duration::from_secs(3))).await;
    f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    let stop = CancellationToken::new();
    let cfg = WorkerConfig {
        timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_millis(100),
        lease: Duration::from_secs(60),
        ..config()
    };
    let handle = tokio::spawn(f.worker(cfg).run(stop.clone()));
    while receiver.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    handle.await.expect("joins").expect("stops cleanly");
    let (delivery, attempts) = f.only_delivery().await;
    assert_eq!(delivery.status, DeliveryStatus::Pending, "released, not left leased for a minute");
    assert_eq!(delivery.attempt_count, 0);
    assert!(attempts.is_empty());
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_deleted_webhooks_queued_deliveries_are_cancelled(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let (webhook, _) = f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    let mut tx = f.pool.begin().await.expect("tx");
    assert!(webhooks::delete(&mut *tx, f.owner, &webhook.id).await.expect("delete"));
    let cancelled = courier_scheduler::disabling::cancel_queue(&mut tx, std::slice::from_ref(&webhook.id));
    assert_eq!(cancelled.await.expect("cancel"), 1);
    tx.commit().await.expect("commit");
    f.drain(&f.worker(config())).await;
    assert!(receiver.received().is_empty());
    assert_eq!(f.only_delivery().await.0.status, DeliveryStatus::Cancelled);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_hanging_endpoint_cannot_take_every_slot(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let hanging = Receiver::start(Reply::Slow(Duration::from_secs(3))).await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    f.webhook(&hanging.url, 5).await;
    f.webhook(&healthy.url, 5).await;
    for _ in 0..10 {
        f.ingest().await;
    }
    let cfg = WorkerConfig { concurrency: 4, per_webhook: 1, timeout: Duration::from_secs(10), ..config() };
    let stop = CancellationToken::new();
    let handle = tokio::spawn(f.worker(cfg).run(stop.clone()));
    for _ in 0..300 {
        if healthy.received().len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(healthy.received().len(), 10, "the healthy endpoint is served while the other hangs");
    assert_eq!(hanging.received().len(), 1, "the hanging endpoint holds at most its one slot");
    stop.cancel();
    handle.await.expect("joins").expect("stops");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_webhook_that_keeps_failing_is_disabled_and_a_success_resets_the_clock(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let failing = Receiver::start(Reply::Status(500)).await;
    let recovering = Receiver::start(Reply::Status(500)).await;
    let (dead, _) = f.webhook(&failing.url, 1).await;
    let (flaky, _) = f.webhook(&recovering.url, 1).await;
    let rule = courier_worker::AutoDisable { after: Duration::from_secs(60), min_failures: 2 };
    let worker = f.worker(WorkerConfig { auto_disable: Some(rule), ..config() });
    let status = |id: &courier_core::WebhookId| {
        let (pool, owner, id) = (f.pool.clone(), f.owner, id.clone());
        async move { webhooks::get(&pool, owner, &id).await.expect("get").expect("exists").status }
    };
    f.ingest().await;
    f.ingest().await;
    f.drain(&worker).await;
    // Both have failed twice; then the flaky one succeeds once, which ends its streak.
    recovering.script([Reply::Status(200)]);
    let (_, n) = f.ingest_for(f.owner, EventType::CallCompleted).await;
    assert_eq!(n, 2);
    f.drain(&worker).await;
    assert_eq!(recovering.received().len(), 3);

    // A minute passes on the queue's clock: the running worker's sweep disables the dead one, and only it (one
    // statement decides both).
    let running = f.start(&worker);
    f.clock.advance(Duration::from_secs(61));
    let disabled = WebhookStatus::Disabled(webhooks::DisabledReason::Failing);
    f.until(|| async { status(&dead.id).await == disabled }).await;
    assert_eq!(status(&flaky.id).await, WebhookStatus::Enabled, "its success reset the clock");
    running.stop().await;

    // Re-enabling starts a fresh streak: one more failure does not disable it again, while a webhook with two
    // failures (in the test environment, so the two events reach it alone), swept by the same statement, is.
    let mut conn = f.pool.acquire().await.expect("conn");
    let enable = WebhookPatch { enabled: Some(true), ..Default::default() };
    webhooks::update(&mut conn, f.owner, &dead.id, enable).await.expect("enable");
    let test_env = Owner { environment: Environment::Test, ..f.owner };
    let (witness, _) = f.webhook_for(test_env, &failing.url, &["*"], PayloadFilter::default(), 1).await;
    f.ingest().await;
    f.ingest_for(test_env, EventType::CallFailed).await;
    f.ingest_for(test_env, EventType::CallFailed).await;
    f.drain(&worker).await;
    let running = f.start(&worker);
    f.clock.advance(Duration::from_secs(61));
    let witness_status = || {
        let (pool, id) = (f.pool.clone(), witness.id.clone());
        async move { webhooks::get(&pool, test_env, &id).await.expect("get").expect("exists").status }
    };
    f.until(|| async { witness_status().await == disabled }).await;
    assert_eq!(status(&dead.id).await, WebhookStatus::Enabled, "one exhausted delivery is below the minimum");
    running.stop().await;
}
