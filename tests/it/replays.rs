//! Bulk replay jobs: a tenant runs a bounded number of them.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::api::{Api, api_config};

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_tenant_past_its_running_replays_gets_422_even_all_at_once(pool: PgPool) {
    let api = Api::with_config(pool, courier_api::ApiConfig { max_running_replays: 2, ..api_config() }).await;
    // Five at once against a limit of two: the tenant's lock lets exactly two through.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let api = api.clone();
        calls.spawn(async move { api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await });
    }
    let answers = calls.join_all().await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).count(), 2, "{answers:?}");
    for (status, error) in answers.iter().filter(|(s, _)| *s != StatusCode::ACCEPTED) {
        assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("COURIER_MAX_RUNNING_REPLAYS"), "{error}");
    }
    // Another tenant has a limit of its own; a dry run is no job; once the jobs end there is room again.
    let other = api.other_tenant_key().await;
    let (status, _) = api.call_as(&other, Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"dry_run": true}))).await;
    assert_eq!(status, StatusCode::OK);
    while courier_scheduler::replay::advance(&api.pool).await.expect("advance") {}
    let (status, body) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}
