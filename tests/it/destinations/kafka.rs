//! A Kafka topic as a destination, against a real Kafka-protocol broker (Tansu) and read back with aiokafka, the
//! client of the integration guide's consumer: each record is the signed envelope the guide's `verify_signature`
//! accepts, keyed by call and in order per call; an unknown topic is refused; a broker the cluster advertises
//! outside the allowed targets is never connected to; a stopped broker fails attempts as `connect` until it is
//! back; a hanging one fails its own attempts only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{config_targets, create, deliver_all, deliver_all_with, outcome_of};
use crate::api::{Api, call_completed};
use crate::brokers::{self, kafka_tool};
use crate::fixture::config;
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

/// One record as `kafka_tool.py consume` prints it.
struct Consumed {
    partition: i64,
    offset: i64,
    key: Option<String>,
    value: Vec<u8>,
    headers: HashMap<String, String>,
}

/// The first `count` records of `topic`.
async fn consume(bootstrap: &str, topic: &str, count: usize) -> Vec<Consumed> {
    let printed = kafka_tool(&["consume", bootstrap, topic, &count.to_string(), "30"]).await;
    let decode = |v: &Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("b64")).expect("b64");
    let records: Vec<Consumed> = printed
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("json");
            let headers = record["headers"].as_array().expect("headers").iter().map(|pair| {
                (pair[0].as_str().expect("name").to_owned(), String::from_utf8(decode(&pair[1])).expect("text"))
            });
            Consumed {
                partition: record["partition"].as_i64().expect("partition"),
                offset: record["offset"].as_i64().expect("offset"),
                key: record["key"].as_str().map(str::to_owned),
                value: decode(&record["value"]),
                headers: headers.collect(),
            }
        })
        .collect();
    assert_eq!(records.len(), count, "records of {topic}");
    records
}

/// Event `id` of call `call`.
fn event_of(call: &str, id: &str) -> Value {
    let mut event = call_completed(id);
    event["data"]["call_id"] = json!(call);
    event
}

/// Sends `per_call` events for each of `calls`, interleaved; their ids, in the order sent.
async fn send_calls(api: &Api, calls: &[&str], per_call: usize, tag: &str) -> Vec<String> {
    let mut sent = Vec::new();
    for n in 0..per_call {
        for call in calls {
            let id = format!("evt_{tag}_{call}_{n}");
            let (status, body) = api.event(event_of(call, &id)).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            sent.push(id);
        }
    }
    sent
}

