//! Per-webhook rate limits (`"rate_limit": {"per_second": N}`): summed over every worker, the excess waits as
//! pending without spending attempts, and everything is delivered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use courier_core::EventType;
use courier_scheduler::ingest;
use courier_scheduler::wake::Notifier;
use courier_store::webhooks::{self, WebhookPatch};
use sqlx::PgPool;

use crate::fixture::{Fixture, config};

const LIMIT: u32 = 20;
const DELIVERIES: usize = 400;

/// A receiver that notes when each request arrived.
async fn timed_receiver() -> (Arc<Mutex<Vec<Instant>>>, String) {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.lock().expect("lock").push(Instant::now());
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (arrivals, url)
}

/// The most arrivals within any one second.
fn busiest_second(arrivals: &[Instant]) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| sorted[i..].iter().take_while(|t| **t - sorted[i] < Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0)
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn two_workers_together_stay_under_the_limit_and_deliver_everything(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let (arrivals, url) = timed_receiver().await;
    let (webhook, _) = f.webhook(&url, 5).await;
    let limit = WebhookPatch { rate_limit: Some(Some(LIMIT)), ..Default::default() };
    let mut conn = f.pool.acquire().await.expect("conn");
    webhooks::update(&mut conn, &f.key, f.owner, &webhook.id, limit).await.expect("update").expect("exists");
    let events = Fixture::call_events("rate", DELIVERIES);
    ingest::accept(&f.pool, &Notifier::spawn(f.pool.clone()), f.owner, events, None).await.expect("ingest");

    let second_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with((*f.pool.connect_options()).clone())
        .await
        .expect("second pool");
    // A lease long enough that a loaded test machine never lets one run out mid-send (which would send a
    // delivery twice, as designed, and is not what this test is about).
    let config = courier_worker::WorkerConfig { lease: Duration::from_secs(10), ..config() };
    let first = f.start(&f.worker(config.clone()));
    let other = courier_worker::Worker::new(second_pool, f.key.clone(), config).expect("worker");
    let second = f.start(&other.with_clock(f.clock.clone()));
    let begun = Instant::now();
    f.until_within(Duration::from_secs(60), || async { arrivals.lock().expect("lock").len() >= DELIVERIES }).await;
    let took = begun.elapsed();
    first.stop().await;
    second.stop().await;

    let arrivals = arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals.len(), DELIVERIES, "each delivered once");
    let busiest = busiest_second(&arrivals);
    eprintln!("rate limit {LIMIT}/s: busiest second {busiest}, {DELIVERIES} delivered in {took:?}");
    // Slots are taken on the database's clock: at most LIMIT + 1 in any second (rate.rs). The receiver sees
    // them a send later, and on a loaded two-core test run a send can wait for the CPU while the next window's
    // goes out, so arrivals bunch by a few; two workers each keeping the limit alone would show about 40.
    assert!(busiest <= LIMIT as usize + 5, "at most {LIMIT} a second (+5 for send jitter), saw {busiest}");
    assert!(took >= Duration::from_secs(17), "{DELIVERIES} at {LIMIT}/s take about 20 s, took {took:?}");
    let spent: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT attempt_count::int8 FROM deliveries")
        .fetch_all(&f.pool)
        .await
        .expect("attempts");
    assert_eq!(spent, vec![1], "waiting for a slot spends no attempt");
}

