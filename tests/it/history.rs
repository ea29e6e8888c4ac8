//! Partitioned history (migration 0015): days are created ahead and dropped whole past retention, holding back only
//! what live deliveries still need; the upgrade converts tables that already hold data.

use chrono::{Duration, Utc};
use courier_core::{DeliveryId, EventType};
use courier_scheduler::Clock;
use courier_scheduler::history::{self, Dropped, Held};
use courier_scheduler::replay::{self, Replayed};
use courier_scheduler::retention::purge_expired_batch;
use courier_store::events;
use sqlx::PgPool;

use crate::fixture::Fixture;

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT suffix FROM courier_partitions WHERE table_name = 'events' ORDER BY upper NULLS LAST")
        .fetch_all(pool)
        .await
        .expect("partitions")
}

/// A `call.completed` event with this id, as an emitter would post it again.
fn event_with_id(id: &courier_core::EventId) -> events::NewEvent {
    events::NewEvent {
        id: id.clone(),
        event_type: EventType::CallCompleted,
        created: None,
        data: courier_core::EventData::parse(serde_json::json!({"call_id": "c"})).expect("data"),
    }
}

/// Finishes every delivery as succeeded, with one attempt each.
async fn finish_all(pool: &PgPool) {
    sqlx::query(
        "WITH d AS (UPDATE deliveries SET status = 'succeeded', next_attempt_at = NULL, attempt_count = 1
                    WHERE status = 'pending' RETURNING id)
         INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, signature_timestamp)
         SELECT id, 1, now(), 3, 200, 0 FROM d",
    )
    .execute(pool)
    .await
    .expect("finish");
}

/// An event received `days` ago, so it sits in the legacy partition (everything before the migration), with a
/// delivery of today to the fixture's webhook, as a replay of it made before migration 0023 would be (its id names
/// its own time, its event's day is its column, as migration 0029 filled it).
pub(crate) async fn old_event_with_delivery_today(f: &Fixture, days: i32, status: &str) -> String {
    let webhook: String = sqlx::query_scalar("SELECT id FROM webhooks LIMIT 1").fetch_one(&f.pool).await.expect("hook");
    sqlx::query(
        "WITH k AS (INSERT INTO event_keys (tenant_id, environment, id, received_at)
                    VALUES ($1, 'live', 'evt_old', now() - make_interval(days => $2)) RETURNING received_at),
              e AS (INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash,
                                        received_at)
                    SELECT $1, 'evt_old', 'live', 'call.completed', 'c', 0, '{\"call_id\": \"c\"}', '\\x00',
                           received_at FROM k)
         INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 max_attempts, next_attempt_at, event_received_at)
         SELECT courier_id('dlv_'), $1, 'live', 'evt_old', $3, 'call.completed', 'c', $4, 3,
                CASE WHEN $4 = 'pending' THEN now() END, received_at FROM k",
    )
    .bind(f.owner.tenant.as_uuid())
    .bind(days)
    .bind(&webhook)
    .bind(status)
    .execute(&f.pool)
    .await
    .expect("old event");
    webhook
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn day_bounds_in_sql_are_the_first_ids_of_their_millisecond(pool: PgPool) {
    for ms in [0i64, 1, 1_700_000_000_000, 1_764_374_400_000, 281_474_976_710_655] {
        let sql: String = sqlx::query_scalar("SELECT courier_id_floor('dlv_', to_timestamp($1::float8 / 1000))")
            .bind(ms as f64)
            .fetch_one(&pool)
            .await
            .expect("floor");
        assert_eq!(sql, DeliveryId::first_at(ms).as_str(), "at {ms} ms");
    }
}

