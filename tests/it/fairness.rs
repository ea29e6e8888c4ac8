//! Fairness across tenants: one tenant's hanging endpoints cannot take another tenant's share of a worker.

use std::time::{Duration, Instant};

use courier_core::{Environment, EventType, PayloadFilter};
use courier_store::{Owner, tenants};
use courier_worker::WorkerConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fixture::{Fixture, config};
use crate::receiver::{Receiver, Reply};

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_tenant_with_four_hanging_endpoints_leaves_room_for_another_tenant(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let hanging = Receiver::start(Reply::Slow(Duration::from_secs(30))).await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    // Tenant A: four endpoints that never answer within the timeout, with a backlog each.
    for i in 0..4 {
        f.webhook(&format!("{}/{i}", hanging.url), 1).await;
    }
    for _ in 0..10 {
        f.ingest().await;
    }
    // Tenant B: one healthy endpoint.
    let b = tenants::create(&f.pool, "Beta").await.expect("tenant");
    let b = Owner { tenant: b.id, environment: Environment::Live };
    f.webhook_for(b, &healthy.url, &["*"], PayloadFilter::default(), 1).await;

    // Eight slots, two attempts per webhook: A's four endpoints could hold sixteen.
    let cfg = WorkerConfig {
        concurrency: 8,
        per_webhook: 2,
        per_tenant: WorkerConfig::default_per_tenant(8, 2),
        timeout: Duration::from_secs(5),
        lease: Duration::from_secs(15),
        shutdown_grace: Duration::from_millis(200),
        ..config()
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(f.worker(cfg).run(stop.clone()));
    // Let A's endpoints take what they can first.
    while hanging.received().len() < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    for _ in 0..20 {
        f.ingest_for(b, EventType::CallCompleted).await;
    }
    while healthy.received().len() < 20 && started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    worker.await.expect("joins").expect("stops");
    assert_eq!(healthy.received().len(), 20, "tenant B was starved by tenant A's hanging endpoints");
    assert!(took < Duration::from_secs(2), "tenant B waited {took:?} (A's timeout is 5 s)");
    assert!(hanging.received().len() <= 6, "A held more than its share: {}", hanging.received().len());
}

/// Tenant A's large backlog to a healthy endpoint does not hold tenant B's fresh delivery behind it: the claim takes
/// turns across tenants instead of taking the oldest due rows of everyone.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_fresh_delivery_never_waits_behind_another_tenants_backlog(pool: PgPool) {
    use courier_scheduler::{ingest, wake::Notifier};
    const BACKLOG: usize = 5_000;
    let f = Fixture::new(pool).await;
    let a_receiver = Receiver::start(Reply::Status(200)).await;
    let b_receiver = Receiver::start(Reply::Status(200)).await;
    f.webhook(&a_receiver.url, 1).await;
    let b = tenants::create(&f.pool, "Beta").await.expect("tenant");
    let b = Owner { tenant: b.id, environment: Environment::Live };
    f.webhook_for(b, &b_receiver.url, &["*"], PayloadFilter::default(), 1).await;
    let backlog = Fixture::call_events("backlog", BACKLOG);
    ingest::accept(&f.pool, &Notifier::spawn(f.pool.clone()), f.owner, backlog, None).await.expect("ingest");

    let stop = CancellationToken::new();
    let worker = tokio::spawn(f.worker(config()).run(stop.clone()));
    while a_receiver.received().len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = Instant::now();
    f.ingest_for(b, EventType::CallCompleted).await;
    while b_receiver.received().is_empty() && sent.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waited = sent.elapsed();
    let a_done = a_receiver.received().len();
    stop.cancel();
    worker.await.expect("joins").expect("stops");
    eprintln!("tenant B's delivery arrived after {waited:?}, with {a_done} of A's {BACKLOG} delivered");
    assert_eq!(b_receiver.received().len(), 1);
    assert!(a_done < BACKLOG, "A's backlog had drained first: nothing was proven");
    assert!(waited < Duration::from_millis(500), "tenant B waited {waited:?} behind tenant A's backlog");
}
