//! A broker destination goes through the same queue as a URL: a replay of a delivery to a Redis stream publishes
//! it again, as a new delivery with its own id.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use super::{config_targets, create, deliver_all, stream_entries};
use crate::api::{Api, call_completed};
use crate::brokers;

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_replay_of_a_delivery_to_a_redis_stream_publishes_it_again(pool: PgPool) {
    let server = brokers::redis("pw").await;
    let url = format!("redis://:pw@127.0.0.1:{}", server.port);
    let api = Api::new(pool.clone()).await;
    create(&api, json!({"destination": {"type": "redis", "url": url, "stream": "calls"}})).await;
    let (status, _) = api.event(call_completed("evt_redis_replay")).await;
    assert_eq!(status, StatusCode::CREATED);
    deliver_all(&api, config_targets()).await;
    let first: String = sqlx::query_scalar("SELECT id FROM deliveries").fetch_one(&pool).await.expect("delivery");

    let (status, replayed) = api.call(Method::POST, &format!("/api/v1/deliveries/{first}/replay"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{replayed}");
    let outcomes = deliver_all(&api, config_targets()).await;
    assert!(outcomes.iter().all(|(_, status, _)| status == "succeeded"), "{outcomes:?}");
    let entries = stream_entries(&url, "calls").await;
    let ids: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, fields)| fields.iter().find(|(n, _)| n == "delivery_id").map(|(_, v)| v.clone()).expect("id"))
        .collect();
    let replay_id = replayed["id"].as_str().expect("the replay's delivery id");
    assert_eq!(ids, vec![first.into_bytes(), replay_id.as_bytes().to_vec()], "published twice, once per delivery");
}
