//! Bulk replay jobs under load: a job over a large, sparse history never holds back another tenant's, each chunk
//! scans a bounded window, a tenant runs a bounded number of jobs, and a job that keeps failing says so.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use courier_core::{Environment, Scope, Scopes};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::DeliveryFilter;
use courier_scheduler::replay::{self, Advanced, Started, WINDOW};
use courier_store::{Owner, api_keys, tenants};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::api::{Api, api_config};
use crate::app::{TestApp, spawn_app_with};
use crate::fixture::Fixture;

/// Adds `rows` finished deliveries to `owner`'s history, copies of its one delivery (same event, webhook and
/// creation time, so the same day), all `succeeded`: a failed-only filter matches none of them.
async fn history(pool: &PgPool, owner: Owner, rows: i64) {
    sqlx::query(
        "UPDATE deliveries SET status = 'succeeded', next_attempt_at = NULL, attempt_count = 1 WHERE tenant_id = $1",
    )
    .bind(owner.tenant.as_uuid())
    .execute(pool)
    .await
    .expect("the seed delivery finished");
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at, updated_at)
         SELECT left(d.id, 14) || lpad(g::text, 16, '0'), d.tenant_id, d.environment, d.event_id, d.webhook_id,
                d.event_type, d.call_id, 'succeeded', 1, d.max_attempts, d.created_at, d.created_at
         FROM (SELECT * FROM deliveries WHERE tenant_id = $1 LIMIT 1) d, generate_series(1, $2) g",
    )
    .bind(owner.tenant.as_uuid())
    .bind(rows)
    .execute(pool)
    .await
    .expect("history");
    sqlx::query("ANALYZE deliveries").execute(pool).await.expect("analyze");
}

/// A key of `owner` that may replay.
async fn replay_key(pool: &PgPool, owner: Owner) -> String {
    let scopes = Scopes::new([Scope::DeliveriesRead, Scope::DeliveriesReplay]);
    api_keys::create(pool, owner.tenant, owner.environment, &scopes).await.expect("key").plaintext
}

