//! Abusive input against `courier serve` as a process, where its memory can be measured.

use courier_core::Scope;

use crate::lifecycle::{Serve, http, keys};
use crate::support::fresh_database;

/// The peak a `courier serve` process may reach while it is sent four 16 MiB batches of tiny objects at once,
/// twice: it holds at most four large bodies at a time, never turns one into millions of JSON trees, and never
/// reads a body for a key that may not post events. (Before: 2.7 GiB.)
const PEAK_RSS_BOUND_MIB: f64 = 200.0;

fn tiny_objects_batch() -> Vec<u8> {
    let limit = courier_api::BATCH_BODY_LIMIT;
    let mut body = b"{\"events\":[".to_vec();
    while body.len() + 10 < limit {
        body.extend_from_slice(b"{\"\":0},");
    }
    body.pop();
    body.extend_from_slice(b"]}");
    assert!(body.len() <= limit && body.len() > limit - 64);
    body
}

async fn post_batches(base: &str, key: &str, body: &[u8]) -> Vec<Result<(u16, String), String>> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, key, body) = (format!("{base}/api/v1/events/batch"), key.to_owned(), body.to_vec());
        calls.spawn(async move {
            let res = http()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            Ok((status, res.text().await.unwrap_or_default()))
        });
    }
    calls.join_all().await
}

#[tokio::test]
async fn sixteen_mib_batches_of_tiny_objects_stay_within_a_memory_bound() {
    let url = fresh_database().await;
    let keys = keys(&url, &[&[Scope::WebhooksRead], &[Scope::EventsWrite]]).await;
    let serve = Serve::start(&url, "5s");
    serve.wait_ready(&http()).await;
    let body = tiny_objects_batch();

    // A key without events:write: refused before the body is read (a client may see the connection closed while
    // it is still sending; it never sees anything but the 403).
    for (status, text) in post_batches(&serve.base, &keys[0], &body).await.into_iter().flatten() {
        assert_eq!(status, 403, "{text}");
    }
    // A key that may post: each batch is refused at its 1,001st item, naming the field.
    for answer in post_batches(&serve.base, &keys[1], &body).await {
        let (status, text) = answer.expect("an answer");
        assert_eq!(status, 422, "{text}");
        assert!(text.contains("\"field\":\"events\"") && text.contains("1 to 1000"), "{text}");
    }
    let peak = serve.peak_rss_mib();
    eprintln!("courier serve peak RSS after eight 16 MiB batches: {peak:.0} MiB");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak:.0} MiB, bound {PEAK_RSS_BOUND_MIB} MiB");
}

/// Opens a batch upload that announces 1 MiB and sends a few bytes a second: a client on a bad link, or one
/// trying to hold the server's turns. Returns the connection, kept open while the caller needs it.
async fn trickle(base: &str, key: &str) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /api/v1/events/batch HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{{\"events\":[",
        1024 * 1024
    );
    let mut conn = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if conn.write_all(b" ").await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test]
async fn one_tenants_trickled_uploads_never_hold_another_tenants_batch() {
    let url = fresh_database().await;
    let slow = keys(&url, &[&[Scope::EventsWrite]]).await.remove(0);
    let quick = keys(&url, &[&[Scope::EventsWrite]]).await.remove(0);
    let serve = Serve::start(&url, "5s");
    let client = http();
    serve.wait_ready(&client).await;

    let mut uploads = Vec::new();
    for _ in 0..8 {
        uploads.push(trickle(&serve.base, &slow).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({"id": format!("evt_quick{i}"), "type": "call.completed",
                               "data": {"call_id": format!("call_{i}"), "duration_seconds": 1}})
        })
        .collect();
    let started = std::time::Instant::now();
    let res = client
        .post(format!("{}/api/v1/events/batch", serve.base))
        .bearer_auth(&quick)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "events": events }).to_string())
        .send()
        .await
        .expect("answer");
    let took = started.elapsed();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    eprintln!("beside eight trickled uploads of tenant A: tenant B's 1,000-event batch answered {status} in {took:?}");
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("\"error\""), "every event accepted: {}", &text[..text.len().min(500)]);
    assert!(took < std::time::Duration::from_secs(2), "tenant B's batch took {took:?} beside A's uploads");
    for upload in uploads {
        upload.abort();
    }
}
