//! Neighbours through the API: one tenant hammering expensive reads cannot slow another tenant's ingest.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::api::{Api, api_config, call_completed};

/// Failed deliveries of the first tenant, enough that each replay count or filtered page takes a while.
const SEEDED: i64 = 120_000;

// Long because the scenario (a small pool, a seeded log, forty readers, twenty timed posts) is one story.
/// Forty clients of tenant A hammer replay dry-run counts and filtered log pages over a pool of four connections;
/// twenty posts of tenant B all answer 2xx, the slowest within a second: ingest and authentication have a pool of
/// their own, and A's expensive reads take turns (429 past its share).
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn ingest_never_waits_behind_another_tenants_reads(pool: PgPool) {
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("small pool");
    let api = Api::with_config(small, api_config()).await;
    let (status, webhook) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://a.example/hook", "filter": {"events": ["*"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at, updated_at)
         SELECT courier_id('dlv_'), w.tenant_id, w.environment, 'evt_seed' || g, w.id, 'call.completed',
                'call-' || g, 'failed', 5, 5, now() - interval '1 minute', now() - interval '1 minute'
           FROM webhooks w, generate_series(1, $1) g",
    )
    .bind(SEEDED)
    .execute(&pool)
    .await
    .expect("seed");
    sqlx::query("ANALYZE deliveries").execute(&pool).await.expect("analyze");
    let other = api.other_tenant_key().await;

    let until = Instant::now() + Duration::from_secs(4);
    let mut readers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let api = api.clone();
        readers.spawn(async move {
            let mut refused = 0u32;
            while Instant::now() < until {
                let status = if i % 2 == 0 {
                    api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"dry_run": true}))).await.0
                } else {
                    api.call(Method::GET, "/api/v1/deliveries?status=failed&event_type=call.started", None).await.0
                };
                if status == StatusCode::TOO_MANY_REQUESTS {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    assert!(status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
                }
            }
            refused
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let (status, body) =
            api.call_as(&other, Method::POST, "/api/v1/events", Some(call_completed(&format!("evt_b{i}")))).await;
        slowest = slowest.max(started.elapsed());
        assert!(status.is_success(), "B's post {i}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused: u32 = readers.join_all().await.into_iter().sum();
    eprintln!("beside forty readers of tenant A: B's slowest post {slowest:?}; A refused {refused} times");
    assert!(slowest < Duration::from_secs(1), "B's slowest post took {slowest:?}");
    assert!(refused > 0, "A's expensive reads took turns");
}
