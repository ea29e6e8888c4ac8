//! The `brokers` scenario: the burst of single events to one webhook of each destination type, one after another
//! on the same cluster: an HTTP receiver, a Redis stream, a NATS JetStream subject, a RabbitMQ exchange and a Kafka
//! topic (real `redis-server`, `nats-server`, `rabbitmq-server` and Tansu, a Kafka-protocol broker, on 127.0.0.1,
//! started here). A broker's acknowledgement is
//! the delivery, so a delivery counts when its row says `succeeded`; the HTTP webhook is counted the same way, so the
//! four figures compare like with like.

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_worker::brokers::{amqp, nats};
use serde_json::{Value, json};

use crate::brokers::{self, Broker};
use crate::measure::merge;
use crate::receiver::Receiver;
use crate::send::send_singles;
use crate::setup::{Setup, setup};
use crate::{Args, pg_work, process, with_work};

const PASSWORD: &str = "bench-pw";

fn loopback() -> courier_core::target::TargetPolicy {
    courier_core::target::TargetPolicy::new(vec!["127.0.0.0/8".parse().expect("cidr")])
}

/// A broker of `kind` ready to take the scenario's publishes, and the webhook body that publishes to it.
async fn destination(kind: &str) -> (Broker, Value) {
    match kind {
        "redis" => {
            let broker = brokers::redis(PASSWORD).await;
            let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", broker.port);
            (broker, json!({"type": "redis", "url": url, "stream": "calls"}))
        }
        "nats" => {
            let broker = brokers::nats("courier", PASSWORD).await;
            let url = format!("nats://courier:{PASSWORD}@127.0.0.1:{}", broker.port);
            let mut admin =
                nats::Connection::open(&url, None, &loopback(), Duration::from_secs(5)).await.expect("nats");
            let stream = json!({"name": "CALLS", "subjects": ["agent-studio.>"], "storage": "file"}).to_string();
            admin.request("$JS.API.STREAM.CREATE.CALLS", stream.as_bytes()).await.expect("a JetStream stream");
            (broker, json!({"type": "nats", "url": url, "subject": "agent-studio.calls"}))
        }
        "rabbitmq" => {
            let broker = brokers::rabbitmq(PASSWORD).await;
            let url = format!("amqp://courier:{PASSWORD}@127.0.0.1:{}/%2F", broker.port);
            let mut admin = amqp::Connection::open(&url, &loopback(), Duration::from_secs(10)).await.expect("amqp");
            admin.declare_bound_queue("calls", "amq.topic", "agent-studio.#").await.expect("a durable queue");
            let routing_key = "agent-studio.{type}";
            (broker, json!({"type": "rabbitmq", "url": url, "exchange": "amq.topic", "routing_key": routing_key}))
        }
        "kafka" => {
            let broker = brokers::kafka("127.0.0.1").await;
            let bootstrap = format!("127.0.0.1:{}", broker.port);
            brokers::kafka_tool(&["create", &bootstrap, "calls", "3"]).await;
            (broker, json!({"type": "kafka", "brokers": [bootstrap], "topic": "calls"}))
        }
        other => panic!("no broker {other}"),
    }
}

/// Waits until `expected` deliveries succeeded, or until none succeeded for `stall`; returns how many did.
async fn wait_succeeded(url: &str, expected: usize, stall: Duration) -> usize {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    let (mut last, mut progressed) = (0, Instant::now());
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        let done = done as usize;
        if done >= expected || progressed.elapsed() > stall {
            return done;
        }
        if done > last {
            (last, progressed) = (done, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The burst to one webhook of `kind`.
async fn one(cluster: &str, a: &Args, kind: &str) -> Value {
    let (broker, s): (Option<Broker>, Setup) = if kind == "http" {
        (None, setup(cluster, "brk_http", vec![Receiver::start(None).await], a.worker_concurrency).await)
    } else {
        let (broker, target) = destination(kind).await;
        let s = setup(cluster, &format!("brk_{kind}"), Vec::new(), a.worker_concurrency).await;
        s.create_webhook(json!({"destination": target})).await;
        (Some(broker), s)
    };
    let (work, pg) = (pg_work::snapshot(&s.url).await, process::postgres_cpu_seconds());
    let begun = Instant::now();
    let ingest = send_singles(&s.courier.base, &s.emitter, a.events, a.concurrency, kind, Arc::default()).await;
    let delivered = wait_succeeded(&s.url, a.events, Duration::from_secs(a.stall_secs)).await;
    let elapsed = begun.elapsed().as_secs_f64();
    let result = json!({
        "events": a.events,
        "deliveries_expected": a.events,
        "missing": a.events.saturating_sub(delivered),
        "ingest_events_per_s": a.events as f64 / ingest.as_secs_f64(),
        "deliveries_per_s": delivered as f64 / elapsed,
    });
    let result = with_work(&s, result, &work, pg).await;
    s.teardown().await;
    drop(broker);
    merge(json!({"destination": kind}), result)
}

pub async fn brokers(cluster: &str, a: &Args) -> Value {
    let mut out = serde_json::Map::new();
    for kind in ["http", "redis", "nats", "rabbitmq", "kafka"] {
        out.insert(kind.to_owned(), one(cluster, a, kind).await);
    }
    Value::Object(out)
}