/// The ids SQL makes (fan-out, replays) name their millisecond as Rust reads it, and `courier_id_time` reads it back
/// exactly in any session time zone, as an expression the planner inlines: a call that is not inlined parses its
/// body again for every statement (0.16 ms for each handed-over delivery's record, migration 0030).
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn ids_made_in_sql_name_their_millisecond_and_read_back_inline(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SET timezone = 'Pacific/Chatham'").execute(&mut *conn).await.expect("time zone");
    for ms in [0i64, 1, 1_700_000_000_000, 1_764_374_399_999, 1_764_374_400_000, 4_102_444_799_999] {
        let (id, back): (String, i64) = sqlx::query_as(
            "SELECT id, (extract(epoch FROM courier_id_time(id)) * 1000)::int8
               FROM (SELECT courier_id_at('dlv_', to_timestamp($1::float8 / 1000)) AS id) i",
        )
        .bind(ms as f64)
        .fetch_one(&mut *conn)
        .await
        .expect("id");
        let parsed = DeliveryId::parse(&id).expect("a delivery id");
        assert_eq!(&parsed.as_str()[..14], &DeliveryId::first_at(ms).as_str()[..14], "at {ms} ms");
        assert_eq!(back, ms, "{id} read back");
    }
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN VERBOSE SELECT courier_id_time(x) FROM unnest($1::text[]) AS x")
            .bind(vec![DeliveryId::first_at(1).as_str().to_owned()])
            .fetch_all(&mut *conn)
            .await
            .expect("plan");
    assert!(!plan.join("\n").contains("courier_id_time"), "not inlined:\n{}", plan.join("\n"));
}
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn partitions_are_created_a_week_ahead_once(pool: PgPool) {
    let now = Utc::now();
    let created = history::create_ahead(&pool, now).await.expect("create");
    assert!((6..=7).contains(&created), "today and tomorrow exist from the migration; created {created}");
    assert_eq!(history::create_ahead(&pool, now).await.expect("again"), 0, "nothing twice");
    let days = partitions(&pool).await;
    assert_eq!(days.len(), 1 + 2 + created as usize + 1, "legacy, the migration's two, the new, default: {days:?}");
    let last_day = (now + history::AHEAD).format("%Y%m%d").to_string();
    assert!(days.contains(&last_day), "{last_day} in {days:?}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_finished_day_past_retention_is_dropped_whole(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    let id = f.ingest().await;
    finish_all(&f.pool).await;
    assert_eq!((count(&f.pool, "deliveries").await, count(&f.pool, "delivery_attempts").await), (1, 1));

    // Forty days on, with 30 days' retention, today and everything before it are past.
    let (dropped, kept) = history::drop_expired(&f.pool, 30, Utc::now() + Duration::days(40)).await.expect("drop");
    let today = Utc::now().format("%Y%m%d").to_string();
    let dropped: Vec<&str> = dropped.iter().map(|(d, _)| d.suffix.as_str()).collect();
    assert!(dropped.contains(&"legacy") && dropped.contains(&today.as_str()), "{dropped:?}");
    assert!(kept.is_empty(), "{kept:?}");
    assert!(!partitions(&f.pool).await.contains(&today));
    for table in ["events", "event_keys", "deliveries", "delivery_attempts"] {
        assert_eq!(count(&f.pool, table).await, 0, "{table} is empty");
    }
    // The key went with the day: the id is free again, and the tables still take rows (in DEFAULT for today now).
    let mut conn = f.pool.acquire().await.expect("conn");
    let inserted = events::insert_many(&mut conn, f.owner, &[event_with_id(&id)]).await.expect("insert");
    assert!(matches!(inserted[0], events::Inserted::New(_)));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_day_with_live_work_goes_and_holds_only_what_the_work_needs(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    let id = f.ingest().await;
    let clock = Clock::database();
    clock.advance(std::time::Duration::from_secs(40 * 86_400));
    let later = Utc::now() + Duration::days(40);
    let today = Utc::now().format("%Y%m%d").to_string();

    let (dropped, kept) = history::drop_expired(&f.pool, 30, later).await.expect("drop");
    let held = dropped.iter().find(|(d, _)| d.suffix.as_str() == today).map(|(_, held)| *held);
    assert_eq!(held, Some(Held { events: 1, attempts: 0 }), "the pending delivery's event is held: {dropped:?}");
    assert!(kept.is_empty(), "{kept:?}");
    assert!(events::get(&f.pool, f.owner, &id).await.expect("get").is_some());
    assert_eq!(count(&f.pool, "event_keys").await, 1, "the key is kept with its event");
    assert_eq!(count(&f.pool, "ONLY events_default").await, 1);
    assert_eq!(purge_expired_batch(&f.pool, &clock, 30).await.expect("purge"), 0, "nothing live is deleted");

    // Finished now, the delivery and its attempt land in the DEFAULT partitions; retention by row takes them all.
    finish_all(&f.pool).await;
    assert_eq!(count(&f.pool, "ONLY deliveries_default").await, 1);
    assert_eq!(purge_expired_batch(&f.pool, &clock, 30).await.expect("purge"), 1);
    for table in ["events", "event_keys", "deliveries", "delivery_attempts"] {
        assert_eq!(count(&f.pool, table).await, 0, "{table} is empty");
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_day_whose_event_a_live_delivery_of_another_day_needs_goes_and_holds_it(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    old_event_with_delivery_today(&f, 40, "pending").await;
    // Thirty days on, the legacy day (before the migration) is past retention and today is not.
    let later = Utc::now() + Duration::days(30);
    let legacy = history::days_before(&f.pool, later - Duration::days(30)).await.expect("days");
    assert_eq!(legacy.iter().map(|d| d.suffix.as_str()).collect::<Vec<_>>(), vec!["legacy"]);
    let dropped = history::drop_day(&f.pool, &legacy[0]).await.expect("drop");
    assert_eq!(dropped, Dropped::Dropped(Held { events: 1, attempts: 0 }));
    assert!(!partitions(&f.pool).await.contains(&"legacy".to_owned()));
    assert_eq!(count(&f.pool, "events").await, 1, "the event a pending delivery needs is held");
    assert_eq!(count(&f.pool, "event_keys").await, 1, "and its id stays taken");
    // It is still delivered: the claim finds its event where it was moved.
    let claimed =
        courier_scheduler::claim(&f.pool, &f.clock, 10, std::time::Duration::from_secs(30), Default::default())
            .await
            .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.id.as_str(), "evt_old");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_replay_of_a_dropped_days_event_finds_nothing(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    old_event_with_delivery_today(&f, 40, "succeeded").await;
    let delivery: String = sqlx::query_scalar("SELECT id FROM deliveries").fetch_one(&f.pool).await.expect("id");
    let delivery = DeliveryId::parse(&delivery).expect("id");
    let legacy = history::days_before(&f.pool, Utc::now()).await.expect("days");
    assert!(matches!(history::drop_day(&f.pool, &legacy[0]).await.expect("drop"), Dropped::Dropped(_)));

    let replayed = replay::replay_one(&f.pool, f.owner, &delivery, None).await.expect("replay");
    assert_eq!(replayed, Replayed::NotFound, "no live delivery is ever queued for an event that is gone");
    assert_eq!(count(&f.pool, "deliveries").await, 1);
}

/// Runs the migrations `pick` selects, as the migrator would: each in its own transaction.
pub(crate) async fn migrate(pool: &PgPool, pick: impl Fn(i64) -> bool) {
    for m in courier_store::MIGRATOR.iter().filter(|m| pick(m.version)) {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::raw_sql(m.sql.clone()).execute(&mut *tx).await.expect("migration");
        tx.commit().await.expect("commit");
    }
}

#[sqlx::test(migrations = false)]
async fn the_upgrade_converts_tables_that_already_hold_data(pool: PgPool) {
    migrate(&pool, |v| v < 15).await;
    let tenant = courier_store::tenants::create(&pool, "Acme").await.expect("tenant").id;
    // The old schema's rows: an event with a finished delivery (and its attempt) and a pending one.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhooks (id, tenant_id, environment, url, max_attempts, secret_ciphertext)
         VALUES (courier_id('wh_'), '{tenant}', 'live', 'http://127.0.0.1:9/', 3, '\\x00');
         INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash)
         VALUES ('{tenant}', 'evt_1', 'live', 'call.completed', 'c', 7, '{{\"call_id\": \"c\"}}', '\\x00');
         INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, next_attempt_at)
         SELECT courier_id('dlv_'), '{tenant}', 'live', 'evt_1', w.id, 'call.completed', 'c', s, n, 3,
                CASE WHEN s = 'pending' THEN now() END
           FROM webhooks w, (VALUES ('succeeded', 1), ('pending', 0)) AS v(s, n);
         INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, signature_timestamp)
         SELECT id, 1, now(), 3, 200, 0 FROM deliveries WHERE status = 'succeeded';",
        tenant = tenant.as_uuid()
    )))
    .execute(&pool)
    .await
    .expect("old rows");

    migrate(&pool, |v| v >= 15).await;
    // Every row stayed where it was, as the first partition, but the live delivery, which joined the queue.
    for table in ["events", "deliveries", "delivery_attempts"] {
        assert_eq!(count(&pool, &format!("ONLY {table}_legacy")).await, 1, "{table}_legacy");
    }
    assert_eq!(count(&pool, "deliveries").await, 2);
    let live: Vec<String> = sqlx::query_scalar("SELECT status FROM deliveries_live").fetch_all(&pool).await.expect("q");
    assert_eq!(live, vec!["pending"]);
    let owner = courier_store::Owner { tenant, environment: courier_core::Environment::Live };
    let id = courier_core::EventId::parse("evt_1").expect("id");
    let stored = events::get(&pool, owner, &id).await.expect("get").expect("the event is found through its key");
    assert_eq!(stored.event.created, 7);
    // The pending delivery is claimed with its event's payload, from the legacy partitions.
    let clock = courier_scheduler::Clock::database();
    let claimed = courier_scheduler::claim(&pool, &clock, 10, std::time::Duration::from_secs(30), Default::default())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.id, id);
    // The old id is still taken: a repeat with another body conflicts.
    let reuse = events::NewEvent {
        id,
        event_type: EventType::CallCompleted,
        created: Some(8),
        data: courier_core::EventData::parse(serde_json::json!({"call_id": "c"})).expect("data"),
    };
    let mut conn = pool.acquire().await.expect("conn");
    let inserted = events::insert_many(&mut conn, owner, &[reuse]).await.expect("insert");
    assert_eq!(inserted, vec![events::Inserted::Conflict]);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_drop_that_would_wait_on_a_long_query_gives_up_and_changes_nothing(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    f.ingest().await;
    finish_all(&f.pool).await;
    let today = history::days_before(&f.pool, Utc::now() + Duration::days(2))
        .await
        .expect("days")
        .into_iter()
        .find(|d| d.suffix.as_str() == Utc::now().format("%Y%m%d").to_string())
        .expect("today");
    // A long reader of today's events: the drop must not queue every other query behind it.
    let mut reader = f.pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {} IN ACCESS SHARE MODE", today.suffix.table("events"))))
        .execute(&mut *reader)
        .await
        .expect("lock");
    let begun = std::time::Instant::now();
    assert_eq!(history::drop_day(&f.pool, &today).await.expect("drop"), Dropped::Busy);
    assert!(begun.elapsed() < std::time::Duration::from_secs(2), "gave up after {:?}", begun.elapsed());
    for table in ["events", "event_keys", "deliveries", "delivery_attempts"] {
        assert_eq!(count(&f.pool, table).await, 1, "{table} is untouched");
    }
    reader.rollback().await.expect("rollback");
    assert_eq!(history::drop_day(&f.pool, &today).await.expect("drop"), Dropped::Dropped(Held::default()));
    assert_eq!(count(&f.pool, "event_keys").await, 0);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn an_id_of_a_dropped_day_is_taken_until_its_key_is_forgotten(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    let id = f.ingest().await;
    finish_all(&f.pool).await;
    let today = Utc::now().format("%Y%m%d").to_string();
    let days = history::days_before(&f.pool, Utc::now() + Duration::days(2)).await.expect("days");
    let day = days.into_iter().find(|d| d.suffix.as_str() == today).expect("today");
    assert_eq!(history::drop_partitions(&f.pool, &day).await.expect("drop"), Dropped::Dropped(Held::default()));
    let again = || event_with_id(&id);
    let mut conn = f.pool.acquire().await.expect("conn");
    let inserted = events::insert_many(&mut conn, f.owner, &[again()]).await.expect("a 409, not an error");
    assert_eq!(inserted, vec![events::Inserted::Conflict]);
    assert_eq!(history::forget_stale_keys(&f.pool).await.expect("forget"), 0, "legacy still there: nothing stale");
    assert_eq!(history::forget_keys(&f.pool, day.lower, day.upper).await.expect("forget"), 1);
    let inserted = events::insert_many(&mut conn, f.owner, &[again()]).await.expect("insert");
    assert!(matches!(inserted[0], events::Inserted::New(_)));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_busy_day_keeps_the_days_after_it_so_days_go_in_order(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    f.ingest().await;
    finish_all(&f.pool).await;
    let later = Utc::now() + Duration::days(40);
    let mut reader = f.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE events_legacy IN ACCESS SHARE MODE").execute(&mut *reader).await.expect("lock");
    let (dropped, kept) = history::drop_expired(&f.pool, 30, later).await.expect("drop");
    assert!(dropped.is_empty(), "{dropped:?}");
    let today = Utc::now().format("%Y%m%d").to_string();
    let kept: Vec<&str> = kept.iter().map(|d| d.suffix.as_str()).collect();
    assert!(kept.starts_with(&["legacy", today.as_str()]), "the busy day first, then every later one: {kept:?}");
    assert_eq!(count(&f.pool, "deliveries").await, 1);

    reader.rollback().await.expect("rollback");
    let (dropped, kept) = history::drop_expired(&f.pool, 30, later).await.expect("drop");
    assert!(kept.is_empty() && dropped.len() >= 2, "{dropped:?} {kept:?}");
    assert_eq!(count(&f.pool, "deliveries").await, 0);
}
