//! Destinations beyond HTTP: a webhook that publishes to a Redis stream or a NATS JetStream subject, against real
//! `redis-server` and `nats-server` processes on 127.0.0.1. The body is the signed envelope the guide's
//! `verify_signature` accepts; credentials are sealed and shown masked; a broker that refuses, is closed or hangs
//! fails its own attempts only.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine;
use courier_core::MasterKey;
use courier_worker::brokers::{nats, redis};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, call_completed, field_of};
use crate::brokers;
use crate::fixture::config;
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

mod kafka;
mod ordering;
mod rabbitmq;
mod replay;
mod restart;
mod tls;

fn loopback() -> courier_core::target::TargetPolicy {
    courier_core::target::TargetPolicy::new(vec!["127.0.0.0/8".parse().expect("cidr")])
}

/// Runs a worker (with `allowed` targets) until every delivery ended, at most 60 s; returns each delivery's
/// status and the error kind of its last attempt, by webhook id.
async fn deliver_all(api: &Api, allowed: Vec<ipnet::IpNet>) -> Vec<(String, String, Option<String>)> {
    deliver_all_with(api, courier_worker::WorkerConfig { allowed_targets: allowed, ..config() }).await
}

/// Waits until no delivery is waiting, pending or in flight, at most 60 s.
async fn until_none_live(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status IN ('waiting', 'pending', 'delivering')")
                .fetch_one(pool)
                .await
                .expect("count");
        if live == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{live} deliveries never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`deliver_all`] by a worker configured with `cfg`.
async fn deliver_all_with(api: &Api, cfg: courier_worker::WorkerConfig) -> Vec<(String, String, Option<String>)> {
    let worker = courier_worker::Worker::new(api.pool.clone(), MasterKey::from_bytes(&[9u8; 32]), cfg).expect("worker");
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    until_none_live(&api.pool).await;
    stop.cancel();
    running.await.expect("joins").expect("stops");
    sqlx::query_as(
        "SELECT d.webhook_id, d.status::text, (SELECT a.error_kind FROM delivery_attempts a WHERE a.delivery_id = d.id
                                             ORDER BY a.attempt DESC LIMIT 1)
         FROM deliveries d ORDER BY d.webhook_id",
    )
    .fetch_all(&api.pool)
    .await
    .expect("deliveries")
}

