//! Brokers over TLS (`rediss://`, NATS's `tls://`, `amqps://`), against real brokers serving a certificate of a
//! test CA: a worker that does not trust the CA fails each attempt as `tls` (the certificate is checked, not
//! waved through); a `courier worker` whose `SSL_CERT_FILE` names the CA delivers to all three.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use courier_worker::brokers::amqp;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{calls_stream, create, deliver_all, loopback, nats_admin, outcome_of, stream_entries, until_none_live};
use crate::api::{Api, call_completed};
use crate::brokers::{self, Certificates};
use crate::fixture::config;

/// The URL of the test's own database (a `#[sqlx::test]` database on the cluster of `DATABASE_URL`).
async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.expect("name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    format!("{}/{name}", base.rsplit_once('/').expect("a database path").0)
}

/// Runs `courier worker` trusting `ca` (through `SSL_CERT_FILE`) until no delivery is live, at most 60 s.
async fn deliver_trusting(pool: &PgPool, ca: &str) {
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .arg("worker")
        .env("DATABASE_URL", database_url(pool).await)
        .env("COURIER_SECRET_KEY", key)
        .env("COURIER_LISTEN", "127.0.0.1:0")
        .env("COURIER_METRICS_LISTEN", "127.0.0.1:0")
        .env("COURIER_ALLOWED_TARGETS", "127.0.0.0/8")
        .env("COURIER_RETRY_INITIAL", "100ms")
        .env("COURIER_RETRY_CAP", "500ms")
        .env("COURIER_LOG_FORMAT", "json")
        .env("SSL_CERT_FILE", ca)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("courier worker starts");
    until_none_live(pool).await;
    worker.kill().await.expect("the worker stops");
}

/// The status and last error kind of `webhook`'s delivery of `event`.
async fn outcome(pool: &PgPool, webhook: &Value, event: &str) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT d.status::text, (SELECT a.error_kind FROM delivery_attempts a WHERE a.delivery_id = d.id
                                 ORDER BY a.attempt DESC LIMIT 1)
         FROM deliveries d WHERE d.webhook_id = $1 AND d.event_id = $2",
    )
    .bind(webhook["id"].as_str())
    .bind(event)
    .fetch_one(pool)
    .await
    .expect("a delivery")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn brokers_over_tls_are_verified_and_delivered_to(pool: PgPool) {
    let certificates = Certificates::make();
    let (redis, redis_tls) = brokers::redis_tls("pw", &certificates).await;
    let nats = brokers::nats_tls("courier", "n4ts-pw", &certificates).await;
    let (rabbit, rabbit_tls) = brokers::rabbitmq_tls("r4bbit-pw", &certificates).await;
    // The test reads back in plain text; Courier publishes over TLS.
    let nats_plain = format!("nats://127.0.0.1:{}", nats.port);
    calls_stream(&nats_plain, "memory").await;
    let rabbit_plain = format!("amqp://courier:r4bbit-pw@127.0.0.1:{}/%2F", rabbit.port);
    let policy = loopback();
    let mut rabbit_admin = amqp::Connection::open(&rabbit_plain, &policy, Duration::from_secs(5)).await.expect("amqp");
    rabbit_admin.declare_bound_queue("calls", "amq.topic", "agent-studio.#").await.expect("a queue");

    let api = Api::new(pool.clone()).await;
    let destination = |d: Value| json!({"destination": d, "max_attempts": 2});
    let webhooks = [
        create(
            &api,
            destination(json!({"type": "redis", "url": format!("rediss://:pw@127.0.0.1:{redis_tls}"),
                                          "stream": "calls"})),
        )
        .await,
        create(
            &api,
            destination(json!({"type": "nats", "url": format!("tls://courier:n4ts-pw@127.0.0.1:{}", nats.port),
                                          "subject": "agent-studio.calls"})),
        )
        .await,
        create(
            &api,
            destination(json!({"type": "rabbitmq",
                                          "url": format!("amqps://courier:r4bbit-pw@127.0.0.1:{rabbit_tls}/%2F"),
                                          "exchange": "amq.topic", "routing_key": "agent-studio.{type}"})),
        )
        .await,
    ];
    assert_eq!(webhooks[2]["url"], format!("amqps://courier:********@127.0.0.1:{rabbit_tls}/%2F"));

    // This process trusts only the system's roots: the test CA's certificate is refused.
    let (status, _) = api.event(call_completed("evt_tls_untrusted")).await;
    assert_eq!(status, StatusCode::CREATED);
    let outcomes = deliver_all(&api, config().allowed_targets).await;
    for webhook in &webhooks {
        assert_eq!(outcome_of(&outcomes, webhook), ("failed", Some("tls")), "{webhook}");
    }

    let (status, _) = api.event(call_completed("evt_tls_trusted")).await;
    assert_eq!(status, StatusCode::CREATED);
    deliver_trusting(&pool, &certificates.path("ca.crt")).await;
    for webhook in &webhooks {
        assert_eq!(outcome(&pool, webhook, "evt_tls_trusted").await, ("succeeded".to_owned(), None), "{webhook}");
    }
    let entries = stream_entries(&format!("redis://:pw@127.0.0.1:{}", redis.port), "calls").await;
    assert_eq!(entries.len(), 1, "one entry, the trusted attempt's");
    let info = nats_admin(&nats_plain).await.request("$JS.API.STREAM.INFO.CALLS", b"").await.expect("stream info");
    assert_eq!(serde_json::from_slice::<Value>(&info).expect("json")["state"]["messages"], 1);
    let got = rabbit_admin.get("calls").await.expect("reads").expect("the message");
    assert_eq!(got.kind, "call.completed");
    assert!(rabbit_admin.get("calls").await.expect("reads").is_none(), "exactly one message");
}
