//! Self-contained days (migration 0023): every delivery of an event, replays included, carries the event's
//! `received_at` in its id, so it and its attempts sit in the event's day, and a day's drop takes an event with
//! everything of it. A live delivery also names that day in a column of its own (migration 0029), which the claim
//! reads its event by.

use chrono::{Duration, Utc};
use courier_core::DeliveryId;
use courier_scheduler::history::{self, Dropped, Held};
use courier_scheduler::replay::{self, Replayed};
use sqlx::PgPool;

use crate::fixture::Fixture;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.expect("count")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_fan_out_names_its_events_millisecond(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/a", 3).await;
    f.webhook("http://127.0.0.1:9/b", 3).await;
    f.ingest().await;
    let named = "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id
                  WHERE courier_id_time(d.id) = e.received_at";
    assert_eq!(count(&f.pool, named).await, 2, "both deliveries name their event's millisecond");
}

/// An event received `offset` after the start of tomorrow (UTC), its key, and one finished delivery of it to
/// `webhook` with one attempt, as if it had come then; returns the delivery's id.
async fn event_of_tomorrow(pool: &PgPool, f: &Fixture, webhook: &str) -> String {
    sqlx::query_scalar(
        "WITH t AS (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           + interval '1 day 5 milliseconds' AS at),
              k AS (INSERT INTO event_keys (tenant_id, environment, id, received_at)
                    SELECT $1, 'live', 'evt_tomorrow', at FROM t RETURNING received_at),
              e AS (INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash,
                                        received_at)
                    SELECT $1, 'evt_tomorrow', 'live', 'call.completed', 'c', 0, '{\"call_id\": \"c\"}', '\\x00',
                           received_at FROM k),
              d AS (INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id,
                                            status, attempt_count, max_attempts)
                    SELECT courier_id_at('dlv_', received_at), $1, 'live', 'evt_tomorrow', $2, 'call.completed',
                           'c', 'succeeded', 1, 3 FROM k RETURNING id)
         INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code,
                                        signature_timestamp)
         SELECT id, 1, now(), 3, 200, 0 FROM d RETURNING delivery_id",
    )
    .bind(f.owner.tenant.as_uuid())
    .bind(webhook)
    .fetch_one(pool)
    .await
    .expect("tomorrow's event")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_replay_sits_in_its_events_day_and_leaves_with_it(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    let (webhook, _) = f.webhook("http://127.0.0.1:9/hook", 3).await;
    let original = event_of_tomorrow(&pool, &f, webhook.id.as_str()).await;
    let tomorrow = (Utc::now() + Duration::days(1)).format("%Y%m%d").to_string();

    // Replayed today, a day before its event's day (as a replay days after an event is made after it): the replay
    // and its attempt are of the event's day.
    let original = DeliveryId::parse(&original).expect("id");
    let Replayed::Queued(replay) = replay::replay_one(&pool, f.owner, &original, None).await.expect("replay") else {
        panic!("the replay is queued");
    };
    sqlx::query(
        "WITH d AS (UPDATE deliveries SET status = 'succeeded', next_attempt_at = NULL, attempt_count = 1
                    WHERE status = 'pending' RETURNING id)
         INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, signature_timestamp)
         SELECT id, 1, now(), 3, 200, 0 FROM d",
    )
    .execute(&pool)
    .await
    .expect("the replay finishes");
    let home: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM deliveries WHERE id = $1")
        .bind(replay.id.as_str())
        .fetch_one(&pool)
        .await
        .expect("the replay");
    assert_eq!(home, format!("deliveries_{tomorrow}"), "the replay sits in its event's day");

    // The event's day goes whole: the event, its key, the delivery, the replay and both attempts.
    let days = history::days_before(&pool, Utc::now() + Duration::days(3)).await.expect("days");
    let day = days.into_iter().find(|d| d.suffix.as_str() == tomorrow).expect("tomorrow's day");
    assert_eq!(history::drop_day(&pool, &day).await.expect("drop"), Dropped::Dropped(Held::default()));
    for table in ["events", "event_keys", "deliveries", "delivery_attempts"] {
        assert_eq!(count(&pool, &format!("SELECT count(*) FROM {table}")).await, 0, "{table} is empty");
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_replay_of_an_old_event_lives_a_whole_retention_from_when_it_was_made(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    crate::history::old_event_with_delivery_today(&f, 31, "succeeded").await;
    let original: String = sqlx::query_scalar("SELECT id FROM deliveries").fetch_one(&pool).await.expect("id");
    let original = DeliveryId::parse(&original).expect("id");
    let Replayed::Queued(replay) = replay::replay_one(&pool, f.owner, &original, None).await.expect("replay") else {
        panic!("the replay is queued");
    };
    // Its id is of its event's day, 31 days ago; its age is its own.
    let old: bool = sqlx::query_scalar("SELECT courier_id_time($1) < now() - interval '30 days'")
        .bind(replay.id.as_str())
        .fetch_one(&pool)
        .await
        .expect("time");
    assert!(old, "the replay's id carries its event's time");
    let expire = || courier_scheduler::retention::expire_batch(&pool, &f.clock, 30);
    assert_eq!(expire().await.expect("expire"), 0, "a replay made now is not past a 30-day retention");
    f.clock.advance(std::time::Duration::from_secs(31 * 86_400));
    assert_eq!(expire().await.expect("expire"), 1, "31 days after it was made, it is");
}

#[sqlx::test(migrations = false)]
async fn the_claim_finds_each_event_by_the_day_its_delivery_names_without_its_key(pool: PgPool) {
    // Before migration 0029: a live delivery made before migration 0023, whose id names when it was made (today) and
    // not its event's time (yesterday), and a live delivery whose event's day was dropped, key and all.
    crate::history::migrate(&pool, |v| v < 29).await;
    let tenant = courier_store::tenants::create(&pool, "Acme").await.expect("tenant").id;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhooks (id, tenant_id, environment, url, max_attempts, secret_ciphertext)
         VALUES (courier_id('wh_'), '{tenant}', 'live', 'http://127.0.0.1:9/', 3, '\\x00');
         INSERT INTO event_keys (tenant_id, environment, id, received_at)
         VALUES ('{tenant}', 'live', 'evt_old', date_trunc('milliseconds', now()) - interval '1 day');
         INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash, received_at)
         SELECT '{tenant}', 'evt_old', 'live', 'call.completed', 'c', 7, '{{\"call_id\": \"c\"}}', '\\x00',
                received_at FROM event_keys;
         INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 max_attempts, next_attempt_at)
         SELECT courier_id('dlv_'), '{tenant}', 'live', e, w.id, 'call.completed', 'c', 'pending', 3, now()
           FROM webhooks w, (VALUES ('evt_old'), ('evt_gone')) AS v(e);",
        tenant = tenant.as_uuid()
    )))
    .execute(&pool)
    .await
    .expect("old rows");

    crate::history::migrate(&pool, |v| v >= 29).await;
    let named = "SELECT count(*) FROM deliveries_live d JOIN event_keys k ON k.id = d.event_id
                  WHERE d.event_received_at = k.received_at";
    assert_eq!(count(&pool, named).await, 1, "the migration wrote the day the event's key names");
    let from_id =
        "SELECT count(*) FROM deliveries_live WHERE event_id = 'evt_gone' AND event_received_at = courier_id_time(id)";
    assert_eq!(count(&pool, from_id).await, 1, "and the id's time where the key is gone");
    // Without the keys, the claim still reads the event from its day: it never looks a key up.
    sqlx::query("DELETE FROM event_keys").execute(&pool).await.expect("forget the keys");
    let clock = courier_scheduler::Clock::database();
    let claimed = courier_scheduler::claim(&pool, &clock, 10, std::time::Duration::from_secs(30), Default::default())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "the delivery whose event is stored is claimed, the other has nothing to send");
    assert_eq!(claimed[0].event.id.as_str(), "evt_old", "with its event");
    assert_eq!(claimed[0].event.created, 7, "as stored");

    // A live delivery that does not name its event's day could never be claimed: the queue refuses it.
    let refused = sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 max_attempts, next_attempt_at)
         SELECT courier_id('dlv_'), tenant_id, environment, event_id, webhook_id, event_type, call_id, 'pending', 3,
                now()
           FROM deliveries LIMIT 1",
    )
    .execute(&pool)
    .await
    .expect_err("a live delivery without its event's day");
    assert!(refused.to_string().contains("deliveries_live_event_day"), "{refused}");
}
