//! The worker loop as a process lives it: killed mid-flight, two at once, shut down with work in flight, beside a
//! hanging endpoint, and sweeping webhooks that kept failing.

use std::time::Duration;

use courier_core::{Environment, EventType, PayloadFilter};
use courier_scheduler::DeliveryStatus;
use courier_store::Owner;
use courier_store::webhooks::{self, WebhookStatus};
use courier_worker::WorkerConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fixture::{Fixture, config};
use crate::receiver::{Receiver, Reply};

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
    // The statement that recorded each attempt counted it in its webhook's hour.
    let hourly: Vec<(String, i32, i32)> =
        sqlx::query_as("SELECT webhook_id, succeeded, failed FROM delivery_hourly ORDER BY webhook_id")
            .fetch_all(&f.pool)
            .await
            .expect("hourly");
    let mut expected = vec![(dead.id.to_string(), 0, 3), (flaky.id.to_string(), 1, 2)];
    expected.sort();
    assert_eq!(hourly, expected);

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
    let enable = courier_scheduler::webhook_changes::SetStatus::Enabled;
    courier_scheduler::webhook_changes::set_status(&f.pool, f.owner, &dead.id, enable).await.expect("enable");
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
