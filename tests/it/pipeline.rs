//! The delivery pipeline end to end: ingest (events and their fan-out in one transaction), claim, sign, POST to a
//! real receiver, classify, record, retry; what each kind of answer does to a delivery and its webhook.

use std::time::Duration;

use courier_core::signature::verify_standard;
use courier_core::{Environment, ErrorKind, EventType, PayloadFilter, WebhookSecret};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::webhook_changes::SetStatus;
use courier_store::webhooks::{self, WebhookStatus};
use courier_store::{Owner, tenants};
use courier_worker::WorkerConfig;
use sqlx::PgPool;

use crate::fixture::{Fixture, config, now};
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

// Long because it checks every header and both signature schemes of each delivered request in one place.
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
    courier_scheduler::webhook_changes::set_status(&f.pool, f.owner, &disabled.id, SetStatus::Disabled)
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
    // Delays long enough that only stepping the queue's clock can make the retries due.
    let mut cfg = config();
    cfg.retry.initial = Duration::from_secs(20);
    cfg.retry.cap = Duration::from_secs(600);
    let stepped = f.drain(&f.worker(cfg)).await;

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
    // Delays follow the policy: 20 s, then 40 s (no jitter in this test), each stepped over on the queue's clock.
    assert_eq!(stepped, vec![Duration::from_secs(20), Duration::from_secs(40)]);
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
    receiver.script([Reply::WithHeader(429, "retry-after", "90".to_owned())]);
    f.webhook(&receiver.url, 5).await;
    f.ingest().await;
    let mut cfg = config();
    cfg.retry.cap = Duration::from_secs(600);
    let stepped = f.drain(&f.worker(cfg)).await;
    // The policy alone would retry after 20 ms; the receiver asked for a minute and a half.
    assert_eq!(stepped, vec![Duration::from_secs(90)]);
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
        let (delivery, attempts) =
            courier_scheduler::operator::delivery(&f.pool, &delivery.id).await.expect("get").expect("exists");
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
        let (_, attempts) =
            courier_scheduler::operator::delivery(&f.pool, &delivery.id).await.expect("get").expect("exists");
        assert_eq!(attempts[0].error_kind, Some(ErrorKind::BlockedTarget), "{attempts:?}");
    }
}

/// A delivery sends the payload filter its webhook had when the delivery was created, and its log says which: a
/// filter changed while it waits applies to deliveries (and replays) created afterwards, so what the portal shows
/// as sent is what was sent.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_delivery_sends_and_records_the_filter_it_was_created_with(pool: PgPool) {
    use courier_scheduler::replay::{self, Replayed};
    let f = Fixture::new(pool).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let (webhook, _) = f.webhook_for(f.owner, &receiver.url, &["*"], PayloadFilter::default(), 3).await;
    f.ingest_for(f.owner, EventType::CallCompleted).await;
    let all =
        webhooks::WebhookPatch { include_transcript: Some(true), include_metrics: Some(true), ..Default::default() };
    let mut conn = f.pool.acquire().await.expect("conn");
    webhooks::update(&mut conn, &f.key, f.owner, &webhook.id, all).await.expect("update").expect("exists");
    drop(conn);
    f.drain(&f.worker(config())).await;

    let sent = receiver.received();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].json()["event"]["data"].get("transcript").is_none(), "created without the transcript");
    let (delivery, _) = f.only_delivery().await;
    assert_eq!(delivery.payload, Some(PayloadFilter::default()), "the log records the filter it was sent with");

    let Replayed::Queued(replay) = replay::replay_one(&f.pool, f.owner, &delivery.id, None).await.expect("replay")
    else {
        panic!("the delivery is replayable");
    };
    assert_eq!(replay.payload, Some(PayloadFilter { include_transcript: true, include_metrics: true }));
    f.drain(&f.worker(config())).await;
    let sent = receiver.received();
    assert_eq!(sent.len(), 2);
    assert!(sent[1].json()["event"]["data"]["transcript"].is_array(), "a replay is created with today's filter");
}
