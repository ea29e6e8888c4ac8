//! Operational events (`webhook.disabled`, `delivery.exhausted`): Courier's own events in the tenant's stream,
//! delivered only where a filter names them, never about the webhook itself, signed and recorded like any other.

use courier_core::{EventType, PayloadFilter};
use courier_scheduler::DeliveryStatus;
use sqlx::PgPool;

use crate::fixture::{Fixture, config};
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn an_exhausted_delivery_is_announced_to_the_webhooks_that_asked_and_never_to_itself(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let failing = Receiver::start(Reply::Status(500)).await;
    let ops = Receiver::start(Reply::Status(200)).await;
    let everything = Receiver::start(Reply::Status(200)).await;
    let none = PayloadFilter::default();
    // Fails for good on its only attempt, and itself asks for exhausted deliveries.
    let (dead, _) = f.webhook_for(f.owner, &failing.url, &["call.completed", "delivery.exhausted"], none, 1).await;
    let (_, ops_secret) = f.webhook_for(f.owner, &ops.url, &["delivery.exhausted", "webhook.disabled"], none, 3).await;
    f.webhook_for(f.owner, &everything.url, &["*"], none, 3).await;

    let (event_id, fanned_out) = f.ingest_for(f.owner, EventType::CallCompleted).await;
    assert_eq!(fanned_out, 2, "the call event goes to the two webhooks that select it");
    f.drain(&f.worker(config())).await;

    let announced = ops.received();
    assert_eq!(announced.len(), 1, "one delivery was exhausted");
    let body = announced[0].json();
    assert_eq!(body["event"]["type"], "delivery.exhausted");
    let data = &body["event"]["data"];
    assert_eq!(data["event_id"], event_id.as_str());
    assert_eq!(data["webhook_id"], dead.id.as_str());
    assert_eq!(data["last_status_code"], 500);
    assert_eq!(data["attempts"], 1);
    assert_eq!(data["call_id"], "call-1");
    assert!(data["delivery_id"].as_str().is_some_and(|d| d.starts_with("dlv_")));
    assert!(guide_accepts(ops_secret.expose(), announced[0].header("x-webhook-signature"), &announced[0].body));
    assert_eq!(failing.received().len(), 1, "the exhausted webhook never hears about itself");
    let types: Vec<String> = everything.received().iter().map(|r| r.json()["event"]["type"].to_string()).collect();
    assert_eq!(types, vec!["\"call.completed\""], "`*` does not include operational events");
    // Recorded like any other delivery.
    let all = f.deliveries().await;
    assert_eq!(all.len(), 3);
    let recorded: Vec<_> = all.iter().filter(|d| d.event_type == EventType::DeliveryExhausted).collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!((recorded[0].status, recorded[0].attempt_count), (DeliveryStatus::Succeeded, 1));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_410_announces_webhook_disabled_with_its_reason(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let gone = Receiver::start(Reply::Status(410)).await;
    let ops = Receiver::start(Reply::Status(200)).await;
    let none = PayloadFilter::default();
    let (webhook, _) = f.webhook(&gone.url, 5).await;
    f.webhook_for(f.owner, &ops.url, &["webhook.disabled"], none, 3).await;
    f.ingest().await;
    f.drain(&f.worker(config())).await;

    let announced = ops.received();
    assert_eq!(announced.len(), 1);
    let body = announced[0].json();
    assert_eq!(body["event"]["type"], "webhook.disabled");
    assert_eq!(body["event"]["data"]["webhook_id"], webhook.id.as_str());
    assert_eq!(body["event"]["data"]["reason"], "gone");
    assert_eq!(gone.received().len(), 1, "no delivery.exhausted for a 410, and nothing more to the gone webhook");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn emitters_cannot_post_operational_events_but_filters_and_logs_can_name_them(pool: PgPool) {
    use axum::http::{Method, StatusCode};
    use serde_json::json;
    let api = crate::api::Api::new(pool).await;
    let (status, body) = api
        .event(json!({"id": "evt_fake", "type": "webhook.disabled", "data": {"call_id": "c", "webhook_id": "wh_x"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(crate::api::field_of(&body), vec!["type".to_owned()]);
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://e.com/ops", "filter": {"events": ["delivery.exhausted", "webhook.disabled"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["filter"]["events"], json!(["webhook.disabled", "delivery.exhausted"]));
    let (status, _) = api.call(Method::GET, "/api/v1/deliveries?event_type=delivery.exhausted", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn disabling_through_the_api_announces_webhook_disabled_manual(pool: PgPool) {
    use std::time::Duration;

    use axum::http::{Method, StatusCode};
    use serde_json::json;
    let api = crate::api::Api::new(pool.clone()).await;
    let ops = Receiver::start(Reply::Status(200)).await;
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": ops.url, "filter": {"events": ["webhook.disabled"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, target) = api.call(Method::POST, "/api/v1/webhooks", Some(json!({"url": "http://127.0.0.1:9/t"}))).await;
    let uri = format!("/api/v1/webhooks/{}", target["id"].as_str().expect("id"));
    let (status, disabled) = api.call(Method::PATCH, &uri, Some(json!({"status": "disabled"}))).await;
    assert_eq!(status, StatusCode::OK, "{disabled}");
    assert_eq!((disabled["status"].as_str(), disabled["disabled_reason"].as_str()), (Some("disabled"), Some("manual")));
    // Disabling it again announces nothing more.
    api.call(Method::PATCH, &uri, Some(json!({"status": "disabled"}))).await;
    let announced: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'webhook.disabled'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(announced, 1);

    let key = courier_core::MasterKey::from_bytes(&[9u8; 32]);
    let worker = courier_worker::Worker::new(pool, key, config()).expect("worker");
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ops.received().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the announcement never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    running.await.expect("joins").expect("stops");
    let received = ops.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json()["event"]["data"]["reason"], "manual");
    assert_eq!(received[0].json()["event"]["data"]["webhook_id"], target["id"]);
}

/// A finished attempt recorded after its delivery was already ended elsewhere (the lease sweep failed it, or it
/// was cancelled in flight) announces nothing more: side effects follow the rows the fenced update moved.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_late_attempt_never_announces_an_exhausted_delivery_twice(pool: PgPool) {
    use courier_core::{AttemptResult, Next};
    use courier_scheduler::{AttemptRecord, Skip, claim, lease, record};
    use std::time::Duration;
    let f = Fixture::new(pool).await;
    let none = PayloadFilter::default();
    let (dead, _) = f.webhook_for(f.owner, "http://127.0.0.1:9/dead", &["call.completed"], none, 1).await;
    f.webhook_for(f.owner, "http://127.0.0.1:9/ops", &["delivery.exhausted"], none, 3).await;
    let announced = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'delivery.exhausted'")
            .fetch_one(&f.pool)
            .await
            .expect("count")
    };
    let late = |id: courier_core::DeliveryId| AttemptRecord {
        delivery_id: id,
        webhook_id: dead.id.clone(),
        attempt: 1,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(5),
        result: AttemptResult::Response { status: 500, retry_after: None },
        error_message: None,
        response_body: None,
        signature_timestamp: 0,
        next: Next::Failed,
        ordered: false,
        handover: None,
    };

    // The sweep fails a lease that ran out after the last attempt, and announces it; the attempt comes in late.
    f.ingest().await;
    let claimed = claim(&f.pool, &f.clock, 10, Duration::from_millis(1), Skip::default()).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    f.clock.advance(Duration::from_millis(20));
    assert_eq!(lease::fail_exhausted_leases(&f.pool, &f.clock).await.expect("sweep"), 1);
    assert_eq!(announced().await, 1, "the sweep announces the exhausted delivery");
    let recorded = record(&f.pool, &f.clock, &[late(claimed[0].id.clone())]).await.expect("record");
    assert_eq!(recorded.updated, 0, "the fence holds");
    assert_eq!(announced().await, 1, "and the late attempt announces nothing more");

    // Cancelled while in flight: its late failure announces nothing at all.
    f.ingest().await;
    let claimed = claim(&f.pool, &f.clock, 10, Duration::from_secs(30), Skip::default()).await.expect("claim");
    let in_flight: Vec<_> = claimed.iter().filter(|c| c.webhook.id == dead.id).collect();
    assert_eq!(in_flight.len(), 1);
    let ids = [in_flight[0].leased()];
    assert_eq!(lease::cancel_claimed(&f.pool, &f.clock, &ids).await.expect("cancel"), 1);
    record(&f.pool, &f.clock, &[late(in_flight[0].id.clone())]).await.expect("record");
    assert_eq!(announced().await, 1, "a cancelled delivery is never announced as exhausted");
    let status: String = sqlx::query_scalar("SELECT status::text FROM deliveries WHERE id = $1")
        .bind(in_flight[0].id.as_str())
        .fetch_one(&f.pool)
        .await
        .expect("status");
    assert_eq!(status, "cancelled");
}