async fn create(api: &Api, body: Value) -> Value {
    let (status, created) = api.call(Method::POST, "/api/v1/webhooks", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn outcome_of<'a>(outcomes: &'a [(String, String, Option<String>)], webhook: &Value) -> (&'a str, Option<&'a str>) {
    let id = webhook["id"].as_str().expect("id");
    let (_, status, kind) = outcomes.iter().find(|(w, _, _)| w == id).expect("a delivery of the webhook");
    (status.as_str(), kind.as_deref())
}

/// Every entry of `stream`: its id and its fields.
async fn stream_entries(url: &str, stream: &str) -> Vec<(Vec<u8>, Vec<(String, Vec<u8>)>)> {
    let mut reader = redis::Connection::open(url, &loopback(), Duration::from_secs(2)).await.expect("connects");
    let entries = reader.command(&[b"XRANGE", stream.as_bytes(), b"-", b"+"]).await.expect("reads");
    let redis::Reply::Array(Some(entries)) = entries else { panic!("entries: {entries:?}") };
    let field = |pair: &[redis::Reply]| match pair {
        [redis::Reply::Bulk(Some(name)), redis::Reply::Bulk(Some(value))] => {
            (String::from_utf8(name.clone()).expect("name"), value.clone())
        }
        other => panic!("a field: {other:?}"),
    };
    let entry = |entry: redis::Reply| match entry {
        redis::Reply::Array(Some(parts)) => match parts.as_slice() {
            [redis::Reply::Bulk(Some(id)), redis::Reply::Array(Some(flat))] => {
                (id.clone(), flat.chunks(2).map(field).collect())
            }
            other => panic!("an entry: {other:?}"),
        },
        other => panic!("an entry: {other:?}"),
    };
    entries.into_iter().map(entry).collect()
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_redis_stream_receives_the_signed_envelope_and_its_password_stays_sealed(pool: PgPool) {
    let server = brokers::redis("s3cret-pw").await;
    let api = Api::new(pool.clone()).await;
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", server.port);
    let webhook = create(
        &api,
        json!({"destination": {"type": "redis", "url": url, "stream": "agent-studio.calls", "maxlen": 1000},
               "headers": {"X-Tenant": "acme"}}),
    )
    .await;
    let masked = format!("redis://:********@127.0.0.1:{}/0", server.port);
    assert_eq!(webhook["url"], masked.as_str());
    assert_eq!(
        webhook["destination"],
        json!({"type": "redis", "url": masked, "stream": "agent-studio.calls", "maxlen": 1000})
    );
    let (stored, sealed): (String, Vec<u8>) =
        sqlx::query_as("SELECT url || destination::text, destination_ciphertext FROM webhooks")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert!(!stored.contains("s3cret-pw") && !sealed.windows(9).any(|w| w == b"s3cret-pw"), "the password is sealed");

    let (status, _) = api.event(call_completed("evt_redis_1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let outcomes = deliver_all(&api, config().allowed_targets).await;
    assert_eq!(outcome_of(&outcomes, &webhook), ("succeeded", None));

    let entries = stream_entries(&url, "agent-studio.calls").await;
    assert_eq!(entries.len(), 1, "one delivery, one entry");
    let (entry_id, fields) = &entries[0];
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).expect(name);
    let body = field("body");
    let envelope: Value = serde_json::from_slice(&body).expect("the envelope");
    assert_eq!(envelope["event"]["id"], "evt_redis_1");
    assert!(
        envelope["event"]["data"].get("call_id").is_some() && envelope["event"]["data"].get("transcript").is_none(),
        "filtered like an HTTP delivery"
    );
    let signature = String::from_utf8(field("X-Webhook-Signature")).expect("text");
    let secret = webhook["secret"].as_str().expect("secret");
    assert!(guide_accepts(secret, &signature, &body), "the guide's verify_signature accepts the entry");
    assert_eq!(field("X-Tenant"), b"acme");
    assert_eq!(field("delivery_id"), field("X-Webhook-Delivery"));
    // The attempt log keeps the entry id Redis answered, as an HTTP attempt keeps the receiver's body.
    let answer: Vec<u8> =
        sqlx::query_scalar("SELECT response_body FROM delivery_attempts").fetch_one(&pool).await.expect("attempt");
    assert_eq!(&answer, entry_id);
}

/// A JetStream stream `CALLS` storing `agent-studio.>` in memory, and the admin connection that made it.
async fn nats_admin(url: &str) -> nats::Connection {
    let credentials = courier_core::destination::NatsCredentials {
        username: Some("courier".into()),
        password: Some("n4ts-pw".into()),
        token: None,
    };
    nats::Connection::open(url, Some(&credentials), &loopback(), Duration::from_secs(2)).await.expect("connects")
}

/// Creates the stream `CALLS` of `agent-studio.>` (`storage`: `memory` or `file`); returns the admin connection.
async fn calls_stream(url: &str, storage: &str) -> nats::Connection {
    let mut admin = nats_admin(url).await;
    let config = json!({"name": "CALLS", "subjects": ["agent-studio.>"], "storage": storage});
    let created = admin.request("$JS.API.STREAM.CREATE.CALLS", config.to_string().as_bytes()).await.expect("stream");
    assert!(serde_json::from_slice::<Value>(&created).expect("json").get("error").is_none(), "stream created");
    admin
}

/// Message `seq` of `CALLS`: its header block and its body.
async fn stored_message(admin: &mut nats::Connection, seq: u64) -> (String, Vec<u8>) {
    let asked = json!({"seq": seq}).to_string();
    let got = admin.request("$JS.API.STREAM.MSG.GET.CALLS", asked.as_bytes()).await.expect("message");
    let got: Value = serde_json::from_slice(&got).expect("json");
    let decode = |field: &str| {
        base64::engine::general_purpose::STANDARD.decode(got["message"][field].as_str().expect(field)).expect("base64")
    };
    (String::from_utf8(decode("hdrs")).expect("headers"), decode("data"))
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn jetstream_acknowledges_each_delivery_and_a_subject_without_a_stream_is_refused(pool: PgPool) {
    let server = brokers::nats("courier", "n4ts-pw").await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let mut admin = calls_stream(&url, "memory").await;
    let api = Api::new(pool.clone()).await;
    let stored = create(
        &api,
        json!({"destination": {"type": "nats", "url": url, "subject": "agent-studio.calls",
                               "credentials": {"username": "courier", "password": "n4ts-pw"}}}),
    )
    .await;
    assert_eq!(stored["destination"]["credentials"], json!({"username": "********", "password": "********"}));
    let nowhere = create(
        &api,
        json!({"destination": {"type": "nats", "url": format!("nats://courier:n4ts-pw@127.0.0.1:{}", server.port),
                               "subject": "nobody.listens"}, "max_attempts": 2}),
    )
    .await;
    assert_eq!(nowhere["url"], format!("nats://courier:********@127.0.0.1:{}", server.port));
    let wrong_password = create(
        &api,
        json!({"destination": {"type": "nats", "url": format!("nats://courier:wrong@127.0.0.1:{}", server.port),
                               "subject": "agent-studio.calls"}, "max_attempts": 1}),
    )
    .await;

    let (status, _) = api.event(call_completed("evt_nats_1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let outcomes = deliver_all(&api, config_targets()).await;
    assert_eq!(outcome_of(&outcomes, &stored), ("succeeded", None));
    assert_eq!(outcome_of(&outcomes, &nowhere), ("failed", Some("refused")));
    assert_eq!(outcome_of(&outcomes, &wrong_password), ("failed", Some("refused")));
    assert_eq!(attempts_of(&pool, &nowhere).await, 2, "a refusal is retried until max_attempts");

    let (headers, body) = stored_message(&mut admin, 1).await;
    let header =
        |name: &str| headers.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::to_owned).expect(name);
    let delivery: String = sqlx::query_scalar("SELECT id FROM deliveries WHERE webhook_id = $1")
        .bind(stored["id"].as_str())
        .fetch_one(&pool)
        .await
        .expect("delivery");
    assert_eq!(header("Nats-Msg-Id"), delivery, "JetStream deduplicates a retried publish by the delivery id");
    assert_eq!(header("webhook-id"), "evt_nats_1");
    let secret = stored["secret"].as_str().expect("secret");
    assert!(guide_accepts(secret, &header("X-Webhook-Signature"), &body), "the guide's verify_signature accepts it");
    let ack: Vec<u8> = sqlx::query_scalar("SELECT a.response_body FROM delivery_attempts a WHERE a.delivery_id = $1")
        .bind(&delivery)
        .fetch_one(&pool)
        .await
        .expect("attempt");
    assert_eq!(serde_json::from_slice::<Value>(&ack).expect("ack")["stream"], "CALLS");
}

async fn attempts_of(pool: &PgPool, webhook: &Value) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.webhook_id = $1",
    )
    .bind(webhook["id"].as_str())
    .fetch_one(pool)
    .await
    .expect("count")
}

fn config_targets() -> Vec<ipnet::IpNet> {
    config().allowed_targets
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn closed_hanging_and_forbidden_brokers_fail_their_own_attempts_and_slow_no_one_else(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    // A port nothing listens on, and a listener that accepts and never says a word.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let refused = create(
        &api,
        json!({"destination": {"type": "redis", "url": format!("redis://127.0.0.1:{closed}"), "stream": "s"},
               "max_attempts": 1}),
    )
    .await;
    let hanging = create(
        &api,
        json!({"destination": {"type": "nats", "url": format!("nats://127.0.0.1:{silent_port}"), "subject": "s"},
               "max_attempts": 1}),
    )
    .await;
    // Another tenant's HTTP webhook, delivered by the same worker.
    let receiver = Receiver::start(Reply::Status(200)).await;
    let neighbour = api.other_tenant_key().await;
    let (status, http) =
        api.call_as(&neighbour, Method::POST, "/api/v1/webhooks", Some(json!({"url": receiver.url}))).await;
    assert_eq!(status, StatusCode::CREATED, "{http}");
    let (status, _) = api.event(call_completed("evt_hostile_brokers")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) =
        api.call_as(&neighbour, Method::POST, "/api/v1/events", Some(call_completed("evt_neighbour"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let started = tokio::time::Instant::now();
    let outcomes = deliver_all(&api, config_targets()).await;
    assert_eq!(outcome_of(&outcomes, &refused), ("failed", Some("connect")));
    assert_eq!(outcome_of(&outcomes, &hanging), ("failed", Some("timeout")));
    assert_eq!(outcome_of(&outcomes, &http), ("succeeded", None));
    assert!(started.elapsed() < Duration::from_secs(5), "the attempt's timeout bounds a silent broker");
    held.abort();

    // The connect-time guard: a worker that may not reach loopback never dials a broker there.
    let blocked = create(
        &api,
        json!({"destination": {"type": "redis", "url": format!("redis://127.0.0.1:{closed}"), "stream": "s"},
               "max_attempts": 1}),
    )
    .await;
    let (status, _) = api.event(call_completed("evt_blocked_broker")).await;
    assert_eq!(status, StatusCode::CREATED);
    let outcomes = deliver_all(&api, vec!["10.99.0.0/16".parse().expect("cidr")]).await;
    let id = blocked["id"].as_str().expect("id");
    let kinds: Vec<_> = outcomes.iter().filter(|(w, _, _)| w == id).map(|(_, _, k)| k.clone()).collect();
    assert!(kinds.contains(&Some("blocked_target".to_owned())), "{kinds:?}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_bad_destination_is_a_422_naming_its_field_and_creates_nothing(pool: PgPool) {
    let mut strict = crate::api::api_config();
    strict.webhooks.allowed_targets = Vec::new();
    let api = Api::with_config(pool, strict).await;
    let cases = [
        (json!({"destination": {"type": "redis", "url": "redis://example.com", "stream": ""}}), "destination.stream"),
        (
            json!({"destination": {"type": "redis", "url": "redis://example.com", "stream": "s", "maxlen": 0}}),
            "destination.maxlen",
        ),
        (
            json!({"destination": {"type": "nats", "url": "nats://example.com", "subject": "calls.*"}}),
            "destination.subject",
        ),
        (json!({"destination": {"type": "nats", "url": "redis://example.com", "subject": "calls"}}), "destination.url"),
        (json!({"destination": {"type": "redis", "url": "redis://10.0.0.5:6379", "stream": "s"}}), "destination.url"),
        (json!({"destination": {"type": "redis", "url": "redis://127.0.0.1:6379", "stream": "s"}}), "destination.url"),
        (json!({"destination": {"type": "nats", "url": "nats://localhost:4222", "subject": "s"}}), "destination.url"),
        (json!({"destination": {"type": "redis", "url": "redis://example.com/x", "stream": "s"}}), "destination.url"),
        (
            json!({"url": "https://example.com/h", "destination": {"type": "http", "url": "https://example.com/h"}}),
            "destination",
        ),
        (json!({"description": "nowhere"}), "url"),
        (
            json!({"destination": {"type": "rabbitmq", "url": "amqp://example.com", "exchange": "a b", "routing_key": "k"}}),
            "destination.exchange",
        ),
        (
            json!({"destination": {"type": "rabbitmq", "url": "redis://example.com", "exchange": "x", "routing_key": "k"}}),
            "destination.url",
        ),
        (json!({"destination": {"type": "redis", "url": "redis://2130706433:6379", "stream": "s"}}), "destination.url"),
        (json!({"destination": {"type": "redis", "url": "redis://0x7f.1", "stream": "s"}}), "destination.url"),
        (
            json!({"destination": {"type": "redis", "url": "redis://example.com/0?password=x", "stream": "s"}}),
            "destination.url",
        ),
        (json!({"destination": {"type": "nats", "url": "nats://example.com/path", "subject": "s"}}), "destination.url"),
        (
            json!({"destination": {"type": "nats", "url": "nats://example.com", "subject": "s"},
                "headers": {"Nats-Rollup": "all"}}),
            "headers.Nats-Rollup",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = api.call(Method::POST, "/api/v1/webhooks", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(field_of(&error), vec![field.to_owned()], "{body}: {error}");
    }
    let (status, _) = api
        .call(Method::POST, "/api/v1/webhooks", Some(json!({"destination": {"type": "kafka", "url": "k://h"}})))
        .await;
    assert!(status.is_client_error(), "an unknown type is refused");
    let (_, list) = api.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "nothing was created");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_long_form_of_an_http_webhook_is_the_short_form_and_patch_moves_between_kinds(pool: PgPool) {
    let api = Api::new(pool).await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"destination": {"type": "http", "url": "https://example.com/h"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["destination"], json!({"type": "http", "url": "https://example.com/h"}));
    let path = format!("/api/v1/webhooks/{}", created["id"].as_str().expect("id"));
    let redis = json!({"type": "redis", "url": "redis://:pw@example.com:6379", "stream": "calls"});
    let (status, moved) = api.call(Method::PATCH, &path, Some(json!({"destination": redis}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["destination"]["type"], "redis");
    assert_eq!(moved["url"], "redis://:********@example.com:6379");
    let (status, back) = api.call(Method::PATCH, &path, Some(json!({"url": "https://example.com/back"}))).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["destination"], json!({"type": "http", "url": "https://example.com/back"}));
}
