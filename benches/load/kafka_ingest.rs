//! The `kafka_ingest` scenario: events taken from a Kafka topic, to set beside the HTTP batch endpoint's events/s
//! (the `batch` scenario, in the same run). The topic (three partitions on Tansu, a Kafka-protocol broker built
//! unoptimised for the tests) is filled with `batch_events` records by aiokafka first; then a `courier serve` with
//! `COURIER_INGEST_KAFKA_*` starts on the scenario's database, and the clock runs from its start until every event
//! is stored (its start and its joining the group included), then until every delivery arrived at the receiver.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::brokers;
use crate::process::{self, Courier};
use crate::receiver::Receiver;
use crate::setup::setup;
use crate::{Args, pg_work, with_work};

/// Waits until the scenario's database holds `expected` events, or none came for `stall`; how many it holds.
async fn wait_events(url: &str, expected: usize, stall: Duration) -> usize {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    let (mut last, mut progressed) = (0, Instant::now());
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut conn).await.expect("count");
        let stored = stored as usize;
        if stored >= expected || progressed.elapsed() > stall {
            return stored;
        }
        if stored > last {
            (last, progressed) = (stored, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn kafka_ingest(cluster: &str, a: &Args) -> Value {
    let broker = brokers::kafka("127.0.0.1").await;
    let bootstrap = format!("127.0.0.1:{}", broker.port);
    brokers::kafka_tool(&["create", &bootstrap, "events", "3"]).await;
    let receiver = Receiver::start(None).await;
    let s = setup(cluster, "kafka_ingest", vec![receiver.clone()], a.worker_concurrency).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.url).await.expect("connect");
    let tenant: String =
        sqlx::query_scalar("SELECT id::text FROM tenants").fetch_one(&mut conn).await.expect("the tenant");
    let headers = [["courier-tenant", tenant.as_str()], ["courier-environment", "test"]];
    let records: Vec<String> = (0..a.batch_events)
        .map(|n| {
            let call = format!("call-{}", n % 500);
            let event = json!({"id": format!("evt_kafka_bench_{n}"), "type": "call.completed",
                               "data": {"call_id": call, "status": "completed", "duration_seconds": 245}});
            json!({"key": call, "value": event.to_string(), "headers": headers}).to_string()
        })
        .collect();
    brokers::kafka_tool_reading(&["produce", &bootstrap, "events"], records.join("\n").as_bytes()).await;

    let (work, pg) = (pg_work::snapshot(&s.url).await, process::postgres_cpu_seconds());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let begun = Instant::now();
    let settings = [("COURIER_INGEST_KAFKA_BROKERS", bootstrap.as_str()), ("COURIER_INGEST_KAFKA_TOPICS", "events")];
    let consumer = Courier::start_with("serve", &s.url, port, &s.secret_key, a.worker_concurrency, &settings).await;
    let stored = wait_events(&s.url, a.batch_events, Duration::from_secs(a.stall_secs)).await;
    let ingested = begun.elapsed().as_secs_f64();
    crate::send::wait_for(&[&receiver], a.batch_events, Duration::from_secs(a.stall_secs)).await;
    let delivered = receiver.count();
    let result = json!({
        "events": a.batch_events,
        "deliveries_expected": a.batch_events,
        "missing": a.batch_events.saturating_sub(stored.min(delivered)),
        "ingest_events_per_s": stored as f64 / ingested,
        "deliveries_per_s": delivered as f64 / begun.elapsed().as_secs_f64(),
        "consumer_cpu_s": process::cpu_seconds(consumer.pid()),
    });
    let result = with_work(&s, result, &work, pg).await;
    drop(consumer);
    s.teardown().await;
    drop(broker);
    result
}
