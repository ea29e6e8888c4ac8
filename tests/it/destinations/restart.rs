//! A broker that goes away and comes back, for each broker type: the attempts meanwhile are recorded as failed
//! (`connect`), and the delivery arrives once, once the broker is back on its port with its data. Nothing is lost.

use std::time::Duration;

use axum::http::StatusCode;
use courier_worker::brokers::amqp;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{calls_stream, create, deliver_all_with, loopback, nats_admin, outcome_of, stream_entries};
use crate::api::{Api, call_completed};
use crate::brokers::{self, Broker};
use crate::fixture::config;

/// Stops `server`, sends one event to `webhook`, starts the server again after a while, runs a worker until the
/// delivery ended; asserts it succeeded after failed `connect` attempts.
async fn delivered_after_restart(pool: &PgPool, api: &Api, webhook: &Value, mut server: Broker) -> Broker {
    server.stop().await;
    let (status, _) = api.event(call_completed("evt_broker_restart")).await;
    assert_eq!(status, StatusCode::CREATED);
    // Back on the same port while the worker retries (every 200 ms at most).
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.start_again().await;
        server
    });
    // Retries up to 2 s apart: a RabbitMQ node takes several seconds to start again.
    let retry = courier_core::RetryPolicy { cap: Duration::from_secs(2), ..config().retry };
    let outcomes = deliver_all_with(api, courier_worker::WorkerConfig { retry, ..config() }).await;
    let server = restarted.await.expect("restarted");
    assert_eq!(outcome_of(&outcomes, webhook), ("succeeded", None));
    let kinds: Vec<Option<String>> = sqlx::query_scalar("SELECT error_kind FROM delivery_attempts ORDER BY attempt")
        .fetch_all(pool)
        .await
        .expect("attempts");
    let (last, failed) = kinds.split_last().expect("attempts");
    assert!(!failed.is_empty() && failed.iter().all(|k| k.as_deref() == Some("connect")), "{kinds:?}");
    assert_eq!(last, &None, "the last attempt was answered");
    server
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_stopped_redis_fails_attempts_until_it_is_back_and_then_gets_the_delivery(pool: PgPool) {
    let server = brokers::redis("pw").await;
    let url = format!("redis://:pw@127.0.0.1:{}", server.port);
    let api = Api::new(pool.clone()).await;
    let webhook =
        create(&api, json!({"destination": {"type": "redis", "url": url, "stream": "calls"}, "max_attempts": 25}))
            .await;
    let _server = delivered_after_restart(&pool, &api, &webhook, server).await;
    assert_eq!(stream_entries(&url, "calls").await.len(), 1, "delivered once");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_stopped_nats_server_fails_attempts_until_it_is_back_and_then_gets_the_delivery(pool: PgPool) {
    let server = brokers::nats("courier", "n4ts-pw").await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    calls_stream(&url, "file").await;
    let api = Api::new(pool.clone()).await;
    let webhook = create(
        &api,
        json!({"destination": {"type": "nats", "url": format!("nats://courier:n4ts-pw@127.0.0.1:{}", server.port),
                               "subject": "agent-studio.calls"}, "max_attempts": 25}),
    )
    .await;
    let _server = delivered_after_restart(&pool, &api, &webhook, server).await;
    let info = nats_admin(&url).await.request("$JS.API.STREAM.INFO.CALLS", b"").await.expect("stream info");
    let info: Value = serde_json::from_slice(&info).expect("json");
    assert_eq!(info["state"]["messages"], 1, "delivered once: {info}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_stopped_rabbitmq_fails_attempts_until_it_is_back_and_then_gets_the_delivery(pool: PgPool) {
    let server = brokers::rabbitmq("r4bbit-pw").await;
    let url = format!("amqp://courier:r4bbit-pw@127.0.0.1:{}/%2F", server.port);
    let policy = loopback();
    let connect = || amqp::Connection::open(&url, &policy, Duration::from_secs(5));
    connect()
        .await
        .expect("connects")
        .declare_bound_queue("calls", "amq.topic", "agent-studio.#")
        .await
        .expect("queue");
    let api = Api::new(pool.clone()).await;
    let webhook = create(
        &api,
        json!({"destination": {"type": "rabbitmq", "url": url, "exchange": "amq.topic",
                               "routing_key": "agent-studio.{type}"}, "max_attempts": 25}),
    )
    .await;
    let _server = delivered_after_restart(&pool, &api, &webhook, server).await;
    let mut admin = connect().await.expect("connects");
    assert!(admin.get("calls").await.expect("reads").is_some(), "the durable queue kept the delivery");
    assert!(admin.get("calls").await.expect("reads").is_none(), "delivered once");
}
