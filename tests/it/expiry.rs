//! No tenant keeps another tenant's history past retention: a day past it goes whatever is still live, the few rows
//! live deliveries still need move aside (to the default partitions) until retention by row takes them, and a
//! delivery's lifetime is capped at its tenant's retention.

use std::time::Duration;

use courier_core::{Environment, EventType, PayloadFilter};
use courier_scheduler::history::{self, Held};
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
}
