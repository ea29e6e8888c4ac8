//! No tenant keeps another tenant's history past retention: a day past it goes whatever is still live, the few rows
//! live deliveries still need move aside (to the default partitions) until retention by row takes them, and a
//! delivery's lifetime is capped at its tenant's retention.

use std::time::Duration;

use courier_core::{Environment, EventType, PayloadFilter};
use courier_scheduler::history::{self, Held};
use courier_scheduler::{DeliveryStatus, retention};
use courier_store::webhooks::Ordering;
use courier_store::{Owner, events, tenants};
use sqlx::PgPool;

use crate::fixture::{Fixture, config};
use crate::receiver::{Receiver, Reply};

const DAY: Duration = Duration::from_secs(86_400);

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.expect("count")
}

/// The time the fixture's queue clock says it is.
fn now(f: &Fixture) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::from_std(f.clock.skew()).expect("skew")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_delivery_waiting_a_day_keeps_no_other_tenants_expired_history(pool: PgPool) {
    let f = Fixture::new(pool).await;
    // One tenant's receiver asks for a day's pause each time; an ordered chain waits behind its first delivery.
    let pausing = Receiver::start(Reply::WithHeader(503, "retry-after", "86400".to_owned())).await;
    f.webhook_ordered(&pausing.url, 10, Ordering::Call).await;
    let first = f.ingest().await;
    let second = f.ingest().await;
    // Another tenant's receiver answers at once, with a body the attempt keeps.
    let other =
        Owner { tenant: tenants::create(&f.pool, "Other").await.expect("tenant").id, environment: Environment::Live };
    let answering = Receiver::start(Reply::Status(200)).await;
    f.webhook_for(other, &answering.url, &["*"], PayloadFilter::default(), 5).await;
    let (others, _) = f.ingest_for(other, EventType::CallCompleted).await;

    let mut cfg = config();
    cfg.retry.cap = DAY;
    let running = f.start(&f.worker(cfg));
    f.until(|| async {
        count(&f.pool, "SELECT count(*) FROM deliveries WHERE status = 'succeeded' OR attempt_count = 1").await == 2
    })
    .await;
    running.stop().await;
    let waits = "SELECT round(extract(epoch FROM next_attempt_at - updated_at))::bigint FROM deliveries
                  WHERE status = 'pending'";
    assert_eq!(count(&f.pool, waits).await, 86_400, "the first delivery waits the day its receiver asked for");

    // A month on (30 days' retention), today is past retention for every tenant.
    f.clock.advance(31 * DAY);
    let (dropped, kept) = history::drop_expired(&f.pool, 30, now(&f)).await.expect("drop");
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(kept.is_empty(), "no day is kept for live work: {kept:?}");
    let held = dropped.iter().find(|(d, _)| d.suffix.as_str() == today).map(|(_, held)| *held);
    assert_eq!(held, Some(Held { events: 2, attempts: 1 }), "{dropped:?}");
    // The other tenant's event, delivery and attempt (its receiver's answer) went with the day.
    assert_eq!(events::get(&f.pool, other, &others).await.expect("get"), None);
    let of_other = format!("SELECT count(*) FROM deliveries WHERE tenant_id = '{}'", other.tenant.as_uuid());
    assert_eq!(count(&f.pool, &of_other).await, 0);
    // The chain still needs its events and keeps its first attempt: moved aside, not lost.
    for id in [&first, &second] {
        assert!(events::get(&f.pool, f.owner, id).await.expect("get").is_some(), "{id} is kept for its delivery");
    }
    assert_eq!(count(&f.pool, "SELECT count(*) FROM deliveries_live").await, 2);
    assert_eq!(count(&f.pool, "SELECT count(*) FROM delivery_attempts").await, 1);
    assert_eq!(count(&f.pool, "SELECT count(*) FROM event_keys").await, 2, "only the held events' ids stay taken");

    the_cap_ends_the_chain_then_retention_takes_what_was_held(&f, &pausing).await;
}