#[test]
fn the_busiest_second_is_counted_over_sliding_windows() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    assert_eq!(busiest_second(&[at(0), at(900), at(1000), at(1100), at(1950)]), 3);
    assert_eq!(busiest_second(&[at(0), at(100), at(200), at(999), at(1000)]), 4);
    assert_eq!(busiest_second(&[]), 0);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_api_takes_shows_and_removes_a_limit_and_refuses_a_bad_one(pool: PgPool) {
    use axum::http::Method;
    use serde_json::json;
    let api = crate::api::Api::new(pool).await;
    for bad in [json!({"per_second": 0}), json!({"per_second": 10_001})] {
        let (status, body) = api
            .call(Method::POST, "/api/v1/webhooks", Some(json!({"url": "https://e.com/h", "rate_limit": bad})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(crate::api::field_of(&body), vec!["rate_limit.per_second".to_owned()]);
    }
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://e.com/h", "rate_limit": {"per_second": 20}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["rate_limit"], json!({"per_second": 20}));
    let uri = format!("/api/v1/webhooks/{}", created["id"].as_str().expect("id"));
    let (_, removed) = api.call(Method::PATCH, &uri, Some(json!({"rate_limit": null}))).await;
    assert_eq!(removed["rate_limit"], serde_json::Value::Null);
    let (_, kept) = api.call(Method::PATCH, &uri, Some(json!({"description": "x"}))).await;
    assert_eq!(kept["rate_limit"], serde_json::Value::Null, "a PATCH without it leaves it as it is");
}

// Long because the scenario (two tenants, a counting trigger, a backlog, B's timed sends) is one story.
/// Tenant A has a large backlog behind a webhook limited to 2/s; tenant B's deliveries go out as if A were not
/// there, and A's waiting deliveries are written a bounded number of times (given a slot once, not claimed and
/// released every window).
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_rate_limited_backlog_costs_only_its_own_tenant(pool: PgPool) {
    use courier_core::{Environment, PayloadFilter};
    use courier_store::{Owner, tenants};
    const BACKLOG: usize = 2_000;
    let f = Fixture::new(pool).await;
    let (a_arrivals, a_url) = timed_receiver().await;
    let (b_arrivals, b_url) = timed_receiver().await;
    let (limited, _) = f.webhook(&a_url, 5).await;
    let limit = WebhookPatch { rate_limit: Some(Some(2)), ..Default::default() };
    let mut conn = f.pool.acquire().await.expect("conn");
    webhooks::update(&mut conn, &f.key, f.owner, &limited.id, limit).await.expect("update").expect("exists");
    drop(conn);
    let b = tenants::create(&f.pool, "Beta").await.expect("tenant");
    let b = Owner { tenant: b.id, environment: Environment::Live };
    f.webhook_for(b, &b_url, &["*"], PayloadFilter::default(), 5).await;
    // Every write to a live delivery of A's webhook, counted by the database itself.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE a_writes (n bigint NOT NULL);
         CREATE FUNCTION count_a() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.webhook_id = '{}' THEN INSERT INTO a_writes VALUES (1); END IF; RETURN NEW; END $$;
         CREATE TRIGGER count_a AFTER UPDATE ON deliveries_live FOR EACH ROW EXECUTE FUNCTION count_a();",
        limited.id.as_str()
    )))
    .execute(&f.pool)
    .await
    .expect("trigger");
    let events = Fixture::call_events("backlog", BACKLOG);
    ingest::accept(&f.pool, &Notifier::spawn(f.pool.clone()), f.owner, events, None).await.expect("ingest");

    let worker = f.start(&f.worker(config()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waits = Vec::new();
    for _ in 0..20 {
        let sent = Instant::now();
        let before = b_arrivals.lock().expect("lock").len();
        f.ingest_for(b, EventType::CallCompleted).await;
        f.until_within(Duration::from_secs(10), || async { b_arrivals.lock().expect("lock").len() > before }).await;
        waits.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    waits.sort();
    let (median, slowest) = (waits[waits.len() / 2], waits[waits.len() - 1]);
    let delivered = a_arrivals.lock().expect("lock").len();
    let writes: i64 = sqlx::query_scalar("SELECT count(*) FROM a_writes").fetch_one(&f.pool).await.expect("count");
    eprintln!(
        "beside {BACKLOG} deliveries at 2/s: B's median {median:?}, slowest {slowest:?}; A delivered {delivered}, {writes} writes to A's live rows"
    );
    assert!(median < Duration::from_millis(200), "B's deliveries waited behind A's backlog: median {median:?}");
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    assert!((1..=12).contains(&delivered), "A is held to its limit: {delivered} in about 3 s");
    // Each of A's deliveries is given its slot about once; a delivery that was sent also had a claim and a
    // deferral. Before, every window claimed and released a full batch of A's rows again.
    let bound = BACKLOG as i64 + 4 * delivered as i64 + 200;
    assert!(writes <= bound, "{writes} writes to A's waiting rows (bound {bound})");
}
