//! Per-call ordering holds for a broker destination while the broker fails 30 % of what it is sent: a proxy in
//! front of a real Redis drops the connection instead of forwarding 3 commands in 10. Every event of
//! the call arrives once, in the order it was accepted, and failed attempts were recorded on the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{config_targets, create, deliver_all, stream_entries};
use crate::api::{Api, call_completed};
use crate::brokers;

/// A proxy to `upstream` that drops the connection instead of forwarding a client's write: 3 writes in every 10,
/// in a row (writes 1, 2 and 3 of each ten, counted over every connection), so a retry on a fresh connection can
/// fail too and failed attempts are certain, not likely. Each command the worker sends is one write.
async fn flaky_proxy(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let writes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
            tokio::spawn(relay(client, server, writes.clone()));
        }
    });
    port
}

async fn relay(client: TcpStream, server: TcpStream, writes: Arc<AtomicU64>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let back = tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from_client.read(&mut buffer).await {
        let dropped = (1..=3).contains(&(writes.fetch_add(1, Ordering::Relaxed) % 10));
        if n == 0 || dropped || to_server.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    back.abort();
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_calls_events_reach_a_failing_broker_once_each_and_in_order(pool: PgPool) {
    let server = brokers::redis("pw").await;
    let proxy = flaky_proxy(server.port).await;
    let api = Api::new(pool.clone()).await;
    let through_proxy = format!("redis://:pw@127.0.0.1:{proxy}");
    create(
        &api,
        json!({"destination": {"type": "redis", "url": through_proxy, "stream": "calls"},
               "ordering": "call", "max_attempts": 25}),
    )
    .await;
    let posted: Vec<String> = (0..8).map(|i| format!("evt_ordered_{i}")).collect();
    for id in &posted {
        let (status, body) = api.event(call_completed(id)).await;
        assert_eq!(status, axum::http::StatusCode::CREATED, "{body}");
    }
    let outcomes = deliver_all(&api, config_targets()).await;
    assert!(outcomes.iter().all(|(_, status, _)| status == "succeeded"), "{outcomes:?}");
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE error_kind IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("count");
    let attempts: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT delivery_id, attempt, error_kind FROM delivery_attempts ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .expect("attempts");
    assert!(failed > 0, "the proxy failed some attempts: {attempts:?}");

    let direct = format!("redis://:pw@127.0.0.1:{}", server.port);
    let arrived: Vec<String> = stream_entries(&direct, "calls")
        .await
        .into_iter()
        .map(|(_, fields)| {
            let body = fields.into_iter().find(|(n, _)| n == "body").map(|(_, v)| v).expect("body");
            let envelope: serde_json::Value = serde_json::from_slice(&body).expect("envelope");
            envelope["event"]["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(arrived, posted, "each once, in the order accepted");
}