/// Asserts every record verifies with the guide's verifier, is keyed by its call, that a call's records share a
/// partition, and that they are in the order `sent` (ids in the order accepted) per call.
fn assert_signed_keyed_and_in_order(records: &[Consumed], secret: &str, sent: &[String]) {
    let mut by_call: HashMap<String, Vec<(i64, i64, String)>> = HashMap::new();
    for record in records {
        let envelope: Value = serde_json::from_slice(&record.value).expect("the envelope");
        let signature = record.headers.get("X-Webhook-Signature").expect("the signature header");
        assert!(guide_accepts(secret, signature, &record.value), "the guide's verify_signature accepts the record");
        assert!(record.headers.contains_key("webhook-signature") && record.headers.contains_key("webhook-id"));
        let call = envelope["event"]["data"]["call_id"].as_str().expect("call").to_owned();
        assert_eq!(record.key.as_deref(), Some(call.as_str()), "keyed by call");
        let id = envelope["event"]["id"].as_str().expect("id").to_owned();
        by_call.entry(call).or_default().push((record.partition, record.offset, id));
    }
    for (call, mut records) in by_call {
        assert!(records.windows(2).all(|w| w[0].0 == w[1].0), "{call}'s records share a partition");
        records.sort();
        let got: Vec<&String> = records.iter().map(|(_, _, id)| id).collect();
        let expected: Vec<&String> = sent.iter().filter(|id| id.contains(&format!("_{call}_"))).collect();
        assert_eq!(got, expected, "{call}'s records in the order accepted");
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_kafka_topic_gets_signed_records_keyed_by_call_in_order_and_an_unknown_topic_is_refused(pool: PgPool) {
    let server = brokers::kafka("127.0.0.1").await;
    let bootstrap = format!("127.0.0.1:{}", server.port);
    kafka_tool(&["create", &bootstrap, "agent-studio.calls", "3"]).await;
    let api = Api::new(pool.clone()).await;
    let webhook = create(
        &api,
        json!({"destination": {"type": "kafka", "brokers": [bootstrap], "topic": "agent-studio.calls"},
               "headers": {"X-Tenant": "acme"}, "ordering": "call"}),
    )
    .await;
    assert_eq!(webhook["url"], format!("kafka://{bootstrap}/agent-studio.calls"));
    assert_eq!(
        webhook["destination"],
        json!({"type": "kafka", "brokers": [bootstrap], "topic": "agent-studio.calls", "key": "call_id", "tls": false})
    );
    let nowhere = create(
        &api,
        json!({"destination": {"type": "kafka", "brokers": [bootstrap], "topic": "nobody.reads"}, "max_attempts": 1}),
    )
    .await;

    // By murmur2, as Kafka's clients partition, these fall on partitions 0, 0, 2 and 2 of 3.
    let sent = send_calls(&api, &["call-a", "call-b", "call-y", "call-z"], 3, "kafka").await;
    let outcomes = deliver_all(&api, config_targets()).await;
    assert_eq!(outcome_of(&outcomes, &nowhere), ("failed", Some("refused")));
    let id = webhook["id"].as_str().expect("id");
    let ours: Vec<_> = outcomes.iter().filter(|(w, _, _)| w == id).collect();
    assert_eq!(ours.len(), sent.len());
    assert!(ours.iter().all(|(_, status, _)| status == "succeeded"), "{ours:?}");

    let records = consume(&bootstrap, "agent-studio.calls", sent.len()).await;
    assert_signed_keyed_and_in_order(&records, webhook["secret"].as_str().expect("secret"), &sent);
    assert!(records.iter().all(|r| r.headers.get("X-Tenant").map(String::as_str) == Some("acme")));
    let partitions: std::collections::HashSet<i64> = records.iter().map(|r| r.partition).collect();
    assert!(partitions.len() > 1, "four calls spread over the topic's partitions: {partitions:?}");
    // The attempt log keeps where the record was stored, as an HTTP attempt keeps the receiver's body.
    let answers: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT a.response_body FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
         WHERE d.webhook_id = $1",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .expect("attempts");
    let answer: Value = serde_json::from_slice(&answers[0]).expect("json");
    assert_eq!(answer["topic"], "agent-studio.calls");
    assert!(answer["partition"].is_i64() && answer["offset"].is_i64(), "{answer}");
}

/// A proxy on 127.0.0.2:`port` to the broker on 127.0.0.1:`port`, counting the connections it takes.
async fn counting_proxy(port: u16) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.2", port)).await.expect("127.0.0.2 is loopback");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    connections
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_broker_the_cluster_advertises_outside_the_allowed_targets_is_never_connected_to(pool: PgPool) {
    // The broker listens on 127.0.0.1 and names 127.0.0.2 as its address, where a proxy counts who comes.
    let server = brokers::kafka("127.0.0.2").await;
    let connections = counting_proxy(server.port).await;
    let bootstrap = format!("127.0.0.1:{}", server.port);
    kafka_tool(&["create", &bootstrap, "calls", "1"]).await;
    let api = Api::new(pool.clone()).await;
    let webhook = create(
        &api,
        json!({"destination": {"type": "kafka", "brokers": [bootstrap], "topic": "calls"}, "max_attempts": 1}),
    )
    .await;
    let before = connections.load(Ordering::SeqCst);
    let (status, _) = api.event(call_completed("evt_kafka_ssrf")).await;
    assert_eq!(status, StatusCode::CREATED);
    // Only the bootstrap's own address is allowed: its metadata points elsewhere.
    let outcomes = deliver_all(&api, vec!["127.0.0.1/32".parse().expect("cidr")]).await;
    assert_eq!(outcome_of(&outcomes, &webhook), ("failed", Some("blocked_target")));
    assert_eq!(connections.load(Ordering::SeqCst), before, "the advertised address was never dialled");

    // The same cluster with 127.0.0.2 allowed: the record goes through the advertised address.
    let (status, _) = api.event(call_completed("evt_kafka_allowed")).await;
    assert_eq!(status, StatusCode::CREATED);
    let outcomes = deliver_all(&api, vec!["127.0.0.0/8".parse().expect("cidr")]).await;
    assert!(outcomes.iter().any(|(_, status, _)| status == "succeeded"), "{outcomes:?}");
    assert!(connections.load(Ordering::SeqCst) > before, "the leader is reached at the address it advertises");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_stopped_kafka_fails_attempts_until_it_is_back_and_then_everything_arrives_in_order(pool: PgPool) {
    let mut server = brokers::kafka("127.0.0.1").await;
    let bootstrap = format!("127.0.0.1:{}", server.port);
    kafka_tool(&["create", &bootstrap, "calls", "2"]).await;
    let api = Api::new(pool.clone()).await;
    let webhook = create(
        &api,
        json!({"destination": {"type": "kafka", "brokers": [bootstrap], "topic": "calls"},
               "ordering": "call", "max_attempts": 25}),
    )
    .await;
    let secret = webhook["secret"].as_str().expect("secret").to_owned();
    let first = send_calls(&api, &["call-a", "call-b"], 2, "before").await;
    deliver_all(&api, config_targets()).await;
    assert_signed_keyed_and_in_order(&consume(&bootstrap, "calls", first.len()).await, &secret, &first);

    // Killed: the test broker keeps its log in memory, so it comes back empty and the test creates the topic again.
    server.stop().await;
    let second = send_calls(&api, &["call-a", "call-b"], 3, "after").await;
    let address = bootstrap.clone();
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.start_again().await;
        kafka_tool(&["create", &address, "calls", "2"]).await;
        server
    });
    let retry = courier_core::RetryPolicy { cap: Duration::from_secs(1), ..config().retry };
    let outcomes = deliver_all_with(&api, courier_worker::WorkerConfig { retry, ..config() }).await;
    let _server = restarted.await.expect("restarted");
    assert!(outcomes.iter().all(|(_, status, _)| status == "succeeded"), "{outcomes:?}");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT error_kind FROM delivery_attempts WHERE error_kind IS NOT NULL")
            .fetch_all(&pool)
            .await
            .expect("attempts");
    assert!(kinds.iter().any(|k| k == "connect"), "attempts failed while the broker was down: {kinds:?}");
    // Between the broker's start and the topic's creation, the topic is unknown: a refusal.
    assert!(kinds.iter().all(|k| k == "connect" || k == "refused"), "{kinds:?}");
    assert_signed_keyed_and_in_order(&consume(&bootstrap, "calls", second.len()).await, &secret, &second);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_hanging_kafka_cluster_fails_its_own_attempts_and_slows_no_other_tenant(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let hanging = create(
        &api,
        json!({"destination": {"type": "kafka", "brokers": [format!("127.0.0.1:{silent_port}")], "topic": "calls"},
               "max_attempts": 1}),
    )
    .await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let neighbour = api.other_tenant_key().await;
    let (status, http) =
        api.call_as(&neighbour, Method::POST, "/api/v1/webhooks", Some(json!({"url": receiver.url}))).await;
    assert_eq!(status, StatusCode::CREATED, "{http}");
    for n in 0..5 {
        let (status, _) = api.event(call_completed(&format!("evt_kafka_hangs_{n}"))).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = api
            .call_as(&neighbour, Method::POST, "/api/v1/events", Some(call_completed(&format!("evt_next_{n}"))))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let started = tokio::time::Instant::now();
    let outcomes = deliver_all(&api, config_targets()).await;
    let id = hanging["id"].as_str().expect("id");
    assert!(
        outcomes.iter().filter(|(w, _, _)| w == id).all(|(_, s, k)| s == "failed" && k.as_deref() == Some("timeout"))
    );
    let http_id = http["id"].as_str().expect("id");
    assert!(outcomes.iter().filter(|(w, _, _)| w == http_id).all(|(_, s, _)| s == "succeeded"), "{outcomes:?}");
    assert_eq!(receiver.received().len(), 5, "the neighbour's receiver got every delivery");
    assert!(started.elapsed() < Duration::from_secs(10), "the attempt's timeout bounds a silent cluster");
    held.abort();
}