/// The rest of the story above: a month past its start, the chain waiting a day at a time is ended by the cap, its
/// log saying why, and retention by row then takes what the day's drop held for it.
async fn the_cap_ends_the_chain_then_retention_takes_what_was_held(f: &Fixture, pausing: &Receiver) {
    // The cap ends the chain, which outlived the retention; its log says so, the held first attempt included.
    assert_eq!(retention::expire_batch(&f.pool, &f.clock, 30).await.expect("expire"), 2);
    let chain = f.deliveries().await;
    assert_eq!(chain.len(), 2);
    for d in &chain {
        assert_eq!((d.status, d.last_error.as_deref()), (DeliveryStatus::Failed, Some("outlived_retention")));
        assert_eq!(d.last_status_code, None, "the last outcome is the cap; the 503 is in the attempts");
    }
    let head = chain.iter().find(|d| d.attempt_count == 1).expect("the first delivery");
    let (_, attempts) = courier_scheduler::operator::delivery(&f.pool, &head.id).await.expect("get").expect("a");
    assert_eq!(attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), vec![Some(503)]);
    assert_eq!(pausing.received().len(), 1, "nothing was sent for the cap");
    // Nothing live needs the held rows any more: retention by row takes them.
    assert_eq!(retention::purge_expired_batch(&f.pool, &f.clock, 30).await.expect("purge"), 2);
    for table in ["events", "event_keys", "deliveries", "delivery_attempts"] {
        assert_eq!(count(&f.pool, &format!("SELECT count(*) FROM {table}")).await, 0, "{table} is empty");
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_delivery_outliving_the_retention_ends_and_lets_its_chain_go(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook_ordered("http://127.0.0.1:9/hook", 10, Ordering::Call).await;
    f.ingest().await;
    f.ingest().await;
    // The chain's first delivery was created 31 days ago (its id says when), as one a receiver kept postponing.
    sqlx::query(
        "UPDATE deliveries SET id = courier_id_floor('dlv_', now() - interval '31 days'),
                               created_at = now() - interval '31 days'
          WHERE status = 'pending'",
    )
    .execute(&f.pool)
    .await
    .expect("backdate");
    assert_eq!(retention::expire_batch(&f.pool, &f.clock, 30).await.expect("expire"), 1);
    let chain: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, last_error FROM deliveries ORDER BY id").fetch_all(&f.pool).await.expect("q");
    let outlived = Some("outlived_retention".to_owned());
    assert_eq!(chain, vec![("failed".to_owned(), outlived), ("pending".to_owned(), None)], "the next one may go");
    assert_eq!(retention::expire_batch(&f.pool, &f.clock, 30).await.expect("expire"), 0);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_cap_is_each_tenants_own_retention_and_waits_for_a_delivery_in_flight(pool: PgPool) {
    let f = Fixture::new(pool).await;
    sqlx::query("UPDATE tenants SET retention_days = 1 WHERE id = $1")
        .bind(f.owner.tenant.as_uuid())
        .execute(&f.pool)
        .await
        .expect("short retention");
    f.webhook("http://127.0.0.1:9/hook", 5).await;
    let other =
        Owner { tenant: tenants::create(&f.pool, "Other").await.expect("tenant").id, environment: Environment::Live };
    f.webhook_for(other, "http://127.0.0.1:9/hook", &["*"], PayloadFilter::default(), 5).await;
    f.ingest().await;
    f.ingest().await;
    f.ingest_for(other, EventType::CallCompleted).await;
    // One of the short-retention tenant's deliveries is in flight, its lease (on the queue's clock) three days long.
    sqlx::query(
        "UPDATE deliveries SET status = 'delivering', attempt_count = 1, next_attempt_at = NULL,
                               lease_expires_at = now() + interval '3 days'
          WHERE id = (SELECT min(id) FROM deliveries WHERE tenant_id = $1)",
    )
    .bind(f.owner.tenant.as_uuid())
    .execute(&f.pool)
    .await
    .expect("in flight");

    f.clock.advance(2 * DAY);
    assert_eq!(retention::expire_batch(&f.pool, &f.clock, 30).await.expect("expire"), 1, "the pending one");
    f.clock.advance(2 * DAY);
    assert_eq!(retention::expire_batch(&f.pool, &f.clock, 30).await.expect("expire"), 1, "its lease ran out");
    let live: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM deliveries_live").fetch_all(&f.pool).await.expect("live");
    assert_eq!(live, vec![other.tenant.as_uuid()], "four days are within the other tenant's 30");
}
