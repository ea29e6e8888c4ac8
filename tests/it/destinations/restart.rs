//! A broker that goes away and comes back: the attempts meanwhile are recorded as failed (`connect`), and the
//! delivery arrives once the broker is back. Nothing is lost.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use super::{config_targets, create, deliver_all, outcome_of, stream_entries};
use crate::api::{Api, call_completed};
use crate::brokers;

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_stopped_broker_fails_attempts_until_it_is_back_and_then_gets_the_delivery(pool: PgPool) {
    let server = brokers::redis("pw").await;
    let port = server.port;
    let url = format!("redis://:pw@127.0.0.1:{port}");
    let api = Api::new(pool.clone()).await;
    let webhook =
        create(&api, json!({"destination": {"type": "redis", "url": url, "stream": "calls"}, "max_attempts": 25}))
            .await;
    drop(server);
    let (status, _) = api.event(call_completed("evt_redis_restart")).await;
    assert_eq!(status, StatusCode::CREATED);
    // Back on the same port while the worker retries (every 200 ms at most, 25 attempts: about 5 s).
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        brokers::redis_on(Some(port), "pw").await
    });
    let outcomes = deliver_all(&api, config_targets()).await;
    let _server = restarted.await.expect("restarted");
    assert_eq!(outcome_of(&outcomes, &webhook), ("succeeded", None));
    let kinds: Vec<Option<String>> = sqlx::query_scalar("SELECT error_kind FROM delivery_attempts ORDER BY attempt")
        .fetch_all(&pool)
        .await
        .expect("attempts");
    let (last, failed) = kinds.split_last().expect("attempts");
    assert!(!failed.is_empty() && failed.iter().all(|k| k.as_deref() == Some("connect")), "{kinds:?}");
    assert_eq!(last, &None, "the last attempt was answered");
    assert_eq!(stream_entries(&url, "calls").await.len(), 1, "delivered once");
}