/// One request to the running app; a 503 (a statement past the API's deliberately tiny timeout) is asked again.
async fn call(app: &TestApp, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    for _ in 0..20 {
        let mut request = app.http().request(method.clone(), format!("{}{path}", app.base)).bearer_auth(key);
        if let Some(body) = &body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("response");
        let status = response.status().as_u16();
        let value: Value = serde_json::from_slice(&response.bytes().await.expect("body")).unwrap_or(Value::Null);
        if status != 503 {
            return (status, value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{method} {path} kept answering 503");
}

/// Starts a failed-only bulk replay for `key`'s tenant; returns its path.
async fn start(app: &TestApp, key: &str) -> String {
    let (status, job) =
        call(app, key, reqwest::Method::POST, "/api/v1/deliveries/replay", Some(json!({"status": "failed"}))).await;
    assert_eq!(status, 202, "{job}");
    format!("/api/v1/replays/{}", job["id"].as_str().expect("id"))
}

/// Polls a job until it has ended (finished or failed), at most `within`; returns it.
async fn ended(app: &TestApp, key: &str, job: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = call(app, key, reqwest::Method::GET, job, None).await;
        assert_eq!(status, 200, "{body}");
        if matches!(body["status"].as_str(), Some("finished" | "failed")) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job} has not ended: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The case, scaled to a test: with a history large enough that one unbounded chunk outlasts the API's
// statement timeout (here 20 ms), the old loop retried that chunk forever and no other job moved.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_replay_matching_nothing_in_a_large_history_ends_while_another_tenants_small_one_completes(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    f.webhook("http://127.0.0.1:9/big", 5).await;
    f.ingest().await;
    history(&pool, f.owner, 200_000).await;
    let small =
        Owner { tenant: tenants::create(&pool, "Small").await.expect("tenant").id, environment: Environment::Live };
    f.webhook_for(small, "http://127.0.0.1:9/small", &["*"], Default::default(), 5).await;
    for _ in 0..3 {
        f.ingest_for(small, courier_core::EventType::CallCompleted).await;
    }
    sqlx::query(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, attempt_count = 1 WHERE tenant_id = $1",
    )
    .bind(small.tenant.as_uuid())
    .execute(&pool)
    .await
    .expect("the small tenant's deliveries failed");
    let (big_key, small_key) = (replay_key(&pool, f.owner).await, replay_key(&pool, small).await);

    let app = spawn_app_with(pool.clone(), &[("COURIER_API_STATEMENT_TIMEOUT", "20ms")]).await;
    let big_job = start(&app, &big_key).await;
    let small_job = start(&app, &small_key).await;
    let done = ended(&app, &small_key, &small_job, Duration::from_secs(10)).await;
    assert_eq!((done["status"].as_str(), done["replayed"].as_u64()), (Some("finished"), Some(3)), "{done}");
    let done = ended(&app, &big_key, &big_job, Duration::from_secs(20)).await;
    assert_eq!((done["status"].as_str(), done["replayed"].as_u64()), (Some("finished"), Some(0)), "{done}");
    app.shutdown().await;
}

/// Advances jobs until none is open; returns what each call did.
async fn drain(pool: &PgPool) -> Vec<Advanced> {
    let mut steps = Vec::new();
    loop {
        let step = replay::advance(pool).await.expect("advance");
        if step.is_idle() {
            return steps;
        }
        assert!(steps.len() < 100, "jobs must end: {steps:?}");
        steps.push(step);
    }
}

/// The job a step moved, with what it replayed and scanned.
fn moved(step: &Advanced) -> (&str, u64, u64) {
    match step {
        Advanced::Moved { job, replayed, scanned, .. } => (job.as_str(), *replayed, *scanned),
        other => panic!("expected a chunk, got {other:?}"),
    }
}

async fn queued(pool: &PgPool, owner: Owner) -> String {
    let filter = DeliveryFilter { status: Some(DeliveryStatus::Failed), ..DeliveryFilter::default() };
    match replay::start_bulk(pool, owner, &filter, None, 3).await.expect("start") {
        Started::Queued(job) => job.id.to_string(),
        Started::AtLimit(limit) => panic!("at the limit of {limit}"),
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn each_chunk_reads_a_bounded_window_and_tenants_take_turns_not_jobs(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    f.webhook("http://127.0.0.1:9/big", 5).await;
    f.ingest().await;
    history(&pool, f.owner, 12_000).await;
    let small =
        Owner { tenant: tenants::create(&pool, "Small").await.expect("tenant").id, environment: Environment::Live };
    f.webhook_for(small, "http://127.0.0.1:9/small", &["*"], Default::default(), 5).await;
    f.ingest_for(small, courier_core::EventType::CallCompleted).await;
    sqlx::query(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, attempt_count = 1 WHERE tenant_id = $1",
    )
    .bind(small.tenant.as_uuid())
    .execute(&pool)
    .await
    .expect("failed");
    // The big tenant starts two jobs before the small one starts its one.
    let (first, second) = (queued(&pool, f.owner).await, queued(&pool, f.owner).await);
    let other = queued(&pool, small).await;

    let steps = drain(&pool).await;
    let order: Vec<&str> = steps.iter().map(|s| moved(s).0).collect();
    // Turns go by tenant: the small tenant's job moves second, not after both of the big tenant's.
    assert_eq!(order[..3], [first.as_str(), other.as_str(), second.as_str()], "{steps:?}");
    // 12,001 deliveries, none failed: three windows per job, never more than one window a chunk.
    for job in [&first, &second] {
        let scans: Vec<u64> = steps.iter().map(moved).filter(|m| m.0 == job.as_str()).map(|m| m.2).collect();
        assert_eq!(scans, [WINDOW as u64, WINDOW as u64, 2_001], "{job}: {steps:?}");
    }
    assert_eq!(steps.iter().map(|s| moved(s).1).sum::<u64>(), 1, "only the small tenant's delivery is replayed");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_tenant_past_its_running_replays_gets_422_even_all_at_once(pool: PgPool) {
    let api = Api::with_config(pool, courier_api::ApiConfig { max_running_replays: 2, ..api_config() }).await;
    // Five at once against a limit of two: the tenant's lock lets exactly two through.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let api = api.clone();
        calls.spawn(async move { api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await });
    }
    let answers = calls.join_all().await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).count(), 2, "{answers:?}");
    for (status, error) in answers.iter().filter(|(s, _)| *s != StatusCode::ACCEPTED) {
        assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap_or_default().contains("COURIER_MAX_RUNNING_REPLAYS"),
            "{error}"
        );
    }
    // Another tenant has a limit of its own; a dry run is no job; once the jobs end there is room again.
    let other = api.other_tenant_key().await;
    let (status, _) = api.call_as(&other, Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"dry_run": true}))).await;
    assert_eq!(status, StatusCode::OK);
    drain(&api.pool).await;
    let (status, body) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_job_that_keeps_failing_ends_failed_with_its_reason_and_passes_its_turns_on(pool: PgPool) {
    let api = Api::new(pool).await;
    let (_, broken) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await;
    let broken = format!("/api/v1/replays/{}", broken["id"].as_str().expect("id"));
    // A filter this version cannot read (as a newer one might write): every chunk of it fails.
    sqlx::query("UPDATE replays SET filter = '{\"status\": \"lost\"}'").execute(&api.pool).await.expect("corrupt");
    let other = api.other_tenant_key().await;
    let (_, healthy) = api.call_as(&other, Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await;

    let steps = drain(&api.pool).await;
    let failures: Vec<bool> = steps
        .iter()
        .filter_map(|s| match s {
            Advanced::Failed { gave_up, .. } => Some(*gave_up),
            Advanced::Moved { .. } | Advanced::Idle => None,
        })
        .collect();
    assert_eq!(failures, [false, false, false, false, true], "{steps:?}");
    assert!(matches!(steps[1], Advanced::Moved { finished: true, .. }), "the other tenant's turn came: {steps:?}");

    let (status, job) = api.call(Method::GET, &broken, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"], "the replay's stored filter cannot be read", "{job}");
    assert!(job["finished_at"].is_string(), "{job}");
    let healthy = format!("/api/v1/replays/{}", healthy["id"].as_str().expect("id"));
    let (_, job) = api.call_as(&other, Method::GET, &healthy, None).await;
    assert_eq!((job["status"].as_str(), &job["error"]), (Some("finished"), &Value::Null), "{job}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_job_never_replays_a_replay_made_after_it_started(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    f.webhook("http://127.0.0.1:9/a", 5).await;
    f.webhook("http://127.0.0.1:9/b", 5).await;
    f.ingest().await;
    let failed = "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, attempt_count = 1
                  WHERE status = 'pending'";
    sqlx::query(failed).execute(&pool).await.expect("both failed");
    let job = queued(&pool, f.owner).await;
    // After the job started, one delivery is replayed by hand and its replay fails too. The replay's id carries
    // its event's time, so it is inside the job's range; it was made after the job started, so it is not the
    // job's to replay.
    let first: String = sqlx::query_scalar("SELECT min(id) FROM deliveries").fetch_one(&pool).await.expect("id");
    let first = courier_core::DeliveryId::parse(&first).expect("id");
    let by_hand = replay::replay_one(&pool, f.owner, &first, None).await.expect("replay");
    assert!(matches!(by_hand, replay::Replayed::Queued(_)), "{by_hand:?}");
    sqlx::query(failed).execute(&pool).await.expect("the replay failed");

    let steps = drain(&pool).await;
    assert_eq!(steps.iter().map(|s| moved(s).0).collect::<Vec<_>>(), [job.as_str()]);
    let replays_of_replays: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries r JOIN deliveries d ON d.id = r.replay_of WHERE d.replay_of IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(replays_of_replays, 0, "the replay made by hand is not replayed");
    assert_eq!(steps.iter().map(|s| moved(s).1).sum::<u64>(), 1, "the job replays the one not replayed yet");
}
