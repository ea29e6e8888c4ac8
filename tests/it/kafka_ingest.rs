//! Events taken from a Kafka topic (a real Kafka-protocol broker, Tansu, fed by aiokafka as Agent Studio's emitter
//! would): accepted as `POST /api/v1/events` accepts them, bad records set aside without blocking the ones after
//! them, a repeated id accepted once, offsets committed only for what was stored; and `courier serve` killed with
//! `kill -9` three times while it ingests 10,000 records loses none and accepts none twice.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::brokers::{self, kafka_tool, kafka_tool_reading};
use crate::receiver::{Receiver, Reply};

/// A record for `kafka_tool.py produce`.
fn record(key: &str, value: &str, headers: &[(&str, &str)]) -> String {
    json!({"key": key, "value": value, "headers": headers}).to_string()
}

fn event(id: Option<&str>, call: &str, status: &str) -> String {
    let mut event = json!({"type": "call.completed", "data": {"call_id": call, "status": status}});
    if let Some(id) = id {
        event["id"] = json!(id);
    }
    event.to_string()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.expect("count")
}

/// Waits until `sql` counts `expected`, at most 60 s.
async fn until_count(pool: &PgPool, sql: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = count(pool, sql).await;
        if now == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: {now}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn settings(bootstrap: &str, topic: &str) -> courier::settings::KafkaIngestSettings {
    let env = |name: &str| match name {
        "COURIER_INGEST_KAFKA_BROKERS" => Some(bootstrap.to_owned()),
        "COURIER_INGEST_KAFKA_TOPICS" => Some(topic.to_owned()),
        _ => None,
    };
    let settings = courier::settings::Settings::from_sources(None, env).expect("settings");
    settings.kafka_ingest.expect("kafka ingest is on")
}

// Long because it walks one topic through every way a record can be set aside, in order.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn records_become_events_and_bad_ones_are_set_aside_without_blocking_the_rest(pool: PgPool) {
    let server = brokers::kafka("127.0.0.1").await;
    let bootstrap = format!("127.0.0.1:{}", server.port);
    kafka_tool(&["create", &bootstrap, "agent-studio.events", "2"]).await;
    let api = Api::new(pool.clone()).await;
    let tenant: String = sqlx::query_scalar("SELECT id::text FROM tenants").fetch_one(&pool).await.expect("tenant");
    let ours = [("courier-tenant", tenant.as_str()), ("courier-environment", "test")];
    let huge = event(Some("evt_huge"), "call-1", &"x".repeat(300 * 1024));
    let records = [
        record("call-1", &event(Some("evt_k1"), "call-1", "completed"), &ours),
        record("call-1", "{not json", &ours),
        record("call-1", &event(Some("evt_k2"), "call-1", "completed"), &ours),
        record("call-1", &event(Some("evt_k3"), "call-1", "completed"), &[("courier-environment", "test")]),
        record(
            "call-1",
            &event(Some("evt_k4"), "call-1", "completed"),
            &[("courier-tenant", "0193d6a8-0000-7000-8000-000000000000"), ("courier-environment", "test")],
        ),
        record("call-1", &huge, &ours),
        record("call-1", &event(Some("evt_k1"), "call-1", "completed"), &ours),
        record(
            "call-1",
            &event(Some("evt_k5"), "call-1", "completed"),
            &[("courier-tenant", &tenant), ("courier-environment", "staging")],
        ),
        record("call-1", &event(None, "call-1", "completed"), &ours),
        record("call-1", &event(Some("evt_k2"), "call-1", "failed"), &ours),
        record("call-1", r#"{"id": "evt_k6", "type": "call.exploded", "data": {"call_id": "call-1"}}"#, &ours),
        record("call-1", &event(Some("evt_k7"), "call-1", "completed"), &ours),
    ];
    kafka_tool_reading(&["produce", &bootstrap, "agent-studio.events"], records.join("\n").as_bytes()).await;

    let receiver = Receiver::start(Reply::Status(200)).await;
    let (status, _) = api.call(axum::http::Method::POST, "/api/v1/webhooks", Some(json!({"url": receiver.url}))).await;
    assert_eq!(status, axum::http::StatusCode::CREATED);
    let stop = CancellationToken::new();
    let workers = courier_scheduler::ingest::Workers::from(courier_scheduler::wake::Notifier::spawn(pool.clone()));
    let consuming = tokio::spawn(courier::kafka_ingest::run(
        settings(&bootstrap, "agent-studio.events"),
        Duration::from_secs(5),
        pool.clone(),
        workers,
        stop.clone(),
    ));
    until_count(&pool, "SELECT count(*) FROM ingest_rejects", 7).await;
    until_count(&pool, "SELECT count(*) FROM events", 4).await;
    // Committed only once stored: the group's offsets cover every record, the set-aside ones included.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed: Value =
            serde_json::from_str(&kafka_tool(&["committed", &bootstrap, "agent-studio.events", "courier", "2"]).await)
                .expect("json");
        let total: i64 = committed.as_object().expect("object").values().filter_map(Value::as_i64).sum();
        if total == records.len() as i64 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "committed {committed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    consuming.await.expect("joins").expect("stops cleanly");

    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM events ORDER BY id").fetch_all(&pool).await.expect("ids");
    assert_eq!(&ids[..3], ["evt_k1", "evt_k2", "evt_k7"], "{ids:?}");
    assert!(ids[3].starts_with("evt_kafka_"), "an event without an id gets one of its record: {ids:?}");
    let status: String = sqlx::query_scalar("SELECT data->>'status' FROM events WHERE id = 'evt_k2'")
        .fetch_one(&pool)
        .await
        .expect("k2");
    assert_eq!(status, "completed", "the first event with an id stays; a different one reusing it is set aside");
    let reasons: HashMap<String, i64> = sqlx::query_as("SELECT reason, count(*) FROM ingest_rejects GROUP BY reason")
        .fetch_all(&pool)
        .await
        .expect("reasons")
        .into_iter()
        .collect();
    let expected: HashMap<String, i64> =
        ["not_json", "no_tenant", "unknown_tenant", "too_large", "unknown_environment", "conflict", "invalid"]
            .into_iter()
            .map(|r| (r.to_owned(), 1))
            .collect();
    assert_eq!(reasons, expected);
    let first: Vec<u8> = sqlx::query_scalar("SELECT first_bytes FROM ingest_rejects WHERE reason = 'not_json'")
        .fetch_one(&pool)
        .await
        .expect("reject");
    assert_eq!(first, b"{not json");
    // Each event fanned out once, and delivered.
    assert_eq!(count(&pool, "SELECT count(*) FROM deliveries").await, 4);
    // `courier ingest rejects` lists them for the operator, on this test's database.
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.expect("name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = format!("{}/{name}", base.rsplit_once('/').expect("a path").0);
    let listed = crate::support::courier(&url, &["ingest", "rejects", "--json"], &[]);
    assert!(listed.status.success(), "{}", crate::support::stderr(&listed));
    let lines: Vec<Value> =
        crate::support::stdout(&listed).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 7);
    let not_json = lines.iter().find(|l| l["reason"] == "not_json").expect("the record that is not JSON");
    assert_eq!((not_json["topic"].as_str(), not_json["offset"].as_i64()), (Some("agent-studio.events"), Some(1)));
    assert_eq!(not_json["first_bytes"], "{not json");
}

/// `courier serve` consuming `topic` from `bootstrap` on `url`'s database, and its API's base URL.
fn serve(url: &str, bootstrap: &str, topic: &str) -> (std::process::Child, String) {
    serve_logging(url, bootstrap, topic, std::process::Stdio::null())
}

/// [`serve`], its log lines to `log`.
fn serve_logging(
    url: &str,
    bootstrap: &str,
    topic: &str,
    log: impl Into<std::process::Stdio>,
) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("COURIER_LISTEN", format!("127.0.0.1:{port}"))
        .env("COURIER_METRICS_LISTEN", "")
        .env("COURIER_SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .env("COURIER_ALLOWED_TARGETS", "127.0.0.0/8")
        .env("COURIER_RETRY_INITIAL", "100ms")
        .env("COURIER_RETRY_CAP", "200ms")
        .env("COURIER_INGEST_KAFKA_BROKERS", bootstrap)
        .env("COURIER_INGEST_KAFKA_TOPICS", topic)
        .env("COURIER_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("courier serve starts");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Waits until `sql` counts more than `at_least`, at most two minutes; the count.
async fn until_more_than(pool: &PgPool, sql: &str, at_least: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let now = count(pool, sql).await;
        if now > at_least {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: {now}, waiting for more than {at_least}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Long because it is one story: a topic of 10,000 events, three kills, and what arrived.
#[tokio::test]
async fn ten_thousand_records_through_three_kills_arrive_once_each_and_in_order_per_call() {
    const CALLS: usize = 100;
    const PER_CALL: usize = 100;
    let server = brokers::kafka("127.0.0.1").await;
    let bootstrap = format!("127.0.0.1:{}", server.port);
    kafka_tool(&["create", &bootstrap, "calls", "3"]).await;
    let url = crate::support::fresh_database().await;
    let key = crate::lifecycle::keys(&url, &[&courier_core::Scope::ALL]).await.remove(0);
    let pool = PgPool::connect(&url).await.expect("connect");
    let tenant: String = sqlx::query_scalar("SELECT id::text FROM tenants").fetch_one(&pool).await.expect("tenant");
    let (mut child, base) = serve(&url, &bootstrap, "calls");
    let http = crate::lifecycle::http();
    let receiver = Receiver::start(Reply::Status(200)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let created = http
            .post(format!("{base}/api/v1/webhooks"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(json!({"url": receiver.url, "ordering": "call"}).to_string())
            .send()
            .await;
        if created.is_ok_and(|r| r.status() == 201) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "courier serve did not take the webhook");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let owner = [("courier-tenant", tenant.as_str()), ("courier-environment", "test")];
    let mut records = Vec::new();
    for n in 0..PER_CALL {
        for call in 0..CALLS {
            let id = format!("evt_{call}_{n}");
            records.push(record(
                &format!("call-{call}"),
                &event(Some(&id), &format!("call-{call}"), "completed"),
                &owner,
            ));
        }
    }
    kafka_tool_reading(&["produce", &bootstrap, "calls"], records.join("\n").as_bytes()).await;

    let events = "SELECT count(*) FROM events";
    let mut killed_at = Vec::new();
    for threshold in [1_000, 4_000, 7_000] {
        let seen = until_more_than(&pool, events, threshold).await;
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        killed_at.push(count(&pool, events).await);
        assert!(seen < 10_000, "killed while ingesting: {seen}");
        child = serve(&url, &bootstrap, "calls").0;
    }
    until_count(&pool, events, 10_000).await;
    until_count(&pool, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'", 10_000).await;
    child.kill().expect("kill");
    child.wait().expect("reaped");
    assert_eq!(count(&pool, "SELECT count(*) FROM deliveries").await, 10_000, "no event fanned out twice");
    assert_eq!(count(&pool, "SELECT count(*) FROM ingest_rejects").await, 0);
    // Every event arrived; per call, in the order it was produced (a kill mid-delivery may repeat one).
    let mut first_seen: HashMap<String, Vec<String>> = HashMap::new();
    for received in receiver.received() {
        let id = received.event_id();
        let call = received.json()["event"]["data"]["call_id"].as_str().expect("call").to_owned();
        let seen = first_seen.entry(call).or_default();
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    assert_eq!(first_seen.len(), CALLS);
    for (call, ids) in first_seen {
        let number = call.trim_start_matches("call-");
        let expected: Vec<String> = (0..PER_CALL).map(|n| format!("evt_{number}_{n}")).collect();
        assert_eq!(ids, expected, "{call} in order (killed at {killed_at:?} events)");
    }
}

/// The partitions a `courier serve` log says it was assigned last.
fn last_assignment(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| l.contains("kafka ingest: partitions assigned"));
    let Some(line) = line else { return Vec::new() };
    let partitions =
        serde_json::from_str::<Value>(line).expect("a JSON log line")["partitions"].as_str().map(str::to_owned);
    // `[("calls", 0), ("calls", 2)]`: the numbers are what tells members apart.
    let partitions = partitions.unwrap_or_default();
    partitions
        .split(')')
        .filter_map(|p| p.rsplit(", ").next())
        .filter(|n| n.parse::<u32>().is_ok())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn two_courier_processes_share_the_partitions_and_store_every_event_once() {
    let server = brokers::kafka("127.0.0.1").await;
    let bootstrap = format!("127.0.0.1:{}", server.port);
    kafka_tool(&["create", &bootstrap, "shared", "4"]).await;
    let url = crate::support::fresh_database().await;
    crate::lifecycle::keys(&url, &[]).await;
    let pool = PgPool::connect(&url).await.expect("connect");
    let tenant: String = sqlx::query_scalar("SELECT id::text FROM tenants").fetch_one(&pool).await.expect("tenant");
    let logs = tempfile::tempdir().expect("a directory");
    let mut members = Vec::new();
    for n in 0..2 {
        let log = std::fs::File::create(logs.path().join(format!("{n}.log"))).expect("log");
        members.push(serve_logging(&url, &bootstrap, "shared", log).0);
    }
    let owner = [("courier-tenant", tenant.as_str()), ("courier-environment", "test")];
    let records: Vec<String> = (0..2_000)
        .map(|n| {
            record(
                &format!("call-{}", n % 40),
                &event(Some(&format!("evt_shared_{n}")), &format!("call-{}", n % 40), "completed"),
                &owner,
            )
        })
        .collect();
    kafka_tool_reading(&["produce", &bootstrap, "shared"], records.join("\n").as_bytes()).await;
    until_count(&pool, "SELECT count(*) FROM events", 2_000).await;
    // Both members end up with partitions of their own, all four dealt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (first, second) = loop {
        let (first, second) =
            (last_assignment(&logs.path().join("0.log")), last_assignment(&logs.path().join("1.log")));
        if !first.is_empty() && !second.is_empty() && first.len() + second.len() == 4 {
            break (first, second);
        }
        assert!(tokio::time::Instant::now() < deadline, "assignments: {first:?} and {second:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(first.iter().all(|p| !second.contains(p)), "no partition twice: {first:?} {second:?}");
    for mut member in members {
        member.kill().expect("kill");
        member.wait().expect("reaped");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 2_000);
    assert_eq!(count(&pool, "SELECT count(*) FROM ingest_rejects").await, 0);
}
