//! Retention and erasure delete whole events with their deliveries and attempts, and never an unfinished one.

use courier_core::TenantId;
use courier_scheduler::retention::{Erased, purge_expired_batch, purge_tenant};
use courier_scheduler::{Clock, history};
use courier_store::tenants;
use sqlx::PgPool;

async fn event(pool: &PgPool, tenant: TenantId, id: &str, age_days: i32, delivery_status: Option<&str>) {
    sqlx::query(
        "WITH k AS (INSERT INTO event_keys (tenant_id, environment, id, received_at)
                    VALUES ($1, 'live', $2, now() - make_interval(days => $3)) RETURNING received_at)
         INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash, received_at)
         SELECT $1, $2, 'live', 'call.completed', 'c', 0, '{\"call_id\": \"c\"}', '\\x00', received_at FROM k",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(age_days)
    .execute(pool)
    .await
    .expect("event");
    if let Some(status) = delivery_status {
        let webhook: String = sqlx::query_scalar(
            "INSERT INTO webhooks (id, tenant_id, environment, url, max_attempts, secret_ciphertext)
             VALUES (courier_id('wh_'), $1, 'live', 'https://example.com', 5, '\\x00') RETURNING id",
        )
        .bind(tenant.as_uuid())
        .fetch_one(pool)
        .await
        .expect("webhook");
        let next = if status == "pending" { "now()" } else { "NULL" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH d AS (INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id,
                                                status, attempt_count, max_attempts, next_attempt_at, event_received_at)
                        SELECT courier_id('dlv_'), $1, 'live', $2, $3, 'call.completed', 'c', $4, 1, 5, {next},
                               k.received_at
                          FROM event_keys k WHERE k.tenant_id = $1 AND k.environment = 'live' AND k.id = $2
                        RETURNING id)
             INSERT INTO delivery_attempts SELECT id, 1, now(), 5, 500, NULL, NULL, NULL, 0 FROM d"
        )))
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(&webhook)
        .bind(status)
        .execute(pool)
        .await
        .expect("delivery");
    }
}

async fn ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM events ORDER BY id").fetch_all(pool).await.expect("ids")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn expired_events_go_with_their_deliveries_but_unfinished_ones_stay(pool: PgPool) {
    let default = tenants::create(&pool, "Default").await.expect("tenant").id;
    let short = tenants::create(&pool, "Short").await.expect("tenant").id;
    sqlx::query("UPDATE tenants SET retention_days = 1 WHERE id = $1")
        .bind(short.as_uuid())
        .execute(&pool)
        .await
        .expect("override");
    event(&pool, default, "evt_old_done", 40, Some("failed")).await;
    event(&pool, default, "evt_old_pending", 40, Some("pending")).await;
    event(&pool, default, "evt_recent", 10, Some("succeeded")).await;
    event(&pool, short, "evt_short_old", 2, Some("succeeded")).await;
    event(&pool, short, "evt_short_new", 0, None).await;

    assert_eq!(purge_expired_batch(&pool, &Clock::database(), 30).await.expect("purge"), 2);
    assert_eq!(ids(&pool).await, vec!["evt_old_pending", "evt_recent", "evt_short_new"]);
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&pool).await.expect("count");
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts").fetch_one(&pool).await.expect("count");
    assert_eq!((deliveries, attempts), (2, 2), "the deleted events' deliveries and attempts went with them");
    assert_eq!(purge_expired_batch(&pool, &Clock::database(), 30).await.expect("purge"), 0);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn erasure_removes_everything_of_one_tenant_only(pool: PgPool) {
    let gone = tenants::create(&pool, "Leaving").await.expect("tenant").id;
    let stays = tenants::create(&pool, "Staying").await.expect("tenant").id;
    event(&pool, gone, "evt_a", 3, Some("pending")).await;
    event(&pool, gone, "evt_b", 0, None).await;
    event(&pool, stays, "evt_c", 3, Some("failed")).await;
    let cutoff = chrono::Utc::now() - chrono::Duration::days(1);
    assert_eq!(purge_tenant(&pool, gone, Some(cutoff)).await.expect("purge").events, 1);
    assert_eq!(ids(&pool).await, vec!["evt_b", "evt_c"]);
    assert_eq!(purge_tenant(&pool, gone, None).await.expect("purge").events, 1);
    assert_eq!(ids(&pool).await, vec!["evt_c"]);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn erasure_takes_deliveries_whose_event_left_with_its_day(pool: PgPool) {
    let gone = tenants::create(&pool, "Leaving").await.expect("tenant").id;
    let stays = tenants::create(&pool, "Staying").await.expect("tenant").id;
    // Events from before the migration (its legacy day), each with a delivery of today, as a replay of it is.
    event(&pool, gone, "evt_a", 40, Some("succeeded")).await;
    event(&pool, stays, "evt_b", 40, Some("succeeded")).await;
    let legacy = history::days_before(&pool, chrono::Utc::now()).await.expect("days");
    assert_eq!(legacy[0].suffix.as_str(), "legacy");
    assert_eq!(
        history::drop_day(&pool, &legacy[0]).await.expect("drop"),
        history::Dropped::Dropped(Default::default())
    );
    assert_eq!(ids(&pool).await, Vec::<String>::new(), "the events left with their day, their replays did not");

    let erased = purge_tenant(&pool, gone, None).await.expect("purge");
    assert_eq!(erased, Erased { events: 0, deliveries: 1 });
    let left: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT d.tenant_id, count(a.*) FROM deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
          GROUP BY d.tenant_id",
    )
    .fetch_all(&pool)
    .await
    .expect("left");
    assert_eq!(left, vec![(stays.as_uuid(), 1)], "every delivery and attempt of the erased tenant is gone");
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts").fetch_one(&pool).await.expect("count");
    assert_eq!(attempts, 1);
}
