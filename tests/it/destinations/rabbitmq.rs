//! A RabbitMQ exchange as a destination, against a real `rabbitmq-server` on 127.0.0.1.

use std::time::Duration;

use axum::http::StatusCode;
use courier_worker::brokers::amqp;
use serde_json::json;
use sqlx::PgPool;

use super::{config_targets, create, deliver_all, loopback, outcome_of};
use crate::api::{Api, call_completed};
use crate::brokers;
use crate::support::guide_accepts;

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn rabbitmq_confirms_persistent_messages_and_refuses_unknown_exchanges_and_unroutable_keys(pool: PgPool) {
    let server = brokers::rabbitmq("r4bbit-pw").await;
    let url = format!("amqp://courier:r4bbit-pw@127.0.0.1:{}/%2F", server.port);
    let mut admin = amqp::Connection::open(&url, &loopback(), Duration::from_secs(5)).await.expect("connects");
    admin.declare_bound_queue("calls", "amq.topic", "agent-studio.#").await.expect("a queue for the calls");

    let api = Api::new(pool.clone()).await;
    let destination = |exchange: &str, key: &str| {
        json!({"destination": {"type": "rabbitmq", "url": url, "exchange": exchange, "routing_key": key},
               "max_attempts": 1, "headers": {"X-Tenant": "acme"}})
    };
    let stored = create(&api, destination("amq.topic", "agent-studio.{type}")).await;
    assert_eq!(stored["url"], format!("amqp://courier:********@127.0.0.1:{}/%2F", server.port));
    let missing = create(&api, destination("no-such-exchange", "agent-studio.{type}")).await;
    let unroutable = create(&api, destination("amq.topic", "nobody.{type}")).await;
    let wrong_password = create(
        &api,
        json!({"destination": {"type": "rabbitmq", "url": format!("amqp://courier:wrong@127.0.0.1:{}/", server.port),
                               "exchange": "amq.topic", "routing_key": "agent-studio.{type}"}, "max_attempts": 1}),
    )
    .await;

    let (status, _) = api.event(call_completed("evt_rabbit_1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let outcomes = deliver_all(&api, config_targets()).await;
    assert_eq!(outcome_of(&outcomes, &stored), ("succeeded", None));
    for refused in [&missing, &unroutable, &wrong_password] {
        assert_eq!(outcome_of(&outcomes, refused), ("failed", Some("refused")), "{refused}");
    }

    let got = admin.get("calls").await.expect("reads").expect("the confirmed message is in the queue");
    assert!(admin.get("calls").await.expect("reads").is_none(), "exactly one message");
    let delivery: String = sqlx::query_scalar("SELECT id FROM deliveries WHERE webhook_id = $1")
        .bind(stored["id"].as_str())
        .fetch_one(&pool)
        .await
        .expect("delivery");
    assert_eq!((got.message_id.as_str(), got.delivery_mode), (delivery.as_str(), 2), "persistent, named by delivery");
    assert_eq!((got.routing_key.as_str(), got.kind.as_str()), ("agent-studio.call.completed", "call.completed"));
    let header = |name: &str| got.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).expect(name);
    let secret = stored["secret"].as_str().expect("secret");
    assert!(
        guide_accepts(secret, &header("X-Webhook-Signature"), &got.body),
        "the guide's verify_signature accepts it"
    );
    assert_eq!(header("X-Tenant"), "acme");
}
